"""The detectron2 importers' shared core: every config value either becomes a builder option or
is refused by name, one ResNet table for both tasks, one strict weight loader, and no import
error hidden behind a detectron2 one."""

import json
import re
import sys
from pathlib import Path

import pytest
import torch

import pointrend.interop.detectron2 as d2
from pointrend.interop.detectron2 import D2Config, D2ImportError, common
from pointrend.interop.detectron2 import instance as d2_instance
from pointrend.interop.detectron2 import semantic as d2_semantic
from pointrend.interop.detectron2.checks import check_importable
from pointrend.interop.detectron2.zoo import ZOO, zoo_config
from pointrend.models import pointrend_maskrcnn
from tests.detectron2_fixture import d2_config_yaml
from tests.detectron2_semantic_weights import fixture_config

KEYS = Path(__file__).parent / "fixtures" / "detectron2" / "zoo"
POINTREND = "pointrend_rcnn_R_50_FPN_1x_coco"
SEMANTIC = "pointrend_semantic_R_101_FPN_1x_cityscapes"


def zoo_effective(name: str) -> dict:
    """The effective config detectron2 printed for a zoo model (flat dotted keys)."""
    return json.loads((KEYS / f"{name}.json").read_text())["effective"]


def instance_cfg(**changes) -> D2Config:
    return D2Config({**zoo_effective(POINTREND), **changes}, "config.yaml")


@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.POINT_HEAD.IN_FEATURES", ["p3"]),
        ("MODEL.ROI_MASK_HEAD.IN_FEATURES", ["p3"]),
        ("MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER", False),
        ("MODEL.ROI_MASK_HEAD.POINT_HEAD_ON", False),
        ("MODEL.ROI_MASK_HEAD.POOLER_TYPE", "ROIAlignV2"),
        ("MODEL.ROI_HEADS.IN_FEATURES", ["p3", "p4", "p5"]),
        ("MODEL.RPN.IN_FEATURES", ["p3", "p4", "p5", "p6"]),
        ("MODEL.FPN.IN_FEATURES", ["res3", "res4", "res5"]),
        ("MODEL.RPN.BBOX_REG_LOSS_TYPE", "giou"),
        ("MODEL.ROI_HEADS.IOU_LABELS", [-1, 1]),
    ],
)
def test_instance_values_pointrend_cannot_build_are_refused_by_name(key, value):
    with pytest.raises(D2ImportError) as err:
        d2_instance.instance_options(instance_cfg(**{key: value}))
    message = str(err.value)
    assert message.startswith(f"config.yaml: {key} = {value!r} is not supported")
    assert "\n" not in message


