"""Builders: PointRend Mask R-CNN and its baseline, torchvision's Mask R-CNN, on any FPN backbone.

Both return a :class:`torchvision.models.detection.MaskRCNN` built from the same backbone, RPN and
box head, so that ``--model maskrcnn`` and ``--model pointrend`` differ only in the mask branch:

* :func:`maskrcnn`: torchvision's mask branch (RoIAlign 14x14, 4 convs, deconv, 28x28 masks).
* :func:`pointrend_maskrcnn`: PointRend's (:class:`PointRendRoIHeads`, :class:`PointRendTransform`).
* :func:`pointrend_maskrcnn_resnet50_fpn`: the paper's model; ``weights="COCO"`` starts from
  torchvision's COCO Mask R-CNN (backbone, RPN, box head; the mask branch stays initialised).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping

import torchvision
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN, MaskRCNN_ResNet50_FPN_Weights
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import (
    BackboneWithFPN,
    _mobilenet_extractor,
    _resnet_fpn_extractor,
)
from torchvision.models.detection.faster_rcnn import FasterRCNN, FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from ..settings import replace_options
from .mask_head import PointRendMaskBranch, PointRendMaskConfig
from .roi_heads import PointRendRoIHeads
from .transform import PointRendTransform

__all__ = [
    "fpn_backbone",
    "maskrcnn",
    "pointrend_maskrcnn",
    "pointrend_maskrcnn_resnet50_fpn",
    "map_torchvision_maskrcnn_state_dict",
    "load_torchvision_maskrcnn_weights",
    "coco_weights",
]

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
MOBILENETS = ("mobilenet_v3_large", "mobilenet_v3_small")
# MobileNetV3 stages at strides 4, 8, 16, 32 (torchvision's default returns only 16 and 32;
# PointRend needs a stride-4 map for its fine-grained features).
MOBILENET_RETURNED_LAYERS = [1, 2, 3, 5]


def fpn_backbone(
    backbone_name: str,
    weights_backbone=None,
    trainable_layers: int | None = None,
    pretrained: bool | None = None,
    returned_layers: list[int] | None = None,
    fpn_channels: int = 256,
) -> BackboneWithFPN:
    """A torchvision ResNet or MobileNetV3 with an FPN (256 channels; level ``"0"`` at stride 4).

    Args:
        backbone_name: ``resnet18`` ... ``resnet152``, ``mobilenet_v3_large`` / ``_small``.
        weights_backbone: ``None``, a torchvision weights enum or its name (``"DEFAULT"``).
        trainable_layers: stages left trainable, from the top (default: 3 with pretrained
            weights, all without).
        pretrained: whether trained weights will be in the backbone (default: when
            ``weights_backbone`` is given; the builders say so for COCO weights). As torchvision,
            a pretrained backbone gets ``FrozenBatchNorm2d`` and 3 trainable stages by default,
            a backbone trained from scratch ``BatchNorm2d`` and all stages.
        returned_layers: ResNet stages feeding the FPN (default ``[1, 2, 3, 4]``). ``[1, 2, 3]``
            drops ``layer4`` (3/4 of a ResNet-18's weights): a small CPU model.
        fpn_channels: channels of every FPN level (torchvision: 256).
    """
    if backbone_name not in RESNETS + MOBILENETS:
        raise ValueError(
            f"backbone_name must be one of {RESNETS + MOBILENETS}, got {backbone_name!r}"
        )
    if weights_backbone is not None:
        weights_backbone = torchvision.models.get_model_weights(backbone_name).verify(
            weights_backbone
        )
    if pretrained is None:
        pretrained = weights_backbone is not None
    norm_layer = FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    net = torchvision.models.get_model(
        backbone_name, weights=weights_backbone, norm_layer=norm_layer
    )
    if backbone_name in RESNETS:
        max_layers = 5
        trainable = _trainable(trainable_layers, pretrained, max_layers)
        returned = list(returned_layers or [1, 2, 3, 4])
        if returned[0] != 1 or returned != sorted(set(returned)) or returned[-1] > 4:
            raise ValueError(
                f"backbone_returned_layers must be increasing stages from 1 (the stride-4 "
                f"level PointRend samples) up to 4, got {returned}"
            )
        backbone = _resnet_fpn_extractor(net, trainable, returned_layers=returned)
        if fpn_channels != 256:
            in_channels = [net.inplanes // 8 * 2 ** (k - 1) for k in returned]
            backbone.fpn = FeaturePyramidNetwork(
                in_channels, fpn_channels, extra_blocks=LastLevelMaxPool()
            )
            backbone.out_channels = fpn_channels
        return backbone
    if returned_layers is not None or fpn_channels != 256:
        raise ValueError("backbone_returned_layers / fpn_channels are for ResNet backbones")
    max_layers = 6
    trainable = _trainable(trainable_layers, pretrained, max_layers)
    return _mobilenet_extractor(net, True, trainable, returned_layers=MOBILENET_RETURNED_LAYERS)


def _trainable(value: int | None, pretrained: bool, max_layers: int) -> int:
    if value is None:
        return 3 if pretrained else max_layers
    if not 0 <= value <= max_layers:
        raise ValueError(f"trainable_backbone_layers must be in [0, {max_layers}], got {value}")
    return value


POINTREND_MASK_OPTIONS = (
    "mask_config",
    "mask_output_size",
    "mask_subdivision_steps",
    "mask_subdivision_points",
    "mask_train_num_points",
    "mask_train_point_sampling",
    "mask_oversample_ratio",
    "mask_importance_sample_ratio",
    "mask_fc_dim",
    "mask_conv_dim",
)


def _check_options(kwargs: dict, builder: str, extra: tuple[str, ...] = ()) -> None:
    """torchvision passes unknown keyword arguments on and ignores them: refuse them instead."""
    known = set(inspect.signature(FasterRCNN.__init__).parameters) - {
        "self",
        "backbone",
        "num_classes",
        "box_head",
        "box_predictor",
        "kwargs",
    }
    known |= {"size_divisible", "fixed_size", "_skip_resize", "rpn_anchor_sizes", *extra}
    for key in kwargs:
        if key in POINTREND_MASK_OPTIONS:
            raise ValueError(
                f"{builder}() got {key!r}: a PointRend mask option; the baseline has "
                "torchvision's 28x28 mask head (use pointrend_maskrcnn for PointRend)"
            )
        if key not in known:
            raise ValueError(f"{builder}() got an unknown option {key!r}; known: {sorted(known)}")


def _maskrcnn_skeleton(
    backbone: BackboneWithFPN,
    num_classes: int,
    box_head_dim: int,
    mask_predictor: nn.Module,
    rpn_anchor_sizes: list[int] | None = None,
    **kwargs,
) -> MaskRCNN:
    """A torchvision MaskRCNN with a ``box_head_dim``-wide box head (torchvision's key names).

    ``rpn_anchor_sizes``: one anchor size per FPN level (default 32, 64, ... as torchvision).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    resolution = 7  # torchvision's box RoIAlign output
    box_head = TwoMLPHead(backbone.out_channels * resolution**2, box_head_dim)
    box_predictor = FastRCNNPredictor(box_head_dim, num_classes)
    levels = [name for name in _level_names(backbone) if name != "pool"]
    n = len(levels) + 1  # with the max-pool level
    sizes = rpn_anchor_sizes or ([32 * 2**i for i in range(n)] if n != 5 else None)
    if sizes is not None:  # torchvision's default has one size per level: 32 ... 512
        if len(sizes) != n:
            raise ValueError(f"rpn_anchor_sizes needs one size per FPN level ({n}), got {sizes}")
        kwargs.setdefault(
            "rpn_anchor_generator",
            AnchorGenerator(tuple((int(s),) for s in sizes), ((0.5, 1.0, 2.0),) * n),
        )
    if levels != ["0", "1", "2", "3"]:  # fewer FPN levels than torchvision's default
        kwargs.setdefault("box_roi_pool", MultiScaleRoIAlign(levels, resolution, 2))
        kwargs.setdefault("mask_roi_pool", MultiScaleRoIAlign(levels, 14, 2))
    return MaskRCNN(
        backbone,
        num_classes=None,
        box_head=box_head,
        box_predictor=box_predictor,
        mask_predictor=mask_predictor,
        **kwargs,
    )


def _level_names(backbone: BackboneWithFPN) -> list[str]:
    return list(backbone.body.return_layers.values()) + ["pool"]


def maskrcnn(
    backbone_name: str = "resnet50",
    num_classes: int = 91,
    *,
    weights=None,
    weights_backbone=None,
    trainable_backbone_layers: int | None = None,
    box_head_dim: int = 1024,
    mask_head_dim: int = 256,
    backbone_returned_layers: list[int] | None = None,
    fpn_channels: int = 256,
    **kwargs,
) -> MaskRCNN:
    """The baseline: torchvision's Mask R-CNN (4x conv mask head, 28x28 masks) on any backbone.

    Same arguments as :func:`pointrend_maskrcnn` apart from the mask options; ``mask_head_dim``
    is the width of the 4 convs and the deconv (torchvision: 256). ``kwargs`` go to
    :class:`MaskRCNN` (``min_size``, ``max_size``, ``box_detections_per_img``, ...).
    """
    _check_options(kwargs, "maskrcnn", extra=("mask_roi_pool", "mask_head"))
    weights = coco_weights(weights, backbone_name)
    backbone = fpn_backbone(
        backbone_name,
        None if weights else weights_backbone,
        trainable_backbone_layers,
        pretrained=True if weights else None,
        returned_layers=backbone_returned_layers,
        fpn_channels=fpn_channels,
    )
    predictor = MaskRCNNPredictor(mask_head_dim, mask_head_dim, num_classes)
    if mask_head_dim != 256 or backbone.out_channels != 256:
        kwargs.setdefault("mask_head", MaskRCNNHeads(backbone.out_channels, [mask_head_dim] * 4, 1))
    model = _maskrcnn_skeleton(backbone, num_classes, box_head_dim, predictor, **kwargs)
    if weights is not None:
        _load_coco(model, weights, keep_mask_head=True)
    return model


def pointrend_maskrcnn(
    backbone_name: str = "resnet50",
    num_classes: int = 91,
    *,
    weights=None,
    weights_backbone=None,
    trainable_backbone_layers: int | None = None,
    box_head_dim: int = 1024,
    mask_config: PointRendMaskConfig | None = None,
    mask_output_size: int | None = None,
    mask_subdivision_steps: int | None = None,
    mask_subdivision_points: int | None = None,
    mask_train_num_points: int | None = None,
    mask_train_point_sampling: str | None = None,
    mask_oversample_ratio: float | None = None,
    mask_importance_sample_ratio: float | None = None,
    mask_fc_dim: int | None = None,
    mask_conv_dim: int | None = None,
    backbone_returned_layers: list[int] | None = None,
    fpn_channels: int = 256,
    **kwargs,
) -> MaskRCNN:
    """PointRend Mask R-CNN on a torchvision ResNet / MobileNetV3 FPN backbone.

    Args:
        backbone_name: see :func:`fpn_backbone` (``"resnet18"`` with a small ``box_head_dim``
            makes a CPU-sized model).
        num_classes: K including the background.
        weights: ``None``, ``"COCO"`` or a ``MaskRCNN_ResNet50_FPN_Weights`` (ResNet-50 only):
            torchvision's COCO model into backbone, RPN and box head (box predictor when
            ``num_classes == 91``).
        weights_backbone: ImageNet weights of the backbone (enum or name), ignored with
            ``weights``.
        trainable_backbone_layers: as torchvision (default 3 when pretrained, else all).
        box_head_dim: width of the two-layer box head (torchvision: 1024).
        mask_config: :class:`PointRendMaskConfig`; ``mask_output_size``,
            ``mask_subdivision_steps`` and ``mask_subdivision_points`` (inference) and
            ``mask_train_num_points``, ``mask_train_point_sampling`` (``"uncertain"`` or
            ``"grid"``), ``mask_oversample_ratio`` (k) and ``mask_importance_sample_ratio``
            (beta) (training), ``mask_fc_dim`` / ``mask_conv_dim`` (coarse head widths)
            override its fields, so a YAML config can set them under ``model.options``.
        backbone_returned_layers, fpn_channels: see :func:`fpn_backbone` (small CPU models).
        **kwargs: passed to :class:`MaskRCNN` (``min_size``, ``max_size``, RPN / box options).

    Returns:
        A :class:`MaskRCNN` whose ``roi_heads`` is a :class:`PointRendRoIHeads` and whose
        ``transform`` is a :class:`PointRendTransform`.
    """
    _check_options(kwargs, "pointrend_maskrcnn")
    config = mask_config or PointRendMaskConfig()
    overrides = {
        "output_size": mask_output_size,
        "subdivision_steps": mask_subdivision_steps,
        "subdivision_num_points": mask_subdivision_points,
        "train_num_points": mask_train_num_points,
        "train_point_sampling": mask_train_point_sampling,
        "oversample_ratio": mask_oversample_ratio,
        "importance_sample_ratio": mask_importance_sample_ratio,
        "fc_dim": mask_fc_dim,
        "conv_dim": mask_conv_dim,
    }
    config = replace_options(config, **{k: v for k, v in overrides.items() if v is not None})
    weights = coco_weights(weights, backbone_name)
    backbone = fpn_backbone(
        backbone_name,
        None if weights else weights_backbone,
        trainable_backbone_layers,
        pretrained=True if weights else None,
        returned_layers=backbone_returned_layers,
        fpn_channels=fpn_channels,
    )
    model = _maskrcnn_skeleton(backbone, num_classes, box_head_dim, nn.Identity(), **kwargs)
    branch = PointRendMaskBranch(backbone.out_channels, num_classes, config)
    model.roi_heads = PointRendRoIHeads.from_roi_heads(model.roi_heads, branch)
    model.transform = PointRendTransform.from_transform(model.transform, num_classes)
    if weights is not None:
        _load_coco(model, weights, keep_mask_head=False)
    return model


def pointrend_maskrcnn_resnet50_fpn(
    num_classes: int = 91, weights=None, weights_backbone=None, **kwargs
) -> MaskRCNN:
    """The paper's PointRend Mask R-CNN, ResNet-50-FPN (see :func:`pointrend_maskrcnn`)."""
    return pointrend_maskrcnn(
        "resnet50",
        num_classes,
        weights=weights,
        weights_backbone=weights_backbone,
        **kwargs,
    )


def coco_weights(weights, backbone_name: str = "resnet50") -> MaskRCNN_ResNet50_FPN_Weights | None:
    """``None`` / ``"COCO"`` / a weights name or enum -> torchvision's COCO Mask R-CNN weights."""
    if weights is None:
        return None
    if backbone_name != "resnet50":
        raise ValueError(
            f"weights={weights!r}: torchvision's COCO Mask R-CNN weights exist for resnet50 only, "
            f"not {backbone_name!r} (use weights_backbone for ImageNet weights)"
        )
    if isinstance(weights, str) and weights.upper() == "COCO":
        return MaskRCNN_ResNet50_FPN_Weights.COCO_V1
    try:
        return MaskRCNN_ResNet50_FPN_Weights.verify(weights)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"weights must be None, 'COCO' or a MaskRCNN_ResNet50_FPN_Weights, got {weights!r}"
        ) from error


def map_torchvision_maskrcnn_state_dict(
    state_dict: Mapping[str, Tensor], num_classes: int, keep_mask_head: bool = False
) -> dict[str, Tensor]:
    """The part of a torchvision Mask R-CNN state dict that carries over to a new model.

    Keeps the backbone, the RPN and the box head; the box predictor only when it has
    ``num_classes`` classes; torchvision's mask head and predictor only with ``keep_mask_head``
    (the baseline), and then the mask predictor only when its class count matches.
    """
    kept = {}
    for key, value in state_dict.items():
        if key.startswith(("backbone.", "rpn.", "roi_heads.box_head.")):
            kept[key] = value
        elif key.startswith("roi_heads.box_predictor.cls_score."):
            if value.shape[0] == num_classes:
                kept[key] = value
        elif key.startswith("roi_heads.box_predictor.bbox_pred."):
            if value.shape[0] == 4 * num_classes:
                kept[key] = value
        elif keep_mask_head and key.startswith("roi_heads.mask_head."):
            kept[key] = value
        elif keep_mask_head and key.startswith("roi_heads.mask_predictor."):
            if key.startswith("roi_heads.mask_predictor.conv5_mask.") or (
                value.shape[0] == num_classes
            ):
                kept[key] = value
    return kept


def load_torchvision_maskrcnn_weights(
    model: MaskRCNN, state_dict: Mapping[str, Tensor], keep_mask_head: bool | None = None
) -> list[str]:
    """Load a torchvision Mask R-CNN state dict into ``model`` (backbone, RPN, box head).

    Returns the model's keys that were not loaded (the PointRend mask branch, and the box
    predictor when the class counts differ). Raises ``ValueError`` on a key the model does not
    have or a shape mismatch, naming the key.
    """
    if keep_mask_head is None:
        keep_mask_head = not isinstance(model.roi_heads, PointRendRoIHeads)
    num_classes = model.roi_heads.box_predictor.cls_score.out_features
    mapped = map_torchvision_maskrcnn_state_dict(state_dict, num_classes, keep_mask_head)
    own = model.state_dict()
    for key, value in mapped.items():
        if key.endswith("num_batches_tracked") and key not in own:
            continue  # FrozenBatchNorm2d has no counter
        if key not in own:
            raise ValueError(f"state dict key {key!r} has no counterpart in the model")
        if own[key].shape != value.shape:
            raise ValueError(
                f"state dict key {key!r} has shape {tuple(value.shape)}, the model's is "
                f"{tuple(own[key].shape)}"
            )
    result = model.load_state_dict(mapped, strict=False)
    return sorted(k for k in result.missing_keys if not k.endswith("num_batches_tracked"))


def _load_coco(
    model: MaskRCNN, weights: MaskRCNN_ResNet50_FPN_Weights, keep_mask_head: bool
) -> None:
    state = weights.get_state_dict(progress=True, check_hash=True)
    load_torchvision_maskrcnn_weights(model, state, keep_mask_head=keep_mask_head)
    if weights == MaskRCNN_ResNet50_FPN_Weights.COCO_V1:
        _set_frozen_bn_eps(model, 0.0)  # as torchvision: COCO_V1 was trained with eps = 0


def _set_frozen_bn_eps(model: nn.Module, eps: float) -> None:
    for module in model.modules():
        if isinstance(module, FrozenBatchNorm2d):
            module.eps = eps
