"""``python -m benchmarks.per_box``: the oracle study's point counts and oracle, and quick runs of
the ``budget`` and ``scale`` studies (small sizes: seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from benchmarks import per_box as pb
from benchmarks.plots import crop_origin
from pointrend.data.shapes import random_shape
from pointrend.instance.paste import MasksBySize
from pointrend.points import grid_cell_centres


def test_point_counts_follow_each_rule():
    assert pb.points_per_box("final_side", 3.5, 56) == 196 * 3  # the 14 x 14 step densely
    assert pb.points_per_box("final_side", 3.5, 224) == 784 * 4
    assert pb.points_per_box("step_side", 3.5, 56) == 49 + 98 + 196
    assert pb.points_per_box("step_side", 20.0, 28) == 14 * 14 + 560  # capped at the cells
    assert pb.points_per_box("dense", None, 56) == 14**2 + 28**2 + 56**2
    assert pb.points_per_box("no_refinement", None, 56) == 0
    for final in (56, 112, 224):
        assert pb.schedule("per_box", 3.5, final) == pb.schedule("final_side", 3.5, final)
    assert pb.points_per_box("per_box", 3.5, 896) == 784 * 4 + 1568 + 3136
    with pytest.raises(ValueError, match="rule must be one of"):
        pb.schedule("final", 1.0, 56)


def test_oracle_returns_each_cells_logit_at_its_steps_side():
    rng = np.random.default_rng(3)
    fine = pb.shape_coverage([random_shape(rng, 64, 64) for _ in range(3)], 56)
    logits = {s: pb.clamped_logit(c) for s, c in pb.coverage_pyramid(fine, [7, 14, 28, 56]).items()}
    oracle = pb.Oracle(logits)
    for side in (7, 28):
        centres = grid_cell_centres(side, side).expand(3, -1, -1)
        assert torch.equal(oracle(centres), logits[side].flatten(2))
    assert oracle.points == 7 * 7 + 28 * 28
    with pytest.raises(ValueError, match="cell centres of grid sides"):
        pb.grid_side(torch.full((1, 3, 2), 0.3), [7, 14])


def test_budget_study_quick_run(tmp_path):
    out = tmp_path / "results.json"
    argv = ["--out", str(out), "budget", "--shapes", "4", "--sizes", "56", "--k", "1.0", "5.0"]
    pb.main(argv)
    row = json.loads(out.read_text())["point_budget"]["by_size"]["56"]
    assert row["dense"]["boundary_iou"]["value"] == 100.0  # exact by construction
    assert set(row["per_box"]) == {"1.0", "5.0"} and row["fixed224"]["points_per_box"] == 3136
    assert 0 <= row["no_refinement"]["mask_iou"]["value"] <= 100
    assert "## Per-box mask resolution" in (tmp_path / "REPORT.md").read_text()


def test_scale_study_quick_run(tmp_path):
    out, picture = tmp_path / "results.json", tmp_path / "scale.png"
    out.write_text(json.dumps({"per_box_resolution_kept": 1}))
    pb.main(
        [
            "--out",
            str(out),
            "scale",
            "--rounds",
            "1",
            "--output",
            "480",
            "360",
            "--picture",
            str(picture),
        ]
    )
    results = json.loads(out.read_text())
    section = results["per_box_scale"]
    assert results["per_box_resolution_kept"] == 1 and section["output_image"] == [360, 480]
    assert section["grid"]["fixed224"] == [224, 224] and min(section["grid"]["box"]) > 224
    assert set(section["mask_s"]) == {"box", "fixed224"} and set(section["oracle"]) == {
        "224",
        "448",
    }
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_shapes_and_the_crop():
    assert pb.grid_shapes(torch.zeros(3, 1, 28, 28)).tolist() == [[28, 28]] * 3
    parts = [
        (torch.tensor([2]), torch.zeros(1, 1, 56, 56)),
        (torch.tensor([0, 1]), torch.zeros(2, 1, 7, 7)),
    ]
    assert pb.grid_shapes(MasksBySize(3, parts)).tolist() == [[7, 7], [7, 7], [56, 56]]
    mask = torch.zeros(200, 200, dtype=torch.bool)
    mask[120:180, 30:90] = True  # a square: its contour lies in rows 120..179, columns 30..89
    y, x = crop_origin(mask, 64)
    assert 120 - 64 < y <= 180 and 30 - 64 < x <= 90
