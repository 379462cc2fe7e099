"""`python -m benchmarks.point_budget`: the oracle, the point counts of each budget rule and the
scores (a few shapes at small sides: seconds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import point_budget as pb
from pointrend.data.shapes import random_shape
from pointrend.evaluation.boundary import boundary_iou, boundary_region
from pointrend.points import grid_cell_centres


@pytest.fixture(scope="module")
def pyramid():
    rng = np.random.default_rng(3)
    shapes = [random_shape(rng, 64, 64) for _ in range(6)]
    fine = pb.shape_coverage(shapes, 224)  # 224: the fixed mode's grid
    return pb.coverage_pyramid(fine, [7, 14, 28, 56, 112, 224])


def test_point_counts_follow_each_rule():
    # final side 3.5 at M = 56: 196 points a step, the 14 x 14 step (196 cells) predicted densely
    assert pb.points_per_box("final_side", 3.5, 56) == 196 * 3
    # 224 with 784 points a step: 28 x 28 dense, then 56, 112, 224
    assert pb.points_per_box("final_side", 3.5, 224) == 784 * 4
    assert pb.points_per_box("step_side", 3.5, 56) == 49 + 98 + 196
    assert pb.points_per_box("step_side", 20.0, 28) == 14 * 14 + 560  # capped at the cells
    assert pb.points_per_box("dense", None, 56) == 14**2 + 28**2 + 56**2
    assert pb.points_per_box("no_refinement", None, 56) == 0
    # the per-box mode's rule: as final side up to 224; beyond, 784 up to 224, then 3.5 x side
    for final in (56, 112, 224):
        assert pb.schedule("per_box", 3.5, final) == pb.schedule("final_side", 3.5, final)
    assert pb.points_per_box("per_box", 3.5, 896) == 784 * 4 + 1568 + 3136
    with pytest.raises(ValueError, match="rule must be one of"):
        pb.schedule("final", 1.0, 56)


def test_oracle_returns_each_cells_logit_at_its_steps_side(pyramid):
    logits = {s: pb.clamped_logit(c) for s, c in pyramid.items()}
    oracle = pb.Oracle(logits)
    for side in (7, 28):
        centres = grid_cell_centres(side, side).expand(6, -1, -1)
        assert torch.equal(oracle(centres), logits[side].flatten(2))
    assert oracle.points == 7 * 7 + 28 * 28
    assert float(logits[7].abs().max()) == pb.LOGIT_CLAMP  # shapes leave empty coarse cells
    with pytest.raises(ValueError, match="cell centres of grid sides"):
        pb.grid_side(torch.full((1, 3, 2), 0.3), [7, 14])


def test_batched_boundary_iou_is_the_published_one(pyramid):
    truth = pyramid[56][:, 0] > 0.5
    pred = pyramid[28][:, 0].repeat_interleave(2, 1).repeat_interleave(2, 2) > 0.5
    batched = pb.batched_iou(boundary_region(truth), boundary_region(pred))
    one_by_one = [boundary_iou(t, p) for t, p in zip(truth, pred)]
    assert batched.tolist() == pytest.approx(one_by_one)
    assert min(one_by_one) < 1.0


def test_dense_is_exact_and_more_points_do_not_lose(pyramid):
    row = pb.evaluate_size(pyramid, 56, (0.875, 5.0), batch=4)  # boxes 0-3, then 4-5
    assert pb.evaluate_size(pyramid, 56, (0.875, 5.0), batch=6) == row
    assert row["dense"]["boundary_iou"]["value"] == 100.0
    assert row["dense"]["mask_iou"]["value"] == 100.0
    biou = {k: row["final_side"][str(k)]["boundary_iou"]["value"] for k in (0.875, 5.0)}
    assert biou[5.0] >= biou[0.875] - 0.5
    assert biou[0.875] > row["no_refinement"]["boundary_iou"]["value"] + 10
    assert row["step_side"]["5.0"]["points_per_box"] == 70 + 140 + 280
    assert row["fixed224"]["points_per_box"] == 4 * 784
    assert row["fixed224"]["boundary_iou"]["value"] > row["no_refinement"]["boundary_iou"]["value"]
    assert set(row["smallest_k"]["of_best"]) == set(pb.RULES)


def test_sizes_must_be_coarse_times_a_power_of_two():
    with pytest.raises(ValueError, match="--sizes must be 7"):
        pb.run(2, [100], (1.0,))
    with pytest.raises(ValueError, match="--batch 1, got 2, 0"):
        pb.run(2, [56], (1.0,), batch=0)


def test_smallest_k_within_the_tolerance():
    def cell(value):
        return {"boundary_iou": {"value": value, "se": 0.1}}

    row = {
        "dense": cell(100.0),
        "final_side": {"1.0": cell(98.0), "2.0": cell(99.45), "4.0": cell(99.9)},
        "step_side": {"1.0": cell(90.0), "2.0": cell(95.0), "4.0": cell(97.2)},
    }
    found = pb.smallest_k(row, (4.0, 1.0, 2.0))
    assert found["of_best"] == {"final_side": 2.0, "step_side": None}
    assert found["of_rule_best"] == {"final_side": 2.0, "step_side": 4.0}
    assert found["of_exact"] == {"final_side": 4.0, "step_side": None}
    assert found["rule_best"] == {"final_side": 99.9, "step_side": 97.2}
