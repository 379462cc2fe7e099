"""The full-model semantic benchmark (:mod:`benchmarks.semantic_models`) at a tiny size:
its figures are measurements of the five contenders, its point counts what the settings imply."""

from __future__ import annotations

import math
import statistics

import pytest
import torch

from benchmarks.markdown.cost import semantic_models_md
from benchmarks.semantic_models import PAIRS, build_models
from benchmarks.summary import _semantic_models_lines

H, W, K, POINTS = 64, 96, 19, 1000


def expected_points(height: int, width: int, stride: int, num_points: int) -> int:
    """Points adaptive subdivision predicts from stride-``stride`` logits to ``height x width``.

    Each of the ``log2(stride)`` steps doubles the map and predicts ``num_points`` cells; the
    steps whose whole map has at most ``num_points`` cells are replaced by predicting the last of
    them densely (every cell).
    """
    cells = [
        (height // stride) * (width // stride) * 4**step
        for step in range(1, int(math.log2(stride)) + 1)
    ]
    small = [c for c in cells if c <= num_points]
    return (small[-1] if small else 0) + num_points * sum(c > num_points for c in cells)


@pytest.fixture
def costs(quick_bench):
    """The full models of the quick bench: ResNet-18, 64 x 96, 1000 points a step."""
    _, results = quick_bench
    full = results["sections"]["semantic"]["full_models"]
    assert (full["image"], full["subdivision_num_points"]) == ([H, W], POINTS)
    return full


def test_five_contenders_timed_and_measured(costs):
    rows = costs["rows"]
    assert list(rows) == [
        "fpn",
        "fpn_pointrend",
        "deeplab_os16",
        "deeplab_os16_pointrend",
        "deeplab_os8",
    ]
    for name, row in [*rows.items(), *costs["refinement"].items()]:
        assert row["time_s"] > 0 and row["time_s"] == statistics.median(row["samples_s"]), name
        assert row["peak_mb"] > 0 and row["multiply_adds"] > 0, name
    assert rows["deeplab_os8"]["peak_mb"] > rows["deeplab_os16"]["peak_mb"]
    assert rows["deeplab_os8"]["multiply_adds"] > rows["deeplab_os16"]["multiply_adds"]
    for ours, plain in PAIRS.items():
        row, part = rows[ours], costs["refinement"][ours]
        assert row["vs_coarse_model"] == row["time_s"] / rows[plain]["time_s"]
        assert part["over_coarse_model"] == part["time_s"] / rows[plain]["time_s"]
        # the whole PointRend model is its coarse model plus the refinement
        assert row["multiply_adds"] == pytest.approx(
            rows[plain]["multiply_adds"] + part["multiply_adds"], rel=0.02
        )
        met = costs["targets"][ours]
        assert met["refinement_at_most_25pct_of_coarse"] == (part["over_coarse_model"] <= 0.25)
        assert met["peak_below_deeplab_os8"] == (row["peak_mb"] < rows["deeplab_os8"]["peak_mb"])


def test_points_per_image_follow_the_settings(costs):
    rows = costs["rows"]
    # 64 x 96, 1000 points a step: FPN (stride 4) 2 steps of 1000; DeepLabV3-OS-16 the 16 x 24
    # map densely (384 cells), then 2 steps of 1000
    assert expected_points(H, W, 4, POINTS) == 2000
    assert expected_points(H, W, 16, POINTS) == 2384
    assert rows["fpn_pointrend"]["points_per_image"] == 2000
    assert rows["deeplab_os16_pointrend"]["points_per_image"] == 2384
    for ours in PAIRS:
        assert costs["refinement"][ours]["points_per_image"] == rows[ours]["points_per_image"]
    for plain in ("fpn", "deeplab_os16", "deeplab_os8"):
        assert rows[plain]["points_per_image"] == 0
    # the paper's setting: 4 steps of 8192 from a 64 x 128 OS-16 map, about 32k points
    assert expected_points(1024, 2048, 16, 8192) == 32768 == costs["paper_points_per_image"]


def test_models_output_full_resolution_and_share_weights():
    models = build_models("resnet18", K, POINTS)
    image = torch.rand(1, 3, 40, 72)
    with torch.no_grad():
        outs = {name: model(image)["out"] for name, model in models.items()}
    for name, out in outs.items():
        assert out.shape == (1, K, 40, 72), name
    # a PointRend model keeps its plain model's coarse prediction where it does not refine
    plain = models["deeplab_os16"].state_dict()
    for key, value in models["deeplab_os16_pointrend"].state_dict().items():
        if not key.startswith("point_head."):
            assert torch.equal(value, plain[key]), key


def test_report_lines(costs):
    md = "\n".join(semantic_models_md(costs))
    assert "### Full models at 64 x 96" in md and "(e) DeepLabV3-OS-8 upsampled" in md
    assert md.count("refinement of") == 2
    (line,) = _semantic_models_lines(costs)
    assert "2000" in line and "2384" in line
