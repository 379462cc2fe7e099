"""The detectron2 semantic fixture: its weights regenerated from their rule, its config, images and
outputs (``tests/fixtures/detectron2/semantic``: detectron2's own outputs for these weights).

Rule (``spec.json`` ``weights``): keys sorted with ``sorted()``; tensor ``i`` drawn from
``torch.Generator().manual_seed(seed + i)`` in float32; norm statistics (keys with ``.norm.``):
weight ``1 + 0.1 randn``, bias ``0.1 randn``, running_mean ``0.1 randn``, running_var
``0.75 + 0.5 rand``; other weights (ndim >= 2) He-normal ``randn * sqrt(2 / fan_in)``; other
biases ``0.01 randn``; then the first matching gain of the gains table.
"""

from __future__ import annotations

import hashlib
import json
import math
from functools import cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

FIXTURE = Path(__file__).parent / "fixtures" / "detectron2" / "semantic"


@cache
def spec() -> dict:
    return json.loads((FIXTURE / "spec.json").read_text())


def _draw(key: str, shape: list[int], generator: torch.Generator) -> torch.Tensor:
    if ".norm." in key:
        leaf = key.rsplit(".", 1)[1]
        if leaf == "weight":
            return 1.0 + 0.1 * torch.randn(shape, generator=generator)
        if leaf == "running_var":
            return 0.75 + 0.5 * torch.rand(shape, generator=generator)
        return 0.1 * torch.randn(shape, generator=generator)
    if key.endswith(".weight") and len(shape) >= 2:
        fan_in = math.prod(shape[1:])
        return torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
    if key.endswith(".bias") and len(shape) == 1:
        return 0.01 * torch.randn(shape, generator=generator)
    raise ValueError(f"no rule for {key} {shape}")


def generate_weights(keys_and_shapes, seed: int, gains_table) -> dict[str, torch.Tensor]:
    """Tensors by the fixture's rule, for ``keys_and_shapes`` (``[[key, shape], ...]``)."""
    shapes = dict((key, list(shape)) for key, shape in keys_and_shapes)
    weights = {}
    for i, key in enumerate(sorted(shapes)):
        tensor = _draw(key, shapes[key], torch.Generator().manual_seed(seed + i))
        for gain in gains_table:
            if gain["key_contains"] in key and key.endswith(gain["key_endswith"]):
                tensor = tensor * gain["gain"]
                break
        weights[key] = tensor
    return weights


def weights_sha256(weights: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(weights):
        digest.update(weights[key].contiguous().numpy().astype(np.float32).tobytes())
    return digest.hexdigest()


@cache
def fixture_weights() -> dict[str, torch.Tensor]:
    """The fixture's weights under detectron2's key names (checked against the stored sha256)."""
    info = spec()["weights"]
    weights = generate_weights(info["keys_and_shapes"], info["seed"], info["gains_table"])
    expected = info["sha256_of_concatenated_float32_bytes_in_key_order"]
    if weights_sha256(weights) != expected:
        raise AssertionError("the regenerated semantic fixture weights differ from the stored ones")
    return weights


def fixture_config() -> dict:
    """The fixture's effective detectron2 config as a flat ``{dotted key: value}`` mapping."""
    config = {}
    for key, value in spec()["config_effective"].items():
        name = key.split(" ", 1)[0]  # "MODEL.PIXEL_MEAN (BGR)" -> "MODEL.PIXEL_MEAN"
        if name.startswith(("MODEL.", "INPUT.")):
            config[name] = value
    # stored as "INPUT.MIN_SIZE_TEST / MAX_SIZE_TEST (...)": [min, max]
    config["INPUT.MIN_SIZE_TEST"], config["INPUT.MAX_SIZE_TEST"] = config["INPUT.MIN_SIZE_TEST"]
    return config


def fixture_image(index: int) -> torch.Tensor:
    """Image ``index`` as ``1 x 3 x H x W`` RGB in ``[0, 1]``."""
    array = np.asarray(Image.open(FIXTURE / f"image_{index}.png").convert("RGB"))
    return torch.from_numpy(array.copy()).permute(2, 0, 1)[None].float() / 255.0


@cache
def fixture_outputs() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "d2_outputs.npz") as data:
        return {key: data[key] for key in data.files}
