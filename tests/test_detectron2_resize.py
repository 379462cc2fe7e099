"""detectron2's test-time resize (``resize_rule: detectron2``): the same pixels, the same answers.

The reference is detectron2 itself (``tests/fixtures/detectron2/instance_resize``): the model of
``../instance`` run by detectron2's ``DefaultPredictor`` with its default resize (shortest edge 800,
max 1333, PIL bilinear on the uint8 photo) on 3 real photos: a square enlarged x2, a landscape
whose long side rounds down (1199.06) and a portrait whose long side rounds up (1202.67). Kept
from detectron2's run: the exact image it fed its network (``resized_uint8``, as sha256 and a
crop), its detections on every photo and its pasted masks on the portrait.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from detectron2_fixture import FIXTURES, box_iou, instance_weights, write_zoo_pkl
from PIL import Image

import pointrend.instance.transform as transform_module
from pointrend.cli import main
from pointrend.data.images import read_image
from pointrend.instance.transform import PointRendTransform
from pointrend.interop.detectron2 import D2Config
from pointrend.interop.detectron2.instance import instance_options
from pointrend.resize import quantise_to_uint8, resize_uint8_bilinear, shortest_edge_size

RESIZE = FIXTURES / "instance_resize"
SPEC = json.loads((RESIZE / "spec.json").read_text())
PHOTOS = SPEC["inference"]["photos"]
D2 = np.load(RESIZE / "d2_outputs.npz")


@pytest.fixture(scope="module")
def d2_config(tmp_path_factory):
    path = tmp_path_factory.mktemp("d2") / "config.yaml"
    path.write_text(SPEC["config_yaml"])
    return path


def imported_transform(d2_config) -> PointRendTransform:
    """The transform the importer builds for the fixture's config (min 800, max 1333)."""
    _, num_classes, options = instance_options(D2Config.from_yaml(d2_config))
    keys = ("min_size", "max_size", "image_mean", "image_std", "resize_rule")
    assert (options["min_size"], options["resize_rule"]) == (800, "detectron2")
    return PointRendTransform(num_classes=num_classes, **{k: options[k] for k in keys}).eval()


@pytest.mark.parametrize("photo", range(len(PHOTOS)), ids=[p["file"] for p in PHOTOS])
def test_the_network_sees_detectron2s_resized_uint8_image(d2_config, photo):
    info = PHOTOS[photo]
    image = read_image(RESIZE / info["file"])
    transform = imported_transform(d2_config)
    batch, _ = transform([image])
    h, w = info["resized_hw"]
    assert batch.image_sizes == [(h, w)]
    # The network input, undone to 0-255: detectron2's uint8 image exactly.
    mean = torch.tensor(transform.image_mean)[:, None, None]
    std = torch.tensor(transform.image_std)[:, None, None]
    pixels = ((batch.tensors[0, :, :h, :w] * std + mean) * 255).round().to(torch.uint8)
    hwc = np.ascontiguousarray(pixels.permute(1, 2, 0).numpy())
    y, x = info["crop_yx"]
    np.testing.assert_array_equal(hwc[y : y + 32, x : x + 32], D2[f"img{photo}_resized_crop"])
    assert hashlib.sha256(hwc.tobytes()).hexdigest() == info["resized_uint8_sha256"]
    # And the normalised input is those pixels / 255 normalised, not a float resize near them.
    normalised = (pixels.float() / 255 - mean) / std
    torch.testing.assert_close(batch.tensors[0, :, :h, :w], normalised, rtol=0, atol=1e-6)