@pytest.mark.parametrize(
    "key, value, option",
    [
        ("MODEL.POINT_HEAD.FC_DIM", 512, "point_head_fc_dim"),
        ("MODEL.POINT_HEAD.NUM_FC", 2, "point_head_num_fc"),
        ("MODEL.ROI_MASK_HEAD.NUM_FC", 3, "coarse_head_num_fc"),
        ("MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 100, "train_num_points"),
    ],
)
def test_instance_head_shapes_and_point_counts_become_builder_options(key, value, option):
    _, _, options = d2_instance.instance_options(instance_cfg(**{key: value}))
    assert options[option] == value


def test_the_baselines_mask_pooler_must_be_its_box_pooler():
    effective = zoo_effective("mask_rcnn_R_50_FPN_1x")
    d2_instance.instance_options(D2Config(effective))
    changed = D2Config({**effective, "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO": 2}, "cfg")
    with pytest.raises(D2ImportError, match=r"POOLER_SAMPLING_RATIO = 2 is not supported.*box"):
        d2_instance.instance_options(changed)


def test_instance_training_samplers_and_matchers_are_mapped():
    options = d2_instance.instance_options(instance_cfg())[2]
    defaults = {  # detectron2's, equal to torchvision's
        "rpn_batch_size_per_image": 256,
        "rpn_positive_fraction": 0.5,
        "rpn_bg_iou_thresh": 0.3,
        "rpn_fg_iou_thresh": 0.7,
        "box_batch_size_per_image": 512,
        "box_positive_fraction": 0.25,
        "box_bg_iou_thresh": 0.5,
        "box_fg_iou_thresh": 0.5,
    }
    assert {k: options[k] for k in defaults} == defaults
    changed = {
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE": 128,
        "MODEL.RPN.IOU_THRESHOLDS": [0.2, 0.8],
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 64,
        "MODEL.ROI_HEADS.POSITIVE_FRACTION": 0.5,
        "MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.4, 0.6],
        "MODEL.ROI_HEADS.IOU_LABELS": [0, -1, 1],
    }
    cfg = instance_cfg(**changed)
    _, num_classes, options = d2_instance.instance_options(cfg)
    model = pointrend_maskrcnn(
        "resnet18",
        num_classes,
        box_head_dim=16,
        **{k: options[k] for k in defaults},
    )
    rpn, heads = model.rpn, model.roi_heads
    assert rpn.fg_bg_sampler.batch_size_per_image == 128
    assert (rpn.proposal_matcher.low_threshold, rpn.proposal_matcher.high_threshold) == (0.2, 0.8)
    assert heads.fg_bg_sampler.batch_size_per_image == 64
    assert heads.fg_bg_sampler.positive_fraction == 0.5
    matcher = heads.proposal_matcher
    assert (matcher.low_threshold, matcher.high_threshold) == (0.4, 0.6)
    with pytest.raises(D2ImportError, match=r"ROI_HEADS.IOU_THRESHOLDS = \[0.3, 0.5, 0.7\]"):
        d2_instance.instance_options(
            instance_cfg(**{"MODEL.ROI_HEADS.IOU_THRESHOLDS": [0.3, 0.5, 0.7]})
        )


def test_instance_training_points_are_mapped():
    cfg = instance_cfg(
        **{
            "MODEL.POINT_HEAD.TRAIN_NUM_POINTS": 98,
            "MODEL.POINT_HEAD.OVERSAMPLE_RATIO": 2,
            "MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO": 0.5,
            "MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS": 392,
        }
    )
    options = d2_instance.instance_options(cfg)[2]
    assert options["train_num_points"] == 98
    assert options["oversample_ratio"] == 2.0
    assert options["importance_sample_ratio"] == 0.5
    assert options["subdivision_num_points"] == 392


class _Recording(D2Config):
    """A config that records which keys the importer looked at."""

    def __init__(self, values, source):
        super().__init__(values, source)
        self.read = set()

    def get(self, key, *default):
        self.read.add(key)
        return super().get(key, *default)


def _configs(tmp_path):
    """(name, flat config, task) of every zoo entry and both fixtures."""
    for name, model in sorted(ZOO.items()):
        yield name, zoo_effective(name), model.task
    instance = D2Config.from_yaml(d2_config_yaml(tmp_path / "config.yaml"))
    flat = {k: instance.get(k) for k in instance._flat if " " not in k}  # spec notes have spaces
    yield "instance fixture", flat, "instance"
    yield "semantic fixture", fixture_config(), "semantic"


def test_every_config_value_is_mapped_required_or_documented_as_unread(tmp_path):
    for name, values, task in _configs(tmp_path):
        cfg = _Recording(values, name)
        check_importable(cfg)
        if task == "instance":
            d2_instance.instance_model_config_from_detectron2(cfg)
            ignored = d2_instance.IGNORED_KEYS[d2_instance.mask_head_kind(cfg)]
        else:
            d2_semantic.semantic_model_config_from_detectron2(cfg)
            ignored = d2_semantic.IGNORED_KEYS
        unread = set(values) - cfg.read - set(ignored) - set(common.IGNORED_KEYS)
        assert not unread, f"{name}: the importer neither maps nor checks {sorted(unread)}"


def test_both_tasks_read_the_resnet_from_one_table():
    basic = {"MODEL.RESNETS.DEPTH": 18, "MODEL.RESNETS.RES2_OUT_CHANNELS": 64}
    assert d2_instance.instance_options(instance_cfg(**basic))[0] == "resnet18"
    semantic = {**fixture_config(), **basic}
    assert d2_semantic.semantic_model_config_from_detectron2(D2Config(semantic))["backbone"] == (
        "resnet18"
    )
    wide = {"MODEL.RESNETS.DEPTH": 18, "MODEL.RESNETS.RES2_OUT_CHANNELS": 256}
    with pytest.raises(D2ImportError, match="RES2_OUT_CHANNELS = 256 is not supported"):
        d2_instance.instance_options(instance_cfg(**wide))
    deep = {"MODEL.RESNETS.DEPTH": 200}
    messages = []
    for run in (
        lambda: d2_instance.instance_options(instance_cfg(**deep)),
        lambda: d2_semantic.semantic_model_config_from_detectron2(
            D2Config({**fixture_config(), **deep}, "config.yaml")
        ),
    ):
        with pytest.raises(D2ImportError) as err:
            run()
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert re.search(r"\(200, 1, 64\) is not one of torchvision's", messages[0])


def test_a_wrong_shape_names_the_detectron2_key_and_the_models():
    keys = json.loads((KEYS / f"{POINTREND}.json").read_text())["keys"]
    weights = {key: torch.empty(shape, device="meta") for key, shape in keys}
    weights["proposal_generator.rpn_head.conv.weight"] = torch.empty(256, 256, 1, 1, device="meta")
    del weights["proposal_generator.rpn_head.conv.bias"]
    weights["roi_heads.extra.weight"] = torch.empty(1, device="meta")
    with torch.device("meta"), pytest.raises(D2ImportError) as err:
        d2_instance.instance_model_from_detectron2(weights, zoo_config(POINTREND))
    message = str(err.value)
    assert "1 detectron2 key(s) have no place: ['roi_heads.extra.weight']" in message
    assert "missing ['rpn.head.conv.0.0.bias']" in message
    assert (
        "proposal_generator.rpn_head.conv.weight has shape (256, 256, 1, 1), the model's "
        "rpn.head.conv.0.0.weight (256, 256, 3, 3)" in message
    )


def test_a_broken_semantic_importer_is_not_reported_as_a_config_problem(monkeypatch):
    """A real import error of the semantic importer surfaces as itself."""
    keys = json.loads((KEYS / f"{SEMANTIC}.json").read_text())["keys"]
    weights = {key: torch.zeros(shape) for key, shape in keys}
    monkeypatch.setattr(d2, "read_detectron2_weights", lambda path: weights)
    monkeypatch.delattr(d2, "semantic")
    monkeypatch.setitem(sys.modules, "pointrend.interop.detectron2.semantic", None)
    with pytest.raises(ImportError):
        d2.import_detectron2("model_final.pkl", zoo=SEMANTIC)
