"""``python -m benchmarks.scale`` at a small output size (480 x 360, one round)."""

from __future__ import annotations

import json

import torch

from benchmarks.plots import crop_origin
from benchmarks.scale import CROP, OBJECT_FRACTION, grid_shapes, main
from pointrend.instance.paste import MasksBySize


def test_scale_renders_the_big_object_at_its_size_and_draws_the_picture(tmp_path):
    out, picture = tmp_path / "results.json", tmp_path / "scale.png"
    out.write_text(json.dumps({"per_box_resolution": {"kept": 1}}))
    argv = ["--rounds", "1", "--output", "480x360", "--out", str(out), "--picture", str(picture)]
    main(argv)
    results = json.loads(out.read_text())
    assert results["per_box_resolution"] == {"kept": 1}
    section = results["per_box_scale"]
    assert section["output_image"] == [360, 480]
    low, high = (f * 480 for f in OBJECT_FRACTION)
    assert low <= section["object_size_px"] <= high
    fixed, box = section["modes"]["fixed224"], section["modes"]["box"]
    assert fixed["grid"] == [224, 224]
    assert min(box["grid"]) > 224 and min(box["grid"]) >= max(box["box_px"])
    assert fixed["score"] >= 0.5 and box["mask_iou"] >= 0.5
    assert all(section["mask_s"][m] > 0 for m in ("box", "fixed224"))
    data = picture.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 300_000
    width, height = (int.from_bytes(data[i : i + 4], "big") for i in (16, 20))
    assert width > 3 * CROP and height > CROP  # three panels at one pixel per output pixel


def test_grid_shapes_of_fixed_and_grouped_masks():
    assert grid_shapes(torch.zeros(3, 1, 28, 28)).tolist() == [[28, 28]] * 3
    grouped = MasksBySize(
        3,
        [
            (torch.tensor([2]), torch.zeros(1, 1, 56, 56)),
            (torch.tensor([0, 1]), torch.zeros(2, 1, 7, 7)),
        ],
    )
    assert grid_shapes(grouped).tolist() == [[7, 7], [7, 7], [56, 56]]


def test_the_crop_holds_the_contour():
    mask = torch.zeros(200, 200, dtype=torch.bool)
    mask[120:180, 30:90] = True  # a square: its contour lies in rows 120..179, columns 30..89
    y, x = crop_origin(mask, 64)
    assert 120 - 64 < y <= 180 and 30 - 64 < x <= 90
