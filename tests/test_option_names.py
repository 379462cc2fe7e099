"""One name per option: the same knob has the same name in both tasks, every option of the
instance point head can be set, old names are refused with the new one, and checkpoints written
with the old names still load."""

import dataclasses

import pytest
import torch

from pointrend.demo import SHIPPED, WEIGHTS_DIR
from pointrend.engine import ConfigError, load_checkpoint, load_config
from pointrend.engine.build import build_model
from pointrend.engine.inference import load_trained_model
from pointrend.instance import pointrend_maskrcnn
from pointrend.instance.builders import _pointrend_maskrcnn_options
from pointrend.options import RENAMED_OPTIONS, OptionError, current_option_names
from pointrend.semantic import pointrend_semantic_fpn, semantic_fpn
from pointrend.settings import PointRendSettings

SMALL = dict(box_head_dim=16, fpn_channels=16, backbone_returned_layers=[1, 2, 3])


def test_pointrend_settings_have_the_same_name_in_both_tasks():
    shared = {f.name for f in dataclasses.fields(PointRendSettings)}
    assert shared <= set(_pointrend_maskrcnn_options())
    model = pointrend_semantic_fpn(
        "resnet18", 3, point_head_fc_dim=8, point_head_num_fc=1, subdivision_num_points=64
    )
    assert model.config.pointrend.point_head_fc_dim == 8
    assert model.config.pointrend.subdivision_num_points == 64
    assert not set(RENAMED_OPTIONS) & set(_pointrend_maskrcnn_options())


def test_every_option_of_the_instance_point_head_and_coarse_head_can_be_set():
    model = pointrend_maskrcnn(
        "resnet18",
        3,
        **SMALL,
        point_head_fc_dim=12,
        point_head_num_fc=2,
        point_head_coarse_pred_each_layer=False,
        coarse_head_conv_dim=8,
        coarse_head_fc_dim=20,
        coarse_head_num_fc=1,
    )
    branch = model.roi_heads.mask_branch
    point = branch.point_head
    assert [layer.out_channels for layer in point.fc_layers] == [12, 12]
    assert point.fc_layers[1].in_channels == 12  # no coarse logits after the first layer
    assert branch.coarse_head.reduce.out_channels == 8
    assert [fc.out_features for fc in branch.coarse_head.fcs] == [20]


@pytest.mark.parametrize("old, new", sorted(RENAMED_OPTIONS.items()))
def test_an_old_name_is_refused_with_the_new_one(old, new):
    builder = semantic_fpn if new.startswith("point_head_") else pointrend_maskrcnn
    with pytest.raises(OptionError) as error:
        builder("resnet18", 3, **{old: 1})
    assert str(error.value) == (
        f"{builder.__name__}() got a renamed option {old!r}; its name is now {new!r}"
    )


def test_an_old_name_in_yaml_or_set_names_the_file_and_the_new_name(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(
        "model:\n  task: instance\n  backbone: resnet18\n  options: {mask_subdivision_points: 8}\n"
    )
    with pytest.raises(ConfigError) as error:
        build_model(load_config(path).model, 3)
    assert str(error.value) == (
        f"{path}: model.options.mask_subdivision_points: a renamed option of "
        "pointrend_maskrcnn; its name is now 'subdivision_num_points'"
    )
    path.write_text("model:\n  task: semantic\n  backbone: resnet18\n")
    cfg = load_config(path, ["model.options.fc_dim=8"])
    with pytest.raises(ConfigError, match="fc_dim: a renamed .* now 'point_head_fc_dim'$"):
        build_model(cfg.model, 3)


@pytest.mark.parametrize("key", ["pointrend", "semantic_pointrend"])
def test_shipped_checkpoints_with_old_names_load_under_the_new_ones(key):
    path = WEIGHTS_DIR / SHIPPED[key]
    stored = load_checkpoint(path)["config"]["model"]["options"]
    old = sorted(set(stored) & set(RENAMED_OPTIONS))
    assert old  # written before the renaming
    trained = load_trained_model(path, device="cpu")
    options = trained.config.model.options
    assert {RENAMED_OPTIONS[name] for name in old} <= set(options)
    assert not set(options) & set(RENAMED_OPTIONS)
    assert all(torch.isfinite(p).all() for p in trained.model.parameters())


def test_a_config_with_both_names_of_one_option_is_refused():
    assert current_option_names({"mask_fc_dim": 8, "min_size": 9}) == {
        "coarse_head_fc_dim": 8,
        "min_size": 9,
    }
    with pytest.raises(ValueError, match="'fc_dim' and 'point_head_fc_dim' are one option"):
        current_option_names({"fc_dim": 8, "point_head_fc_dim": 8})
