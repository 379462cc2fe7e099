"""Small CPU models (truncated ResNet, narrow FPN and heads) and the int8 shipping format (written
by ``scripts/ship_weights.py``, read by the package)."""

import pytest
import torch

from pointrend.engine.checkpoint import load_model_weights
from pointrend.models import maskrcnn, pointrend_maskrcnn, pointrend_semantic_fpn, semantic_fpn
from scripts.ship_weights import quantize_state_dict

SMALL = dict(
    min_size=96,
    max_size=96,
    box_head_dim=64,
    backbone_returned_layers=[1, 2, 3],
    fpn_channels=64,
    rpn_anchor_sizes=[16, 32, 64, 128],
)


def _params(module):
    return sum(p.numel() for p in module.parameters())


def _target():
    masks = torch.zeros(1, 96, 96, dtype=torch.uint8)
    masks[0, 20:70, 10:60] = 1
    return [
        {"boxes": torch.tensor([[10.0, 20, 60, 70]]), "labels": torch.tensor([2]), "masks": masks}
    ]


@pytest.mark.parametrize(
    "builder,extra",
    [
        (pointrend_maskrcnn, dict(coarse_head_fc_dim=128, coarse_head_conv_dim=64)),
        (maskrcnn, dict(mask_head_dim=64)),
    ],
)
def test_small_instance_models_train_and_infer(builder, extra):
    torch.manual_seed(0)
    model = builder("resnet18", 5, **SMALL, **extra)
    full = builder("resnet18", 5, min_size=96, max_size=96, box_head_dim=64)
    assert "layer4" not in dict(model.backbone.body.named_children())
    assert model.backbone.out_channels == 64
    assert _params(model) < 0.5 * _params(full)  # layer4 and the 256-wide FPN are gone
    sizes = model.rpn.anchor_generator.sizes
    assert sizes == ((16,), (32,), (64,), (128,))
    losses = model([torch.rand(3, 96, 96)], _target())
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    model.eval()
    out = model([torch.rand(3, 96, 80)])[0]
    assert out["masks"].shape[1:] == (1, 96, 80)


def test_small_model_option_errors():
    with pytest.raises(ValueError, match="rpn_anchor_sizes needs one size per FPN level"):
        pointrend_maskrcnn("resnet18", 5, **dict(SMALL, rpn_anchor_sizes=[16, 32]))
    with pytest.raises(
        ValueError, match=r"backbone_returned_layers must start at 1 .*got \[2, 3\]"
    ):
        maskrcnn("resnet18", 5, backbone_returned_layers=[2, 3])
    with pytest.raises(ValueError, match="a PointRend mask option"):
        maskrcnn("resnet18", 5, coarse_head_fc_dim=128)
    with pytest.raises(ValueError, match=r"backbone_returned_layers .* got \[1, 2\]"):
        semantic_fpn("resnet18", 4, backbone_returned_layers=[1, 2])


@pytest.mark.parametrize("builder", [pointrend_semantic_fpn, semantic_fpn])
def test_small_semantic_fpn_p2_p4(builder):
    model = builder(
        "resnet18",
        4,
        fpn_channels=64,
        conv_dims=32,
        backbone_returned_layers=[1, 2, 3],
        subdivision_num_points=512,
        train_num_points=64,
    )
    assert "layer4" not in model.backbone.body and model.backbone.strides == [4, 8, 16]
    assert (model.point_head is not None) == (builder is pointrend_semantic_fpn)
    losses = model(torch.rand(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64)))
    assert all(torch.isfinite(v) for v in losses.values())
    model.eval()
    assert model(torch.rand(1, 3, 61, 77))["out"].shape == (1, 4, 61, 77)


def test_int8_shipping_round_trip(tmp_path):
    torch.manual_seed(0)
    model = pointrend_maskrcnn(
        "resnet18", 5, **SMALL, coarse_head_fc_dim=128, coarse_head_conv_dim=64
    )
    state, scales = quantize_state_dict(model.state_dict())
    big = "roi_heads.mask_branch.coarse_head.fcs.0.weight"
    assert state[big].dtype == torch.int8 and scales[big].shape == (state[big].shape[0],)
    assert all(v.dtype != torch.float32 for v in state.values() if v.is_floating_point())
    torch.save({"model": state, "int8_scales": scales}, tmp_path / "q.pt")
    fp32 = sum(v.numel() * 4 for v in model.state_dict().values() if v.is_floating_point())
    assert (tmp_path / "q.pt").stat().st_size < 0.3 * fp32
    copy = pointrend_maskrcnn(
        "resnet18", 5, **SMALL, coarse_head_fc_dim=128, coarse_head_conv_dim=64
    )
    load_model_weights(copy, tmp_path / "q.pt")
    for key, original in model.state_dict().items():
        restored = copy.state_dict()[key]
        if original.is_floating_point():
            # int8: half a step of the row's scale; fp16: relative 1e-3
            tol = scales[key].max() / 2 + 1e-6 if key in scales else 1e-3 * original.abs().max()
            assert (restored - original).abs().max() <= tol + 1e-7, key
        else:
            assert torch.equal(restored, original), key
