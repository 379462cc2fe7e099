"""Starting from torchvision's COCO Mask R-CNN: the state-dict mapping (never downloads)."""

import pytest
import torch
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights, maskrcnn_resnet50_fpn
from torchvision.ops.misc import FrozenBatchNorm2d

from pointrend.models import maskrcnn, pointrend_maskrcnn, pointrend_maskrcnn_resnet50_fpn
from pointrend.pretrained import (
    load_torchvision_weights,
    map_torchvision_state_dict,
    torchvision_weights,
)

BOX_PREDICTOR = {
    "roi_heads.box_predictor.cls_score.weight",
    "roi_heads.box_predictor.cls_score.bias",
    "roi_heads.box_predictor.bbox_pred.weight",
    "roi_heads.box_predictor.bbox_pred.bias",
}


@pytest.fixture(scope="module")
def torchvision_state():
    torch.manual_seed(0)
    return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()


@pytest.fixture(scope="module")
def pointrend_r50():
    torch.manual_seed(1)
    return pointrend_maskrcnn_resnet50_fpn(num_classes=91)


def test_mapping_keeps_backbone_rpn_and_box_head(torchvision_state, pointrend_r50):
    kept = map_torchvision_state_dict(torchvision_state, pointrend_r50, "maskrcnn")
    assert set(kept) == {
        k for k in torchvision_state if k.startswith(("backbone.", "rpn.", "roi_heads.box_"))
    }
    torch.manual_seed(0)
    other = map_torchvision_state_dict(
        torchvision_state, pointrend_maskrcnn_resnet50_fpn(5), "maskrcnn"
    )
    assert set(kept) - set(other) == BOX_PREDICTOR  # 91 classes do not fit 5
    baseline = maskrcnn("resnet50", 91)
    with_mask = map_torchvision_state_dict(torchvision_state, baseline, "maskrcnn")
    assert set(with_mask) == set(torchvision_state)
    baseline_5 = maskrcnn("resnet50", 5)
    mask_5 = map_torchvision_state_dict(torchvision_state, baseline_5, "maskrcnn")
    assert set(with_mask) - set(mask_5) == BOX_PREDICTOR | {
        "roi_heads.mask_predictor.mask_fcn_logits.weight",
        "roi_heads.mask_predictor.mask_fcn_logits.bias",
    }


def test_load_into_pointrend_leaves_only_the_mask_branch(torchvision_state, pointrend_r50):
    model = pointrend_r50
    before = {k: v.clone() for k, v in model.state_dict().items() if "mask_branch" in k}
    missing = load_torchvision_weights(model, torchvision_state, "maskrcnn")
    assert set(missing) == set(before)
    state = model.state_dict()
    for key, value in torchvision_state.items():
        if key.startswith(("backbone.", "rpn.", "roi_heads.box_")):
            torch.testing.assert_close(state[key], value, msg=key)
    for key, value in before.items():  # the PointRend branch keeps its own initialisation
        torch.testing.assert_close(state[key], value, msg=key)


def test_a_layer_of_another_shape_is_named(torchvision_state):
    narrow = pointrend_maskrcnn("resnet50", 91, fpn_channels=128)
    with pytest.raises(ValueError, match=r"'backbone.fpn.inner_blocks.0.0.weight' has shape"):
        load_torchvision_weights(narrow, torchvision_state, "maskrcnn")
    with pytest.raises(ValueError, match="layout must be one of"):
        load_torchvision_weights(narrow, torchvision_state, "detectron2")


def test_weights_coco_goes_through_the_mapping(torchvision_state, monkeypatch):
    """``weights="COCO"``: torchvision's enum, frozen BN, 3 trainable stages; download stubbed."""
    calls = []

    def fake_state_dict(self, *args, **kwargs):
        calls.append(self)
        return torchvision_state

    monkeypatch.setattr(MaskRCNN_ResNet50_FPN_Weights, "get_state_dict", fake_state_dict)
    model = pointrend_maskrcnn_resnet50_fpn(weights="COCO")
    assert calls == [MaskRCNN_ResNet50_FPN_Weights.COCO_V1]
    frozen = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert frozen and all(m.eps == 0.0 for m in frozen)
    assert not model.backbone.body.conv1.weight.requires_grad
    assert not model.backbone.body.layer1[0].conv1.weight.requires_grad
    assert model.backbone.body.layer2[0].conv1.weight.requires_grad
    torch.testing.assert_close(
        model.state_dict()["rpn.head.conv.0.0.weight"],
        torchvision_state["rpn.head.conv.0.0.weight"],
    )
    baseline = maskrcnn("resnet50", 91, weights=MaskRCNN_ResNet50_FPN_Weights.COCO_V1)
    torch.testing.assert_close(
        baseline.state_dict()["roi_heads.mask_predictor.mask_fcn_logits.weight"],
        torchvision_state["roi_heads.mask_predictor.mask_fcn_logits.weight"],
    )


def test_weights_names():
    enum = MaskRCNN_ResNet50_FPN_Weights
    assert torchvision_weights("maskrcnn_resnet50_fpn", None) is None
    assert torchvision_weights("maskrcnn_resnet50_fpn", "coco") is enum.COCO_V1
    assert torchvision_weights("maskrcnn_resnet50_fpn", "DEFAULT") is enum.COCO_V1
    with pytest.raises(ValueError, match="resnet50 only"):
        pointrend_maskrcnn("resnet18", 3, weights="COCO")
    with pytest.raises(
        ValueError, match=r"not torchvision weights of maskrcnn_resnet50_fpn .*COCO_V1"
    ):
        torchvision_weights("maskrcnn_resnet50_fpn", "IMAGENET")
