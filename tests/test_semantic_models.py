"""The semantic models at full resolution: a PointRend model carries its plain model's weights and
coarse prediction, and predicts the number of points its settings imply."""

from __future__ import annotations

import math

import pytest
import torch
from torch.nn.modules.module import register_module_forward_pre_hook

from pointrend._fused_head import FusedPointHead
from pointrend.models import deeplabv3, pointrend_deeplabv3, pointrend_semantic_fpn, semantic_fpn

K, POINTS = 19, 1000


def expected_points(height: int, width: int, stride: int, num_points: int) -> int:
    """Points adaptive subdivision predicts from stride-``stride`` logits to ``height x width``:
    each of the ``log2(stride)`` steps doubles the map and predicts ``num_points`` cells; the
    steps whose whole map has at most ``num_points`` cells are replaced by predicting the last of
    them densely."""
    steps = range(1, int(math.log2(stride)) + 1)
    cells = [(height // stride) * (width // stride) * 4**step for step in steps]
    small = [c for c in cells if c <= num_points]
    return (small[-1] if small else 0) + num_points * sum(c > num_points for c in cells)


def points_predicted(model, image) -> int:
    """The points the model's point head (or its fused copy) predicts in one forward pass."""
    points = []

    def count(module, args):
        if module is model.point_head or isinstance(module, FusedPointHead):
            points.append(args[0].shape[-1])

    hook = register_module_forward_pre_hook(count)
    try:
        with torch.no_grad():
            model(image)
    finally:
        hook.remove()
    return sum(points)


@pytest.mark.parametrize(
    "plain, pointrend, stride",
    [(semantic_fpn, pointrend_semantic_fpn, 4), (deeplabv3, pointrend_deeplabv3, 16)],
)
def test_pointrend_models_keep_the_plain_weights_and_predict_the_points_implied(
    plain, pointrend, stride
):
    torch.manual_seed(0)
    base = plain("resnet18", K, weights_backbone=None).eval()
    ours = pointrend("resnet18", K, subdivision_num_points=POINTS, weights_backbone=None).eval()
    keys = ours.load_state_dict(base.state_dict(), strict=False)
    assert not keys.unexpected_keys
    assert all(k.startswith("point_head.") for k in keys.missing_keys)
    image = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        assert ours(image)["out"].shape == base(image)["out"].shape == (1, K, 64, 96)
    assert points_predicted(ours, image) == expected_points(64, 96, stride, POINTS)


def test_the_papers_setting_predicts_about_32k_points():
    # 64 x 96, 1000 points a step: FPN 2 steps of 1000; OS-16 the 16 x 24 map densely, then 2 x 1000
    assert expected_points(64, 96, 4, POINTS) == 2000
    assert expected_points(64, 96, 16, POINTS) == 2384
    assert expected_points(1024, 2048, 16, 8192) == 32768  # 4 steps of 8192 from 64 x 128
