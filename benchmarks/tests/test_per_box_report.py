"""The report's per-box section is computed from the stand-alone modules' figures."""

import json

from benchmarks.markdown.per_box import per_box_md
from benchmarks.report import store_standalone


def cost_section(box=1.5, fixed=2.0, tv=1.0):
    modes = ("box", "fixed224", "torchvision28")
    return {
        "mask_branch_s": dict(zip(modes, (box, fixed, tv))),
        "peak_mb": dict(zip(modes, (300.0, 400.0, 100.0))),
        "end_to_end_s": dict(zip(modes, (6.0, 6.5, 5.0))),
        "box_grids": {"56x56": 3, "28x896": 1},
        "boxes": 4,
        "image": [800, 1333],
        "threads": 1,
        "rounds": 3,
        "command": "python -m benchmarks.per_box --rounds 3",
        "machine": {"load_average": [1.0, 1.0, 1.0]},
    }


def budget_row(value):
    cell = {"boundary_iou": {"value": value, "se": 0.1}, "points_per_box": 100}
    return {
        "fixed224": cell,
        "no_refinement": cell,
        **{rule: {"3.5": cell} for rule in ("per_box", "final_side", "step_side")},
        "smallest_k": {"of_best": {"per_box": 3.5, "final_side": 2.5, "step_side": None}},
    }


def test_ratios_are_computed_from_the_figures():
    text = "\n".join(per_box_md({"per_box_resolution": cost_section()}))
    assert "Per-box / fixed 224 mask branch: 0.75x" in text
    assert "per-box end to end / torchvision's Mask R-CNN: 1.20x" in text
    assert "2 batched calls: 56x56: 3, 28x896: 1" in text
    slower = "\n".join(per_box_md({"per_box_resolution": cost_section(box=3.0)}))
    assert "mask branch: 1.50x" in slower
    assert per_box_md({}) == []


def test_the_point_budget_table_and_storing_keeps_other_keys(tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"other": 1}))
    budget = {"by_size": {"56": budget_row(98.25)}, "shapes": 5, "command": "cmd"}
    assert store_standalone(path, "point_budget", budget) == f"{path} ['point_budget']"
    store_standalone(path, "per_box_resolution", cost_section())
    results = json.loads(path.read_text())
    assert results["other"] == 1 and results["point_budget"] == budget
    assert not (tmp_path / "REPORT.md").exists()  # no bench run in the file: no report
    text = "\n".join(per_box_md(results))
    assert "### Points per step" in text and "98.2 ± 0.1 (100)" in text
    assert "3.5 / 2.5 / None" in text
