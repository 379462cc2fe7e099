"""The shared backbone builder and the ImageNet (classification) weight mapping (no downloads)."""

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from pointrend.backbones import fpn_backbone, resnet_backbone, resnet_fpn_backbone
from pointrend.models import deeplabv3, pointrend_maskrcnn, pointrend_semantic_fpn
from pointrend.pretrained import load_torchvision_weights


def _trainable_stages(named_parameters):
    stages = {name.split(".")[0] for name, p in named_parameters if p.requires_grad}
    return sorted(stages)


def test_resnet_fpn_levels_channels_and_torchvision_keys():
    backbone = resnet_fpn_backbone("resnext50_32x4d", fpn_channels=64)
    with torch.no_grad():
        levels = backbone.eval()(torch.rand(1, 3, 67, 99))
    assert list(levels) == ["0", "1", "2", "3", "pool"]
    sizes = [tuple(v.shape[-2:]) for v in levels.values()]
    assert sizes == [(17, 25), (9, 13), (5, 7), (3, 4), (2, 2)]  # ceil(H / stride)
    assert all(v.shape[1] == 64 for v in levels.values())
    assert backbone.body.channels == [256, 512, 1024, 2048] and backbone.strides == [4, 8, 16, 32]
    keys = set(backbone.state_dict())
    assert {"body.layer4.2.conv2.weight", "fpn.inner_blocks.0.0.weight"} <= keys
    assert not any(k.startswith(("body.fc", "body.avgpool")) for k in keys)
    plain = resnet_fpn_backbone("resnet18", returned_layers=[1, 2, 3], max_pool_level=False)
    assert list(plain(torch.rand(1, 3, 64, 64))) == ["0", "1", "2"]
    assert "layer4" not in plain.body


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_dilation_keeps_the_resolution_for_basic_and_bottleneck_blocks(name):
    body = resnet_backbone(name, returned_layers=(1, 4), dilation=(False, True, True))
    with torch.no_grad():
        fine, coarse = body.eval()(torch.rand(1, 3, 64, 64)).values()
    assert body.strides == [4, 8] and coarse.shape[-2:] == (8, 8) and fine.shape[-2:] == (16, 16)
    last = body.layer4[-1].conv1 if name == "resnet18" else body.layer4[-1].conv2
    assert last.dilation == (4, 4) and last.padding == (4, 4)


def test_norm_and_trainable_stages_follow_torchvision():
    scratch = resnet_backbone("resnet18")
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in scratch.modules())
    everything = ["bn1", "conv1", "layer1", "layer2", "layer3", "layer4"]
    assert _trainable_stages(scratch.named_parameters()) == everything
    pretrained = resnet_backbone("resnet18", pretrained=True)
    assert isinstance(pretrained.bn1, FrozenBatchNorm2d)
    assert _trainable_stages(pretrained.named_parameters()) == ["layer2", "layer3", "layer4"]
    chosen = resnet_backbone("resnet18", pretrained=True, norm="batch", trainable_layers=1)
    assert isinstance(chosen.bn1, nn.BatchNorm2d)
    assert _trainable_stages(chosen.named_parameters()) == ["layer4"]
    with pytest.raises(ValueError, match="norm must be 'frozen', 'batch' or None, got 'group'"):
        resnet_backbone("resnet18", norm="group")
    with pytest.raises(ValueError, match=r"trainable_backbone_layers must be in \[0, 5\], got 7"):
        resnet_backbone("resnet18", trainable_layers=7)


def test_mobilenet_fpn_has_a_stride_4_level_and_freezes_by_stage():
    backbone = fpn_backbone("mobilenet_v3_large", pretrained=True)
    with torch.no_grad():
        levels = backbone.eval()(torch.rand(1, 3, 64, 64))
    assert [v.shape[-1] for v in levels.values()] == [16, 8, 4, 2, 1]
    trainable = {name.split(".")[1] for name, p in backbone.named_parameters() if p.requires_grad}
    # 6 stages start at blocks 0, 2, 4, 7, 13, 16: the top 3 train, as torchvision's default
    assert {n for n in trainable if n.isdigit()} == {str(i) for i in range(7, 17)}


def test_imagenet_weights_map_into_every_backbone():
    torch.manual_seed(0)
    resnet = torchvision.models.resnet18().state_dict()
    small = pointrend_semantic_fpn("resnet18", 3, backbone_returned_layers=[1, 2, 3])
    missing = load_torchvision_weights(small, resnet, "classification")
    assert not any(k.startswith("backbone.body.") for k in missing)
    own = small.state_dict()
    assert torch.equal(own["backbone.body.layer3.1.conv2.weight"], resnet["layer3.1.conv2.weight"])
    deeplab = deeplabv3("resnet18", 3)
    missing = load_torchvision_weights(deeplab, resnet, "classification")
    assert missing and all(k.startswith("coarse_head.") for k in missing)
    key = "layer4.1.bn2.running_var"
    assert torch.equal(deeplab.state_dict()["backbone." + key], resnet[key])
    mobile = torchvision.models.mobilenet_v3_large().state_dict()
    model = pointrend_maskrcnn("mobilenet_v3_large", 3, box_head_dim=16)
    load_torchvision_weights(model, mobile, "classification")
    key = "4.block.0.0.weight"
    assert torch.equal(model.state_dict()["backbone.body." + key], mobile["features." + key])
    with pytest.raises(ValueError, match=r"'layer1.0.conv1.weight' has shape \(64, 64, 3, 3\)"):
        load_torchvision_weights(pointrend_semantic_fpn("resnet50", 3), resnet, "classification")


def test_frozen_batch_norm_is_one_batch_norm_call_without_gradient(monkeypatch):
    """detectron2's fused inference path: the same values as torchvision's multiply-add (1e-5),
    the same buffers and keys, and the multiply-add kept where a gradient flows to the input."""
    from pointrend.backbones import FusedFrozenBatchNorm2d

    torch.manual_seed(0)
    plain, fused = FrozenBatchNorm2d(8), FusedFrozenBatchNorm2d(8)
    for name, buffer in plain.named_buffers():
        buffer.copy_(torch.rand_like(buffer) + 0.5 if "var" in name else torch.randn_like(buffer))
    fused.load_state_dict(plain.state_dict())
    assert list(fused.state_dict()) == list(plain.state_dict())
    calls = []
    batch_norm = torch.nn.functional.batch_norm
    monkeypatch.setattr(
        torch.nn.functional, "batch_norm", lambda *a, **k: calls.append(1) or batch_norm(*a, **k)
    )
    x = torch.randn(2, 8, 5, 7) * 3
    with torch.no_grad():
        expected, got = plain(x), fused(x)
    assert calls == [1]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    x.requires_grad_(True)
    fused(x).sum().backward()
    assert calls == [1] and x.grad is not None  # training keeps the multiply-add
    model = pointrend_maskrcnn("resnet18", 3, norm="frozen", box_head_dim=16)
    norms = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert norms and all(type(m) is FusedFrozenBatchNorm2d for m in norms)
