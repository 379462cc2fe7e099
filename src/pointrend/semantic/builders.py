"""Builders: Semantic FPN and DeepLabV3, each plain (the baseline) or with PointRend."""

from __future__ import annotations

from collections.abc import Mapping

import torchvision
from torch import Tensor, nn
from torchvision.models.segmentation import DeepLabV3_ResNet50_Weights
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from ..head import PointHead
from ..settings import replace_options
from .backbone import (
    RESNET_DEPTHS,
    ResNetFeatures,
    ResNetFPN,
    backbone_state_dict_from_torchvision_resnet,
    build_resnet,
)
from .fpn_head import SemanticFPNHead
from .pointrend import SemanticPointRendConfig, SemanticSegmenter

__all__ = [
    "semantic_fpn",
    "deeplabv3",
    "build_semantic_model",
    "pointrend_semantic_fpn_resnet50",
    "pointrend_deeplabv3_resnet50",
    "map_torchvision_deeplabv3_state_dict",
]


def _depth(backbone: str) -> int:
    if (
        not backbone.startswith("resnet")
        or not backbone[6:].isdigit()
        or int(backbone[6:]) not in RESNET_DEPTHS
    ):
        raise ValueError(
            f"backbone must be one of {[f'resnet{d}' for d in RESNET_DEPTHS]}, got {backbone!r}"
        )
    return int(backbone[6:])


def _load_imagenet(body: ResNetFeatures, backbone: str, weights_backbone) -> None:
    if weights_backbone is None:
        return
    enum = torchvision.models.get_model_weights(backbone).verify(weights_backbone)
    state = backbone_state_dict_from_torchvision_resnet(
        enum.get_state_dict(progress=True, check_hash=True)
    )
    if body.layer4 is None:  # a truncated ResNet keeps res2..res4
        state = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    body.load_state_dict(state)


def _point_head(fine_channels: int, num_classes: int, config: SemanticPointRendConfig) -> PointHead:
    settings = config.pointrend
    return PointHead(
        fine_channels,
        num_classes,
        fc_dim=settings.fc_dim,
        num_fc=settings.num_fc,
        coarse_pred_each_layer=settings.coarse_pred_each_layer,
    )


def semantic_fpn(
    backbone: str = "resnet50",
    num_classes: int = 19,
    *,
    pointrend: bool = True,
    levels: str = "P2-P5",
    weights_backbone=None,
    conv_dims: int = 128,
    fpn_channels: int = 256,
    backbone_returned_layers: list[int] | None = None,
    config: SemanticPointRendConfig | None = None,
    **config_overrides,
) -> SemanticSegmenter:
    """Semantic FPN (P2-P5: stride-4 logits, or P3-P5: stride 8) on a ResNet-FPN, + PointRend.

    Fine-grained features come from P2 (``fpn_channels``, stride 4). ``config_overrides`` set
    fields of :class:`SemanticPointRendConfig` (e.g. ``train_num_points=1024``).
    ``backbone_returned_layers=[1, 2, 3]`` drops ``layer4`` (P2-P4 instead of P2-P5; 3/4 of a
    ResNet-18's weights): a small CPU model.
    """
    stages = len(backbone_returned_layers or [1, 2, 3, 4])
    if list(backbone_returned_layers or [1, 2, 3, 4]) != [1, 2, 3, 4][:stages] or stages < 3:
        raise ValueError(
            f"backbone_returned_layers must be [1, 2, 3] or [1, 2, 3, 4], "
            f"got {backbone_returned_layers}"
        )
    if levels not in ("P2-P5", "P3-P5"):
        raise ValueError(f"levels must be 'P2-P5' or 'P3-P5', got {levels!r}")
    config = replace_options(config or SemanticPointRendConfig(), **config_overrides)
    resnet, strides = build_resnet(_depth(backbone))
    body = ResNetFeatures(resnet, strides, num_stages=stages)
    _load_imagenet(body, backbone, weights_backbone)
    fpn = ResNetFPN(body, fpn_channels)
    first = 0 if levels == "P2-P5" else 1
    in_strides = (4, 8, 16, 32)[first:stages]
    head = SemanticFPNHead(fpn_channels, num_classes, in_strides, conv_dims=conv_dims)
    point_head = _point_head(fpn_channels, num_classes, config) if pointrend else None
    inputs = tuple(range(first, stages))
    return SemanticSegmenter(
        fpn, head, in_strides[0], 0, 4, num_classes, point_head, config, coarse_inputs=inputs
    )