def test_a_float_image_is_quantised_as_an_8_bit_photo(d2_config):
    info = PHOTOS[2]
    image = read_image(RESIZE / info["file"])
    transform = imported_transform(d2_config)
    noise = (torch.rand(image.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.9
    nudged = (image + noise / 255).clamp(0, 1)  # each value within 0.45 grey levels
    assert not torch.equal(nudged, image)
    a, _ = transform([image])
    b, _ = transform([nudged])
    assert torch.equal(a.tensors, b.tensors)
    assert torch.equal(quantise_to_uint8(nudged), quantise_to_uint8(image))


@pytest.mark.parametrize(
    "size, new",
    [((37, 53), (80, 115)), ((90, 41), (30, 14)), ((61, 70), (29, 33)), ((40, 40), (30, 60))],
)
def test_uint8_resize_is_pils_bilinear(size, new):
    """Enlarging, shrinking (antialiased) portrait and landscape, and one axis each way."""
    array = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(array).resize(new[::-1], Image.BILINEAR))
    ours = resize_uint8_bilinear(torch.from_numpy(array).permute(2, 0, 1), new)
    assert ours.dtype == torch.uint8 and ours.shape == (3, *new)
    np.testing.assert_array_equal(ours.permute(1, 2, 0).numpy(), expected)


def test_uint8_resize_refuses_what_it_cannot_take():
    with pytest.raises(ValueError, match="3 x H x W uint8.*float32"):
        resize_uint8_bilinear(torch.zeros(3, 4, 4), (8, 8))
    with pytest.raises(ValueError, match="at least 1 x 1"):
        resize_uint8_bilinear(torch.zeros(3, 4, 4, dtype=torch.uint8), (0, 8))


@pytest.mark.parametrize("rule", ["torchvision", "detectron2"])
def test_no_resample_when_the_size_does_not_change(monkeypatch, rule):
    calls = []
    interpolate = torch.nn.functional.interpolate
    monkeypatch.setattr(
        torch.nn.functional, "interpolate", lambda *a, **k: calls.append(1) or interpolate(*a, **k)
    )
    uint8_resize = transform_module.resize_uint8_bilinear
    monkeypatch.setattr(
        transform_module,
        "resize_uint8_bilinear",
        lambda *a: calls.append(2) or uint8_resize(*a),
    )
    transform = PointRendTransform(
        min_size=48, max_size=1333, image_mean=[0.5] * 3, image_std=[0.25] * 3, resize_rule=rule
    ).eval()
    image = torch.rand(3, 48, 71)
    batch, _ = transform([image])
    assert calls == []
    torch.testing.assert_close(batch.tensors[0, :, :48, :71], (image - 0.5) / 0.25)
    transform([torch.rand(3, 47, 71)])  # a different size is resampled
    assert calls


@pytest.mark.parametrize("photo", range(len(PHOTOS)), ids=[p["file"] for p in PHOTOS])
def test_detectron2_output_sizes(photo):
    info = PHOTOS[photo]
    assert list(shortest_edge_size(*info["image_hw"], 800, 1333)) == info["resized_hw"]


def test_import_and_predict_give_detectron2s_detections_on_a_resized_photo(d2_config, tmp_path):
    """Through the CLI: every detectron2 detection matched one-to-one (same class, all four
    coordinates within 0.02 px as ``predictions.json`` rounds them to 0.01), scores within 1e-4,
    pasted masks IoU >= 0.99."""
    from pycocotools import mask as mask_utils

    photo = 2
    info = PHOTOS[photo]
    pkl = write_zoo_pkl(instance_weights(), tmp_path / "model_final.pkl", "numpy.core")
    model = tmp_path / "imported.pt"
    argv = ["import-detectron2", str(pkl), "--d2-config", str(d2_config), "--out", str(model)]
    assert main(argv) == 0
    out = tmp_path / "predicted"
    argv = ["predict", "--weights", str(model), str(RESIZE / info["file"]), "--out", str(out)]
    assert main([*argv, "--score-thresh", "0", "--no-progress"]) == 0
    (found,) = json.loads((out / "predictions.json").read_text())["images"].values()
    xywh = torch.tensor([d["bbox"] for d in found], dtype=torch.float64)
    boxes = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
    labels = torch.tensor([d["category_id"] for d in found])
    scores = torch.tensor([d["score"] for d in found], dtype=torch.float64)
    d2_boxes = torch.from_numpy(D2[f"img{photo}_boxes"]).double()
    d2_classes = torch.from_numpy(D2[f"img{photo}_classes"]).long()
    assert len(found) == len(d2_boxes) == 100
    iou = box_iou(boxes, d2_boxes)
    iou[labels[:, None] != d2_classes[None, :] + 1] = -1
    best, index = iou.max(0)
    assert sorted(index.tolist()) == list(range(len(d2_boxes)))  # one-to-one
    assert (boxes[index] - d2_boxes).abs().max() <= 0.02
    d2_scores = torch.from_numpy(D2[f"img{photo}_scores"]).double()
    assert (scores[index] - d2_scores).abs().max() <= 1e-4
    shape = tuple(D2[f"img{photo}_masks_shape"])
    d2_masks = np.unpackbits(D2[f"img{photo}_masks"], axis=-1)[..., : shape[-1]].astype(bool)
    ours = mask_utils.decode([found[i]["segmentation"] for i in index.tolist()])
    ours = np.moveaxis(ours, -1, 0).astype(bool)
    inter = (ours & d2_masks).sum((1, 2))
    union = np.maximum((ours | d2_masks).sum((1, 2)), 1)
    assert (inter / union).min() >= 0.99


@pytest.mark.parametrize("rule", ["torchvision", "detectron2"])
def test_the_traced_resize_gives_the_eager_sizes_at_other_inputs(rule):
    """Export traces the test resize once; the traced graph must give every input the size eager
    resizing gives it (torchvision floors each side, detectron2 rounds it)."""
    transform = PointRendTransform(
        min_size=48, max_size=80, image_mean=[0.5] * 3, image_std=[0.25] * 3, resize_rule=rule
    ).eval()
    with torch.no_grad():
        traced = torch.jit.trace(lambda x: transform.resize(x)[0], torch.rand(3, 60, 90))
        for h, w in [(60, 90), (37, 101), (200, 150), (31, 29)]:
            image = torch.rand(3, h, w)
            assert traced(image).shape == transform.resize(image)[0].shape, (h, w)
