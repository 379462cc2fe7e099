"""The detectron2 semantic fixture: its weights regenerated from their rule, its config, images and
outputs (``tests/fixtures/detectron2/semantic``: detectron2's own outputs for these weights).

Rule (``spec.json`` ``weights``): keys sorted with ``sorted()``; tensor ``i`` drawn from
``torch.Generator().manual_seed(seed + i)`` in float32; norm statistics (keys with ``.norm.``):
weight ``1 + 0.1 randn``, bias ``0.1 randn``, running_mean ``0.1 randn``, running_var
``0.75 + 0.5 rand``; other weights (ndim >= 2) He-normal ``randn * sqrt(2 / fan_in)``; other
biases ``0.01 randn``; then the first matching gain of the gains table.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import torch
from detectron2_fixture import generate_weights, weights_sha256
from PIL import Image

FIXTURE = Path(__file__).parent / "fixtures" / "detectron2" / "semantic"


@cache
def spec() -> dict:
    return json.loads((FIXTURE / "spec.json").read_text())


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