def deeplabv3(
    backbone: str = "resnet50",
    num_classes: int = 19,
    *,
    pointrend: bool = True,
    output_stride: int = 16,
    weights=None,
    weights_backbone=None,
    config: SemanticPointRendConfig | None = None,
    **config_overrides,
) -> SemanticSegmenter:
    """DeepLabV3 (torchvision's head) on a ResNet dilated to ``output_stride`` (16 or 8), + PointRend.

    Fine-grained features come from res2 (stride 4). ``weights`` (``"COCO_WITH_VOC_LABELS"`` or
    torchvision's ``DeepLabV3_ResNet50_Weights``) loads torchvision's DeepLabV3-ResNet-50 into the
    backbone and head (the last classifier layer only when ``num_classes`` is 21).
    """
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    config = replace_options(config or SemanticPointRendConfig(), **config_overrides)
    dilate = (False, False, True) if output_stride == 16 else (False, True, True)
    resnet, strides = build_resnet(_depth(backbone), dilate)
    body = ResNetFeatures(resnet, strides)
    if weights is None:
        _load_imagenet(body, backbone, weights_backbone)
    head = DeepLabHead(body.channels[3], num_classes)
    point_head = _point_head(body.channels[0], num_classes, config) if pointrend else None
    model = SemanticSegmenter(
        body, head, output_stride, 0, 4, num_classes, point_head, config, coarse_inputs=3
    )
    if weights is not None:
        if backbone != "resnet50":
            raise ValueError(
                f"torchvision's DeepLabV3 weights exist for resnet50 here, not {backbone!r}"
            )
        enum = DeepLabV3_ResNet50_Weights.verify(weights)
        load_torchvision_deeplabv3(model, enum.get_state_dict(progress=True, check_hash=True))
    return model


def map_torchvision_deeplabv3_state_dict(
    state_dict: Mapping[str, Tensor], num_classes: int
) -> dict[str, Tensor]:
    """torchvision DeepLabV3 keys -> :func:`deeplabv3` keys (``backbone.*``, ``coarse_head.*``).

    The auxiliary classifier is dropped; the last classifier conv (``classifier.4``) is kept
    only when its class count is ``num_classes``.
    """
    out = {}
    for key, value in state_dict.items():
        if key.startswith("backbone."):
            out[key] = value
        elif key.startswith("classifier."):
            if key.startswith("classifier.4.") and value.shape[0] != num_classes:
                continue
            out["coarse_head." + key[len("classifier.") :]] = value
    return out


def load_torchvision_deeplabv3(
    model: SemanticSegmenter, state_dict: Mapping[str, Tensor]
) -> list[str]:
    """Load a torchvision DeepLabV3 state dict; returns the model keys left initialised."""
    mapped = map_torchvision_deeplabv3_state_dict(state_dict, model.num_classes)
    own = model.state_dict()
    for key, value in mapped.items():
        if key not in own or own[key].shape != value.shape:
            got = tuple(own[key].shape) if key in own else "no such key"
            raise ValueError(
                f"state dict key {key!r} {tuple(value.shape)} does not fit the model ({got})"
            )
    return sorted(model.load_state_dict(mapped, strict=False).missing_keys)


def build_semantic_model(
    arch: str,
    backbone: str,
    num_classes: int,
    pointrend: bool = True,
    weights=None,
    weights_backbone=None,
    **options,
) -> nn.Module:
    """The engine's entry: ``arch`` is ``fpn`` / ``semantic_fpn`` or ``deeplabv3``."""
    if arch in ("fpn", "semantic_fpn"):
        if weights is not None:
            raise ValueError("Semantic FPN has no torchvision weights: use weights_backbone")
        return semantic_fpn(
            backbone, num_classes, pointrend=pointrend, weights_backbone=weights_backbone, **options
        )
    if arch == "deeplabv3":
        return deeplabv3(
            backbone,
            num_classes,
            pointrend=pointrend,
            weights=weights,
            weights_backbone=weights_backbone,
            **options,
        )
    raise ValueError(f"model.arch must be 'fpn' or 'deeplabv3' for semantic models, got {arch!r}")


def pointrend_semantic_fpn_resnet50(
    num_classes: int, weights_backbone=None, **kwargs
) -> SemanticSegmenter:
    """PointRend Semantic FPN (P2-P5), ResNet-50."""
    return semantic_fpn(
        "resnet50", num_classes, pointrend=True, weights_backbone=weights_backbone, **kwargs
    )


def pointrend_deeplabv3_resnet50(
    num_classes: int, weights=None, weights_backbone=None, **kwargs
) -> SemanticSegmenter:
    """PointRend DeepLabV3 (output stride 16, fine features from res2), ResNet-50."""
    return deeplabv3(
        "resnet50",
        num_classes,
        pointrend=True,
        weights=weights,
        weights_backbone=weights_backbone,
        **kwargs,
    )
