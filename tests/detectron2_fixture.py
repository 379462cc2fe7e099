"""The detectron2 instance fixture: weights regenerated from the rule in its ``spec.json``, written
as detectron2 writes checkpoints (zoo ``.pkl`` in the current and older key layouts, trainer
``.pth``), and helpers to compare pointrend's outputs with detectron2's stored ones.

The fixture (``tests/fixtures/detectron2/instance``) holds detectron2's outputs for a PointRend
R50-FPN (3 classes) whose weights follow a deterministic rule: keys sorted, tensor ``i`` drawn
from a generator seeded ``seed + i``: He-normal conv / linear weights, small biases, frozen
batch-norm statistics away from identity, then per-key gains.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import pickle
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures" / "detectron2"
INSTANCE = FIXTURES / "instance"
ZOO = FIXTURES / "zoo"


@functools.cache
def instance_spec() -> dict:
    return json.loads((INSTANCE / "spec.json").read_text())


def _draw(key: str, shape: list[int], g: torch.Generator) -> torch.Tensor:
    """One tensor by the fixtures' rule: norm statistics (``*.norm.<leaf>``), He-normal weights,
    small biases."""
    if ".norm." in key:
        leaf = key.rsplit(".", 1)[1]
        if leaf == "weight":
            return 1.0 + 0.1 * torch.randn(shape, generator=g)
        if leaf == "running_var":
            return 0.75 + 0.5 * torch.rand(shape, generator=g)
        return 0.1 * torch.randn(shape, generator=g)  # bias, running_mean
    if key.endswith(".weight") and len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=g) * math.sqrt(2 / fan_in)
    if key.endswith(".bias") and len(shape) == 1:
        return 0.01 * torch.randn(shape, generator=g)
    raise ValueError(f"no rule for {key} {shape}")


def generate_weights(keys_and_shapes, seed: int, gains_table) -> dict[str, torch.Tensor]:
    """Tensors by the fixtures' rule for ``keys_and_shapes`` (``[[key, shape], ...]``): keys
    sorted, tensor ``i`` drawn from ``torch.Generator().manual_seed(seed + i)``, then the first
    matching gain of ``gains_table``."""
    shapes = dict((key, list(shape)) for key, shape in keys_and_shapes)
    weights = {}
    for i, key in enumerate(sorted(shapes)):
        value = _draw(key, shapes[key], torch.Generator(device="cpu").manual_seed(seed + i))
        for gain in gains_table:
            if gain["key_contains"] in key and key.endswith(gain["key_endswith"]):
                value = value * gain["gain"]
                break
        weights[key] = value.float().contiguous()
    return weights


@functools.cache
def _instance_weights_cached() -> tuple[tuple[str, torch.Tensor], ...]:
    spec = instance_spec()["weights"]
    weights = generate_weights(spec["keys_and_shapes"], spec["seed"], spec["gains_table"])
    return tuple(weights.items())


def instance_weights() -> dict[str, torch.Tensor]:
    """The fixture's weights under detectron2's current key names (a fresh dict)."""
    return dict(_instance_weights_cached())


def weights_sha256(weights: dict[str, torch.Tensor]) -> str:
    """sha256 of the float32 bytes of the tensors, keys in sorted order (the spec's checksum)."""
    h = hashlib.sha256()
    for key in sorted(weights):
        h.update(weights[key].numpy().astype(np.float32).tobytes())
    return h.hexdigest()


def old_layout(weights: dict[str, torch.Tensor], layout: str) -> dict[str, torch.Tensor]:
    """The weights under the older PointRend key names (``"F1_nov2020"`` or ``"F0_original"``)."""
    table = json.loads((ZOO / "fixture_keys_old_format.json").read_text())
    renamed = table["renamed_keys"]
    column = {"F1_nov2020": "F1_nov2020", "F0_original": "F0_original"}[layout]
    mapping = {row["F2_current"]: row[column] for row in renamed}
    return {mapping.get(k, k): v for k, v in weights.items()}


def write_zoo_pkl(weights: dict[str, torch.Tensor], path: Path, numpy_core: str) -> Path:
    """A model-zoo ``.pkl`` (``{"model": {key: array}, "__author__": ...}``, pickle protocol 2)
    whose arrays reference ``numpy_core`` (``"numpy.core"`` as numpy 1.x writes it, or
    ``"numpy._core"`` as numpy 2.x does)."""
    data = {"model": {k: v.numpy() for k, v in weights.items()}, "__author__": "fixture"}
    raw = pickle.dumps(data, protocol=2)
    for written in (b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"):
        raw = raw.replace(written, numpy_core.encode() + b".multiarray\n")
    path.write_bytes(raw)
    return path


def write_trainer_pth(weights: dict[str, torch.Tensor], path: Path) -> Path:
    """A ``.pth`` as detectron2's trainer writes it (model, optimizer state, iteration)."""
    torch.save(
        {
            "model": dict(weights),
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.02}]},
            "scheduler": {"last_epoch": 10},
            "iteration": 89999,
        },
        path,
    )
    return path


def d2_config_yaml(path: Path) -> Path:
    """The fixture's merged detectron2 config (the values its spec lists) as ``config.yaml``."""
    import yaml

    spec = instance_spec()
    values = {
        key.split(" (")[0]: value
        for key, value in spec["config_effective"].items()
        if key.startswith(("MODEL.", "INPUT.", "TEST."))
    }
    zoo = json.loads((ZOO / "pointrend_rcnn_R_50_FPN_1x_coco.json").read_text())["effective"]
    overrides = spec["config_overrides"]
    given = dict(zip(overrides[::2], overrides[1::2]))
    merged = {**zoo, **values, **given}
    nested: dict = {}
    for key, value in merged.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(nested))
    return path


def fixture_image(i: int) -> torch.Tensor:
    """Fixture image ``i`` as pointrend takes it: ``3 x H x W`` RGB float in ``[0, 1]``."""
    from PIL import Image

    array = np.asarray(Image.open(INSTANCE / f"image_{i}.png").convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    from torchvision.ops import box_iou as iou

    return iou(a.double(), b.double())
