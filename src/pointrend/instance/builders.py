"""Builders: PointRend Mask R-CNN and its baseline, torchvision's Mask R-CNN, on any FPN backbone.

Both return a :class:`torchvision.models.detection.MaskRCNN` built from the same backbone, RPN and
box head (state-dict keys as torchvision's), so that the two differ only in the mask branch:

* :func:`maskrcnn`: torchvision's mask branch (RoIAlign 14x14, 4 convs, deconv, 28x28 masks).
* :func:`pointrend_maskrcnn`: PointRend's (:class:`PointRendRoIHeads`, :class:`PointRendTransform`).
* :func:`pointrend_maskrcnn_resnet50_fpn`: the paper's model; ``weights="COCO"`` starts from
  torchvision's COCO Mask R-CNN (backbone, RPN, box head; the mask branch stays initialised).

Options a builder does not take raise :class:`~pointrend.options.OptionError` (torchvision would
drop them silently).
"""

from __future__ import annotations

import inspect

from torch import nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from ..backbones import FPNBackbone, fpn_backbone
from ..options import check_options, keyword_options
from ..pretrained import load_pretrained, torchvision_weights
from ..settings import replace_options
from .mask_head import PointRendMaskBranch, PointRendMaskConfig
from .roi_heads import PointRendRoIHeads
from .transform import PointRendTransform

__all__ = [
    "maskrcnn",
    "pointrend_maskrcnn",
    "pointrend_maskrcnn_resnet50_fpn",
]

# torchvision's MaskRCNN keywords a user passes (the builders make the backbone and the heads),
# with the transform's own (MaskRCNN hands unknown keywords to GeneralizedRCNNTransform).
BUILT_HERE = ("self", "backbone", "num_classes", "box_head", "box_predictor", "mask_predictor")
TORCHVISION_OPTIONS = tuple(
    name
    for name in inspect.signature(MaskRCNN.__init__).parameters
    if name not in (*BUILT_HERE, "kwargs")
) + ("size_divisible", "fixed_size")
MASK_BRANCH_MODULES = ("mask_roi_pool", "mask_head")  # torchvision's mask branch: baseline only
COCO_MODEL = "maskrcnn_resnet50_fpn"  # torchvision's COCO Mask R-CNN (ResNet-50-FPN)


def _backbone(name: str, weights, weights_backbone, **options) -> tuple[FPNBackbone, tuple]:
    """The FPN backbone (``options``: :func:`fpn_backbone`'s) and the weights to load once the
    model is built (enum, layout), or ``None``."""
    if weights is not None and name != "resnet50":
        raise ValueError(
            f"weights={weights!r}: torchvision's COCO Mask R-CNN weights exist for resnet50 only, "
            f"not {name!r} (use weights_backbone for ImageNet weights)"
        )
    if weights is not None:
        load = (torchvision_weights(COCO_MODEL, weights), "maskrcnn")
    elif weights_backbone is not None:
        load = (torchvision_weights(name, weights_backbone), "classification")
    else:
        load = None
    backbone = fpn_backbone(name, pretrained=load is not None, **options)
    return backbone, load


