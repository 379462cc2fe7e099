"""Builders: PointRend Mask R-CNN and its baseline, torchvision's Mask R-CNN, on any FPN backbone.

Both return a :class:`torchvision.models.detection.MaskRCNN` built from the same backbone, RPN and
box head (state-dict keys as torchvision's), so that the two differ only in the mask branch:

* :func:`maskrcnn`: torchvision's mask branch (RoIAlign 14x14, 4 convs, deconv, 28x28 masks).
* :func:`pointrend_maskrcnn`: PointRend's (:class:`PointRendRoIHeads`, :class:`PointRendTransform`).
* :func:`pointrend_maskrcnn_resnet50_fpn`: the paper's model; ``weights="COCO"`` starts from
  torchvision's COCO Mask R-CNN (backbone, RPN, box head; the mask branch stays initialised).

Options common to both builders (keyword arguments):

* ``weights``: ``None``, ``"COCO"`` or a ``MaskRCNN_ResNet50_FPN_Weights``
  (ResNet-50 only): torchvision's COCO model into backbone, RPN and box head (box
  predictor when ``num_classes == 91``); ``weights_backbone``: ImageNet weights
  (ignored with ``weights``). ``load_weights=False``: the model those weights make (frozen
  norm, trainable stages) without downloading or loading them, for a checkpoint loaded next.
* ``trainable_backbone_layers``, ``norm``: as torchvision (default: 3 stages and
  frozen batch norm when pretrained, else all and batch norm;
  :mod:`pointrend.backbones`).
* ``box_head_dim``: width of the two-layer box head (torchvision: 1024).
* ``backbone_returned_layers``: ResNet stages feeding the FPN (default
  ``[1, 2, 3, 4]``; ``[1, 2, 3]`` drops ``layer4``: a small CPU model);
  ``fpn_channels``: of every level.
* ``stride_in_1x1``: the stride of each ResNet stage in its first 1x1 conv (the
  original MSRA ResNet, detectron2's ``STRIDE_IN_1X1``) instead of the 3x3 conv.
* ``rpn_anchor_sizes``: one anchor size per FPN level with the max-pool level (32,
  64, ...); ``rpn_anchor_rule``: ``"torchvision"`` (cell anchors rounded to whole
  pixels, level strides from the padded image size) or ``"detectron2"`` (unrounded,
  at each level's nominal stride).
* ``roi_align_aligned``: RoIAlign with pixel centres at half-integers (``aligned``,
  detectron2's ``ROIAlignV2``); ``roi_align_sampling_ratio``: points per bin side
  (torchvision: 2; 0: ``ceil(bin size)``, detectron2's).
* ``resize_rule``: ``"torchvision"`` (output size ``floor(side * scale)``) or
  ``"detectron2"`` (``int(side * scale + 0.5)``, antialiased when shrinking); with
  ``min_size=0`` images are not resized.
* ``rpn_smooth_l1_beta``: ``beta`` of the RPN's smooth-L1 box loss (torchvision: 1/9;
  detectron2's configs: 0, plain L1).
* ``box_head_init``: ``"torchvision"`` (``nn.Linear``'s defaults) or ``"detectron2"``
  (Xavier-style hidden layers, classifier N(0, 0.01), box deltas N(0, 0.001)); pretrained or
  loaded weights replace it.
* ``mask_paste``: ``"pointrend"`` (box-relative masks clamped to their border cells
  up to the box edge) or ``"detectron2"`` (zero outside the mask: values fade
  towards 0 at the box border).
* ``mask_output``: ``"dense"`` (torchvision's ``masks``, ``N x 1 x H x W`` probabilities) or
  ``"compact"`` (``mask_grids``: each detection's box-local grid with its box,
  :class:`~pointrend.instance.compact.CompactMasks`, pasted to ``bool`` / ``uint8`` / RLE
  by :func:`~pointrend.instance.compact.paste_compact`).
* torchvision's :class:`MaskRCNN` keywords (``min_size``, ``max_size``,
  ``image_mean``, ``image_std``, RPN and box options); others raise
  :class:`~pointrend.options.OptionError`.

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

from ..backbones import FPNBackbone, fpn_backbone, move_stride_to_1x1_
from ..options import check_options, keyword_options
from ..pretrained import load_pretrained, torchvision_weights
from ..settings import replace_options
from .detectron2_ops import ANCHOR_RULES, AlignedMultiScaleRoIAlign, NominalStrideAnchorGenerator
from .losses import TORCHVISION_BETA, SmoothL1RPN, init_box_head_
from .mask_head import PointRendMaskBranch, PointRendMaskConfig
from .model import PointRendMaskRCNN
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


def feature_stride(backbone: FPNBackbone, key: str) -> int:
    """Stride in image pixels of the backbone's output ``key`` (``"0"``, ``"1"``, ... in the
    order of ``backbone.strides``, or the max-pool level ``"pool"``)."""
    strides = {str(i): s for i, s in enumerate(backbone.strides)}
    strides["pool"] = 2 * backbone.strides[-1]
    if key not in strides:
        raise ValueError(f"feature_key {key!r} is not a backbone output (one of {list(strides)})")
    return strides[key]


def _skeleton(
    backbone: FPNBackbone,
    num_classes: int,
    box_head_dim: int,
    mask_predictor: nn.Module,
    anchors: dict,
    roi_align: dict,
    kwargs: dict,
    model_class: type[MaskRCNN] = MaskRCNN,
) -> MaskRCNN:
    """A torchvision MaskRCNN (or ``model_class``) with a ``box_head_dim``-wide box head
    (torchvision's key names).

    ``anchors``: ``sizes`` (one anchor size per FPN level, default 32, 64, ... as torchvision)
    and ``rule`` (:data:`ANCHOR_RULES`); ``roi_align``: ``aligned`` and ``sampling_ratio`` of
    the box (and baseline mask) RoIAlign.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes counts the background and must be >= 2, got {num_classes}")
    resolution = 7  # torchvision's box RoIAlign output
    box_head = TwoMLPHead(backbone.out_channels * resolution**2, box_head_dim)
    box_predictor = FastRCNNPredictor(box_head_dim, num_classes)
    levels = [str(i) for i in range(len(backbone.strides))]
    n = len(levels) + 1  # with the max-pool level
    sizes = anchors["sizes"] or [32 * 2**i for i in range(n)]
    if len(sizes) != n:
        raise ValueError(f"rpn_anchor_sizes needs one size per FPN level ({n}), got {sizes}")
    if anchors["rule"] not in ANCHOR_RULES:
        raise ValueError(f"rpn_anchor_rule must be one of {ANCHOR_RULES}, got {anchors['rule']!r}")
    cell = (tuple((int(s),) for s in sizes), ((0.5, 1.0, 2.0),) * n)
    if anchors["rule"] == "detectron2":
        strides = [*backbone.strides, 2 * backbone.strides[-1]]
        kwargs.setdefault("rpn_anchor_generator", NominalStrideAnchorGenerator(*cell, strides))
    else:
        kwargs.setdefault("rpn_anchor_generator", AnchorGenerator(*cell))
    pooler = AlignedMultiScaleRoIAlign if roi_align["aligned"] else MultiScaleRoIAlign
    kwargs.setdefault("box_roi_pool", pooler(levels, resolution, roi_align["sampling_ratio"]))
    kwargs.setdefault("mask_roi_pool", pooler(levels, 14, roi_align["sampling_ratio"]))
    return model_class(
        backbone,
        num_classes=None,
        box_head=box_head,
        box_predictor=box_predictor,
        mask_predictor=mask_predictor,
        **kwargs,
    )


def _instance_model(
    backbone_name: str,
    num_classes: int,
    *,
    pointrend: bool,
    mask_head_dim: int = 256,
    mask_config: PointRendMaskConfig | None = None,
    weights=None,
    weights_backbone=None,
    trainable_backbone_layers: int | None = None,
    norm: str | None = None,
    box_head_dim: int = 1024,
    backbone_returned_layers: list[int] | None = None,
    fpn_channels: int = 256,
    stride_in_1x1: bool = False,
    rpn_anchor_sizes: list[int] | None = None,
    rpn_anchor_rule: str = "torchvision",
    roi_align_aligned: bool = False,
    roi_align_sampling_ratio: int = 2,
    resize_rule: str = "torchvision",
    mask_paste: str = "pointrend",
    rpn_smooth_l1_beta: float = TORCHVISION_BETA,
    box_head_init: str = "torchvision",
    mask_output: str = "dense",
    load_weights: bool = True,
    **kwargs,
) -> MaskRCNN:
    """Mask R-CNN with torchvision's mask branch (``mask_head_dim``) or, when ``pointrend``,
    PointRend's (``mask_config``); the options common to both: :func:`pointrend_maskrcnn`."""
    backbone, load = _backbone(
        backbone_name,
        weights,
        weights_backbone,
        returned_layers=backbone_returned_layers,
        fpn_channels=fpn_channels,
        norm=norm,
        trainable_layers=trainable_backbone_layers,
    )
    if stride_in_1x1:
        move_stride_to_1x1_(backbone.body)
    anchors = {"sizes": rpn_anchor_sizes, "rule": rpn_anchor_rule}
    roi_align = {"aligned": roi_align_aligned, "sampling_ratio": roi_align_sampling_ratio}
    if pointrend:
        mask_predictor = nn.Identity()
    else:
        mask_predictor = MaskRCNNPredictor(mask_head_dim, mask_head_dim, num_classes)
        if mask_head_dim != 256 or backbone.out_channels != 256:
            heads = MaskRCNNHeads(backbone.out_channels, [mask_head_dim] * 4, 1)
            kwargs.setdefault("mask_head", heads)
    model_class = PointRendMaskRCNN if pointrend else MaskRCNN
    model = _skeleton(
        backbone, num_classes, box_head_dim, mask_predictor, anchors, roi_align, kwargs, model_class
    )
    SmoothL1RPN.convert_(model.rpn, rpn_smooth_l1_beta)
    init_box_head_(model.roi_heads.box_head, model.roi_heads.box_predictor, box_head_init)
    if pointrend:
        branch = PointRendMaskBranch(backbone.out_channels, num_classes, mask_config)
        stride = feature_stride(backbone, branch.config.feature_key)
        model.roi_heads = PointRendRoIHeads.from_roi_heads(
            model.roi_heads, branch, mask_stride=stride
        )
    rules = (resize_rule, mask_paste, mask_output)
    if pointrend or rules != ("torchvision", "pointrend", "dense"):
        model.transform = PointRendTransform.from_transform(
            model.transform,
            num_classes,
            resize_rule=resize_rule,
            mask_paste=mask_paste,
            mask_output=mask_output,
        )
    if load is not None and load_weights:
        load_pretrained(model, *load)
    return model


def maskrcnn(
    backbone_name: str = "resnet50",
    num_classes: int = 91,
    *,
    mask_head_dim: int = 256,
    **options,
) -> MaskRCNN:
    """The baseline: torchvision's Mask R-CNN (4x conv mask head, 28x28 masks) on any backbone.

    Same options as :func:`pointrend_maskrcnn` apart from the mask options; ``mask_head_dim``
    is the width of the 4 convs and the deconv (torchvision: 256); ``mask_roi_pool`` and
    ``mask_head`` (torchvision modules) may be given. Its transform is torchvision's, or a
    :class:`PointRendTransform` when ``resize_rule`` or ``mask_paste`` is ``"detectron2"``.
    """
    check_options("maskrcnn", options, _maskrcnn_options(), misplaced=_POINTREND_ONLY)
    return _instance_model(
        backbone_name,
        num_classes,
        pointrend=False,
        mask_head_dim=mask_head_dim,
        **options,
    )


def pointrend_maskrcnn(
    backbone_name: str = "resnet50",
    num_classes: int = 91,
    *,
    mask_config: PointRendMaskConfig | None = None,
    subdivision_steps: int | None = None,
    subdivision_num_points: int | None = None,
    train_num_points: int | None = None,
    train_point_sampling: str | None = None,
    oversample_ratio: float | None = None,
    importance_sample_ratio: float | None = None,
    point_head_fc_dim: int | None = None,
    point_head_num_fc: int | None = None,
    point_head_coarse_pred_each_layer: bool | None = None,
    coarse_head_conv_dim: int | None = None,
    coarse_head_fc_dim: int | None = None,
    coarse_head_num_fc: int | None = None,
    mask_output_size: int | None = None,
    mask_resolution: str | None = None,
    max_mask_size: int | None = None,
    mask_points_per_side: float | None = None,
    mask_train_on_pred_boxes: bool | None = None,
    box_smooth_l1_beta: float = TORCHVISION_BETA,
    **options,
) -> MaskRCNN:
    """PointRend Mask R-CNN on a torchvision ResNet / ResNeXt / MobileNetV3 FPN backbone.

    Args:
        backbone_name: one of :data:`pointrend.backbones.RESNETS` or ``MOBILENETS``
            (``"resnet18"`` with a small ``box_head_dim`` makes a CPU-sized model).
        num_classes: K including the background.
        mask_config: :class:`PointRendMaskConfig`, whose fields the other options override
            (so that a YAML config can set them; ``docs/models.md``, "Options", gives each
            one's default and meaning): PointRend's settings, named as in the semantic builders
            (``subdivision_steps``, ``subdivision_num_points``, ``train_num_points``,
            ``train_point_sampling``, ``oversample_ratio``, ``importance_sample_ratio``,
            ``point_head_fc_dim``, ``point_head_num_fc``, ``point_head_coarse_pred_each_layer``),
            the coarse head's (``coarse_head_conv_dim``, ``coarse_head_fc_dim``,
            ``coarse_head_num_fc``) and the mask branch's own: ``mask_output_size``,
            ``mask_resolution`` (``"fixed"``: every mask ``mask_output_size``; ``"box"``: each
            at about its box's size in the output image, up to ``max_mask_size``, with
            ``mask_points_per_side``: :mod:`pointrend.instance.box_resolution`) and
            ``mask_train_on_pred_boxes`` (train on the box head's boxes, the authors' recipe, or
            on the proposals).
        box_smooth_l1_beta: ``beta`` of the box head's smooth-L1 box loss (torchvision: 1/9;
            detectron2's configs: 0, plain L1).
        **options: the options common to both builders (this module's docstring).

    Returns:
        A :class:`MaskRCNN` whose ``roi_heads`` is a :class:`PointRendRoIHeads` and whose
        ``transform`` is a :class:`PointRendTransform`.
    """
    check_options("pointrend_maskrcnn", options, _pointrend_maskrcnn_options(), _BASELINE_ONLY)
    given = {k: v for k, v in locals().items() if k in MASK_OPTIONS and v is not None}
    fields = {MASK_CONFIG_FIELDS.get(k, k): v for k, v in given.items()}
    config = replace_options(mask_config or PointRendMaskConfig(), **fields)
    model = _instance_model(
        backbone_name,
        num_classes,
        pointrend=True,
        mask_config=config,
        **options,
    )
    model.roi_heads.smooth_l1_beta = float(box_smooth_l1_beta)
    return model


def pointrend_maskrcnn_resnet50_fpn(num_classes: int = 91, **options) -> MaskRCNN:
    """The paper's PointRend Mask R-CNN, ResNet-50-FPN (see :func:`pointrend_maskrcnn`)."""
    return pointrend_maskrcnn("resnet50", num_classes, **options)


COMMON_OPTIONS = tuple(
    sorted(set(keyword_options(_instance_model)) - {"pointrend", "mask_head_dim", "mask_config"})
)


# pointrend_maskrcnn's options that set a field of PointRendMaskConfig or of its settings, and the
# three whose field is named without the mask_ prefix
MASK_OPTIONS = frozenset(keyword_options(pointrend_maskrcnn)) - {
    "mask_config",
    "box_smooth_l1_beta",
}
MASK_CONFIG_FIELDS = {
    "mask_output_size": "output_size",
    "mask_points_per_side": "points_per_side",
    "mask_train_on_pred_boxes": "train_on_pred_boxes",
}


def _maskrcnn_options() -> list[str]:
    """The public keyword options of :func:`maskrcnn` (its own and torchvision's)."""
    return sorted({*keyword_options(maskrcnn), *COMMON_OPTIONS, *TORCHVISION_OPTIONS})


def _pointrend_maskrcnn_options() -> list[str]:
    """The public keyword options of :func:`pointrend_maskrcnn` (its own and torchvision's)."""
    own = keyword_options(pointrend_maskrcnn)
    return sorted({*own, *COMMON_OPTIONS, *TORCHVISION_OPTIONS} - set(MASK_BRANCH_MODULES))


_POINTREND_ONLY = {
    name: (
        "a PointRend mask option",
        "maskrcnn is the baseline with torchvision's 28x28 mask head (use pointrend_maskrcnn)",
    )
    for name in keyword_options(pointrend_maskrcnn)
    if name != "box_smooth_l1_beta"
}
_BASELINE_ONLY = {
    "mask_head_dim": (
        "an option of the baseline's 4x conv mask head",
        "PointRend's coarse head takes coarse_head_conv_dim / coarse_head_fc_dim",
    ),
    **{
        name: (
            "a torchvision mask-branch module",
            "PointRend's mask branch replaces it (use maskrcnn for torchvision's)",
        )
        for name in MASK_BRANCH_MODULES
    },
}
