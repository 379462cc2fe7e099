"""``python -m benchmarks.per_box``: the oracle study's point counts, and quick runs of its
``budget`` and ``scale`` studies (small sizes: seconds)."""

from __future__ import annotations

import json

import pytest

from benchmarks import per_box as pb
from benchmarks import point_budget


def test_point_counts_follow_each_rule():
    assert point_budget.points_per_box("final_side", 3.5, 56) == 196 * 3  # the 14 x 14 step densely
    assert point_budget.points_per_box("final_side", 3.5, 224) == 784 * 4
    assert point_budget.points_per_box("step_side", 3.5, 56) == 49 + 98 + 196
    assert (
        point_budget.points_per_box("step_side", 20.0, 28) == 14 * 14 + 560
    )  # capped at the cells
    assert point_budget.points_per_box("dense", None, 56) == 14**2 + 28**2 + 56**2
    for final in (56, 112, 224):
        assert point_budget.schedule("per_box", 3.5, final) == point_budget.schedule(
            "final_side", 3.5, final
        )
    assert point_budget.points_per_box("per_box", 3.5, 896) == 784 * 4 + 1568 + 3136
    with pytest.raises(ValueError, match="rule must be one of"):
        point_budget.schedule("final", 1.0, 56)


def test_budget_study_quick_run(tmp_path):
    out = tmp_path / "results.json"
    pb.main(["--out", str(out), "budget", "--shapes", "4", "--sizes", "56", "--k", "1.0", "5.0"])
    row = json.loads(out.read_text())["point_budget"]["by_size"]["56"]
    assert row["dense"]["boundary_iou"]["value"] == 100.0  # exact by construction
    assert set(row["per_box"]) == {"1.0", "5.0"} and row["fixed224"]["points_per_box"] == 3136
    assert 0 <= row["no_refinement"]["mask_iou"]["value"] <= 100
    assert "Oracle point head" in (tmp_path / "REPORT.md").read_text()


def test_scale_study_quick_run(tmp_path):
    out, picture = tmp_path / "results.json", tmp_path / "scale.png"
    out.write_text(json.dumps({"per_box_resolution_kept": 1}))
    size = ["--output", "480", "360", "--picture", str(picture)]
    pb.main(["--out", str(out), "scale", "--rounds", "1", *size])
    results = json.loads(out.read_text())
    section = results["per_box_scale"]
    assert results["per_box_resolution_kept"] == 1 and section["output_image"] == [360, 480]
    assert section["grid"]["fixed224"] == [224, 224] and min(section["grid"]["box"]) > 224
    assert set(section["mask_s"]) == {"box", "fixed224"} and set(section["oracle"]) == {
        "224",
        "448",
    }
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