def _skeleton(
    backbone: FPNBackbone,
    num_classes: int,
    box_head_dim: int,
    mask_predictor: nn.Module,
    rpn_anchor_sizes: list[int] | None,
    kwargs: dict,
) -> MaskRCNN:
    """A torchvision MaskRCNN with a ``box_head_dim``-wide box head (torchvision's key names).

    ``rpn_anchor_sizes``: one anchor size per FPN level (default 32, 64, ... as torchvision).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    resolution = 7  # torchvision's box RoIAlign output
    box_head = TwoMLPHead(backbone.out_channels * resolution**2, box_head_dim)
    box_predictor = FastRCNNPredictor(box_head_dim, num_classes)
    levels = [str(i) for i in range(len(backbone.strides))]
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


def maskrcnn(
    backbone_name: str = "resnet50",
    num_classes: int = 91,
    *,
    weights=None,
    weights_backbone=None,
    trainable_backbone_layers: int | None = None,
    norm: str | None = None,
    box_head_dim: int = 1024,
    mask_head_dim: int = 256,
    backbone_returned_layers: list[int] | None = None,
    fpn_channels: int = 256,
    rpn_anchor_sizes: list[int] | None = None,
    **kwargs,
) -> MaskRCNN:
    """The baseline: torchvision's Mask R-CNN (4x conv mask head, 28x28 masks) on any backbone.

    Same arguments as :func:`pointrend_maskrcnn` apart from the mask options; ``mask_head_dim``
    is the width of the 4 convs and the deconv (torchvision: 256); ``mask_roi_pool`` and
    ``mask_head`` (torchvision modules) may be given.
    """
    check_options("maskrcnn", kwargs, _maskrcnn_options(), misplaced=_POINTREND_ONLY)
    backbone, load = _backbone(
        backbone_name,
        weights,
        weights_backbone,
        returned_layers=backbone_returned_layers,
        fpn_channels=fpn_channels,
        norm=norm,
        trainable_layers=trainable_backbone_layers,
    )
    predictor = MaskRCNNPredictor(mask_head_dim, mask_head_dim, num_classes)
    if mask_head_dim != 256 or backbone.out_channels != 256:
        kwargs.setdefault("mask_head", MaskRCNNHeads(backbone.out_channels, [mask_head_dim] * 4, 1))
    model = _skeleton(backbone, num_classes, box_head_dim, predictor, rpn_anchor_sizes, kwargs)
    if load is not None:
        load_pretrained(model, *load)
    return model


def pointrend_maskrcnn(
    backbone_name: str = "resnet50",
    num_classes: int = 91,
    *,
    weights=None,
    weights_backbone=None,
    trainable_backbone_layers: int | None = None,
    norm: str | None = None,
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
    rpn_anchor_sizes: list[int] | None = None,
    **kwargs,
) -> MaskRCNN:
    """PointRend Mask R-CNN on a torchvision ResNet / ResNeXt / MobileNetV3 FPN backbone.

    Args:
        backbone_name: one of :data:`pointrend.backbones.RESNETS` or ``MOBILENETS``
            (``"resnet18"`` with a small ``box_head_dim`` makes a CPU-sized model).
        num_classes: K including the background.
        weights: ``None``, ``"COCO"`` or a ``MaskRCNN_ResNet50_FPN_Weights`` (ResNet-50 only):
            torchvision's COCO model into backbone, RPN and box head (box predictor when
            ``num_classes == 91``); weights_backbone: ImageNet weights (ignored with ``weights``).
        trainable_backbone_layers, norm: as torchvision (default: 3 stages and frozen batch
            norm when pretrained, else all and batch norm; :mod:`pointrend.backbones`).
        box_head_dim: width of the two-layer box head (torchvision: 1024).
        mask_config: :class:`PointRendMaskConfig`, whose fields the ``mask_*`` options override
            (inference: output size, subdivision steps and points; training: points, sampling,
            k, beta; the coarse head's widths), so that a YAML config can set them.
        backbone_returned_layers: ResNet stages feeding the FPN (default ``[1, 2, 3, 4]``;
            ``[1, 2, 3]`` drops ``layer4``: a small CPU model); fpn_channels: of every level.
        rpn_anchor_sizes: one anchor size per FPN level with the max-pool level (32, 64, ...).
        **kwargs: torchvision's :class:`MaskRCNN` keywords (``min_size``, ``max_size``, RPN and
            box options); others raise :class:`~pointrend.options.OptionError`.

    Returns:
        A :class:`MaskRCNN` whose ``roi_heads`` is a :class:`PointRendRoIHeads` and whose
        ``transform`` is a :class:`PointRendTransform`.
    """
    check_options("pointrend_maskrcnn", kwargs, _pointrend_maskrcnn_options(), _BASELINE_ONLY)
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
    backbone, load = _backbone(
        backbone_name,
        weights,
        weights_backbone,
        returned_layers=backbone_returned_layers,
        fpn_channels=fpn_channels,
        norm=norm,
        trainable_layers=trainable_backbone_layers,
    )
    model = _skeleton(backbone, num_classes, box_head_dim, nn.Identity(), rpn_anchor_sizes, kwargs)
    branch = PointRendMaskBranch(backbone.out_channels, num_classes, config)
    model.roi_heads = PointRendRoIHeads.from_roi_heads(model.roi_heads, branch)
    model.transform = PointRendTransform.from_transform(model.transform, num_classes)
    if load is not None:
        load_pretrained(model, *load)
    return model


def pointrend_maskrcnn_resnet50_fpn(
    num_classes: int = 91, *, weights=None, weights_backbone=None, **kwargs
) -> MaskRCNN:
    """The paper's PointRend Mask R-CNN, ResNet-50-FPN (see :func:`pointrend_maskrcnn`)."""
    return pointrend_maskrcnn(
        "resnet50", num_classes, weights=weights, weights_backbone=weights_backbone, **kwargs
    )


def _maskrcnn_options() -> list[str]:
    """The public keyword options of :func:`maskrcnn` (its own and torchvision's)."""
    return sorted({*keyword_options(maskrcnn), *TORCHVISION_OPTIONS})


def _pointrend_maskrcnn_options() -> list[str]:
    """The public keyword options of :func:`pointrend_maskrcnn` (its own and torchvision's)."""
    own = keyword_options(pointrend_maskrcnn)
    return sorted({*own, *TORCHVISION_OPTIONS} - set(MASK_BRANCH_MODULES))


_POINTREND_ONLY = {
    name: (
        "a PointRend mask option",
        "maskrcnn is the baseline with torchvision's 28x28 mask head (use pointrend_maskrcnn)",
    )
    for name in keyword_options(pointrend_maskrcnn)
    if name.startswith("mask_")
}
_BASELINE_ONLY = {
    "mask_head_dim": (
        "an option of the baseline's 4x conv mask head",
        "PointRend's coarse head takes mask_fc_dim / mask_conv_dim",
    ),
    **{
        name: (
            "a torchvision mask-branch module",
            "PointRend's mask branch replaces it (use maskrcnn for torchvision's)",
        )
        for name in MASK_BRANCH_MODULES
    },
}
