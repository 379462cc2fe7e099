"""The training point-selection options (regular grid, oversampling, importance ratio) that the
paper's training ablation varies: set by the builders and YAML, checked, and used."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pointrend.engine import load_config
from pointrend.engine.build import build_model
from pointrend.instance import PointRendMaskBranch, PointRendMaskConfig
from pointrend.models import maskrcnn, pointrend_maskrcnn
from pointrend.points import generate_regular_grid_point_coords
from pointrend.settings import replace_options

CONFIG = Path(__file__).parents[1] / "configs" / "synthetic_instance_pointrend_r18.yaml"


def test_grid_training_points_are_the_regular_grid():
    branch = PointRendMaskBranch(
        8, 3, replace_options(PointRendMaskConfig(), train_point_sampling="grid")
    )
    points = branch.training_points(torch.randn(5, 1, 7, 7))
    torch.testing.assert_close(points, generate_regular_grid_point_coords(5, 14))


@pytest.mark.parametrize(
    "field, value",
    [
        ("train_point_sampling", "random"),
        ("oversample_ratio", 0.5),
        ("importance_sample_ratio", 1.5),
    ],
)
def test_mask_config_refuses_bad_training_options(field, value):
    with pytest.raises(ValueError, match=field):
        replace_options(PointRendMaskConfig(), **{field: value})


def test_builder_and_yaml_set_the_training_point_options():
    model = pointrend_maskrcnn(
        "resnet18",
        3,
        box_head_dim=32,
        train_point_sampling="grid",
        oversample_ratio=1,
        importance_sample_ratio=0.0,
        train_num_points=64,
    )
    config = model.roi_heads.mask_branch.config.pointrend
    assert (config.train_point_sampling, config.oversample_ratio) == ("grid", 1)
    assert (config.importance_sample_ratio, config.train_num_points) == (0.0, 64)
    with pytest.raises(ValueError, match="oversample_ratio"):
        maskrcnn("resnet18", 3, box_head_dim=32, oversample_ratio=1)

    overrides = [
        "model.options.oversample_ratio=10",
        "model.options.importance_sample_ratio=1.0",
    ]
    config = build_model(
        load_config(CONFIG, overrides).model, 8
    ).roi_heads.mask_branch.config.pointrend
    assert config.oversample_ratio == 10 and config.importance_sample_ratio == 1.0
    assert config.train_point_sampling == "uncertain"
