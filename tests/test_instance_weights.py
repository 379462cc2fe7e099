"""Starting from torchvision's COCO Mask R-CNN: the state-dict mapping (never downloads)."""

import pytest
import torch
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights, maskrcnn_resnet50_fpn
from torchvision.ops.misc import FrozenBatchNorm2d

from pointrend.instance import (
    coco_weights,
    load_torchvision_maskrcnn_weights,
    map_torchvision_maskrcnn_state_dict,
    maskrcnn,
    pointrend_maskrcnn_resnet50_fpn,
)


@pytest.fixture(scope="module")
def torchvision_state():
    torch.manual_seed(0)
    return maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()


def test_mapping_keeps_backbone_rpn_and_box_head(torchvision_state):
    kept = map_torchvision_maskrcnn_state_dict(torchvision_state, 91)
    assert not any(
        k.startswith(("roi_heads.mask_head.", "roi_heads.mask_predictor.")) for k in kept
    )
    assert "roi_heads.box_predictor.cls_score.weight" in kept
    assert set(kept) == {
        k for k in torchvision_state if k.startswith(("backbone.", "rpn.", "roi_heads.box_"))
    }
    other = map_torchvision_maskrcnn_state_dict(torchvision_state, 5)
    assert not any(k.startswith("roi_heads.box_predictor.") for k in other)
    with_mask = map_torchvision_maskrcnn_state_dict(torchvision_state, 91, keep_mask_head=True)
    assert set(with_mask) == set(torchvision_state)


def test_load_into_pointrend_leaves_only_the_mask_branch(torchvision_state):
    torch.manual_seed(1)
    model = pointrend_maskrcnn_resnet50_fpn(num_classes=91)
    before = {k: v.clone() for k, v in model.state_dict().items() if "mask_branch" in k}
    missing = load_torchvision_maskrcnn_weights(model, torchvision_state)
    assert missing and all(k.startswith("roi_heads.mask_branch.") for k in missing)
    assert set(missing) == set(before)
    state = model.state_dict()
    for key, value in map_torchvision_maskrcnn_state_dict(torchvision_state, 91).items():
        torch.testing.assert_close(state[key], value, msg=key)
    for key, value in before.items():  # the PointRend branch keeps its own initialisation
        torch.testing.assert_close(state[key], value, msg=key)

    small = pointrend_maskrcnn_resnet50_fpn(num_classes=5)
    missing = load_torchvision_maskrcnn_weights(small, torchvision_state)
    assert {k for k in missing if not k.startswith("roi_heads.mask_branch.")} == {
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.cls_score.bias",
        "roi_heads.box_predictor.bbox_pred.weight",
        "roi_heads.box_predictor.bbox_pred.bias",
    }


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


def test_weights_errors():
    assert coco_weights(None) is None
    assert coco_weights("coco") is MaskRCNN_ResNet50_FPN_Weights.COCO_V1
    assert coco_weights("DEFAULT") is MaskRCNN_ResNet50_FPN_Weights.COCO_V1
    with pytest.raises(ValueError, match="resnet50 only"):
        coco_weights("COCO", "resnet18")
    with pytest.raises(ValueError, match="weights must be"):
        coco_weights("IMAGENET")
