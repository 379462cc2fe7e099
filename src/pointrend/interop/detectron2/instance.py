"""detectron2 Mask R-CNN (``GeneralizedRCNN``) as a pointrend model: with ``PointRendMaskHead``
a :func:`~pointrend.models.pointrend_maskrcnn`, with the standard ``MaskRCNNConvUpsampleHead``
the baseline :func:`~pointrend.models.maskrcnn`.

:func:`instance_options` reads the detectron2 config into builder options that make the model
compute what detectron2 computes (stride in the 1x1 conv, frozen batch norm, the input
convention folded into the first conv and the normaliser, unrounded anchors at nominal strides,
aligned adaptive RoIAlign, detectron2's resize rule and mask paste, score / NMS / count settings);
:func:`map_instance_weights` renames and reshapes detectron2's weights to the model's keys:

* the first conv's input channels are reordered to RGB when the config's ``INPUT.FORMAT`` is BGR,
  and the normaliser gets ``PIXEL_MEAN / 255`` and ``PIXEL_STD / 255`` in RGB order, so that the
  model takes RGB images in ``[0, 1]`` as every pointrend model;
* detectron2 has no background slot in its mask heads and puts the background last in its box
  classifier (``K + 1`` scores, ``4K`` box deltas); pointrend counts the background first. The
  classifier's rows become ``[K, 0, ..., K-1]``, and the box deltas, the coarse head's
  predictor and the point head get a background slot of zeros (rows, and a zero input column for
  the background coarse logit), which never changes a foreground value. detectron2 class ``c``
  is pointrend label ``c + 1``.
"""

from __future__ import annotations

from torch import Tensor, nn

from .common import (
    POINT_HEAD_REQUIRED,
    backbone_options,
    check_backbone,
    check_required,
    input_normalisation,
    load_weights,
    point_head_options,
    rename_weights,
    resnet_name,
)
from .config import D2Config, D2ImportError
from .instance_weights import load_mapped, pointrend_key, rename_instance_weights, with_background

__all__ = [
    "IGNORED_KEYS",
    "instance_model_config_from_detectron2",
    "instance_model_from_detectron2",
    "instance_options",
    "load_mapped",
    "map_instance_weights",
]

# config key -> the value pointrend's model implements (other values are refused, by key)
_REQUIRED = {
    "MODEL.ANCHOR_GENERATOR.NAME": "DefaultAnchorGenerator",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.ANCHOR_GENERATOR.OFFSET": 0.0,
    "MODEL.RPN.HEAD_NAME": "StandardRPNHead",
    "MODEL.RPN.IN_FEATURES": ["p2", "p3", "p4", "p5", "p6"],
    "MODEL.RPN.CONV_DIMS": [-1],
    "MODEL.RPN.BBOX_REG_WEIGHTS": [1.0, 1.0, 1.0, 1.0],
    "MODEL.ROI_HEADS.IN_FEATURES": ["p2", "p3", "p4", "p5"],
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 2,
    "MODEL.ROI_BOX_HEAD.NUM_CONV": 0,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": [10.0, 10.0, 5.0, 5.0],
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": False,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": 14,
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": False,
    # training: the matchers' labels and the losses of torchvision's Mask R-CNN are these
    "MODEL.RPN.IOU_LABELS": [0, -1, 1],
    "MODEL.RPN.BOUNDARY_THRESH": -1,
    "MODEL.RPN.LOSS_WEIGHT": 1.0,
    "MODEL.RPN.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.RPN.BBOX_REG_LOSS_WEIGHT": 1.0,
    "MODEL.ROI_HEADS.PROPOSAL_APPEND_GT": True,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_TYPE": "smooth_l1",
    "MODEL.ROI_BOX_HEAD.BBOX_REG_LOSS_WEIGHT": 1.0,
}
# PointRend's mask head: the coarse head on P2 and a point head with the coarse logits at every
# layer (the background slot of the import adds a zero column to each layer's coarse inputs)
_POINTREND_REQUIRED = {
    **POINT_HEAD_REQUIRED,
    "MODEL.ROI_MASK_HEAD.IN_FEATURES": ["p2"],
    "MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION": 7,
    "MODEL.ROI_MASK_HEAD.POINT_HEAD_ON": True,
    "MODEL.ROI_MASK_HEAD.POOLER_TYPE": "",  # the coarse head samples P2 itself, no RoIAlign
    "MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER": True,
}
_BASELINE_REQUIRED = {"MODEL.ROI_MASK_HEAD.NUM_CONV": 4, "MODEL.ROI_MASK_HEAD.NORM": ""}
# keys detectron2 itself does not read with the given mask head (they change nothing); every
# other key a config sets is mapped to an option or required above
IGNORED_KEYS = {
    "pointrend": (
        "MODEL.ROI_MASK_HEAD.NUM_CONV",
        "MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO",
        "MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME",
    ),
    "maskrcnn": (
        "MODEL.ROI_MASK_HEAD.FC_DIM",
        "MODEL.ROI_MASK_HEAD.IN_FEATURES",
        "MODEL.ROI_MASK_HEAD.NUM_FC",
        "MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION",
        "MODEL.ROI_MASK_HEAD.POINT_HEAD_ON",
    ),
}
# ROI_MASK_HEAD.NAME -> pointrend's model (engine name) and the values it requires
_MASK_HEADS = {
    "PointRendMaskHead": ("pointrend", _POINTREND_REQUIRED),
    "MaskRCNNConvUpsampleHead": ("maskrcnn", _BASELINE_REQUIRED),
}
_POOLERS = {"ROIAlignV2": True, "ROIAlign": False}  # POOLER_TYPE -> aligned


def mask_head_kind(cfg: D2Config) -> str:
    """``"pointrend"`` or ``"maskrcnn"``: the pointrend model of the config's mask head."""
    head = cfg.get("MODEL.ROI_MASK_HEAD.NAME")
    if "Implicit" in str(head):
        raise D2ImportError(
            f"{cfg.source}: Implicit PointRend ({head}) is not supported (no published checkpoint)"
        )
    if head not in _MASK_HEADS:
        raise D2ImportError(
            f"{cfg.source}: MODEL.ROI_MASK_HEAD.NAME {head!r} is not supported "
            f"(one of {sorted(_MASK_HEADS)})"
        )
    return _MASK_HEADS[head][0]


def _check_supported(cfg: D2Config) -> None:
    check_backbone(cfg)
    check_required(cfg, {**_REQUIRED, **_MASK_HEADS[cfg.get("MODEL.ROI_MASK_HEAD.NAME")][1]})
    if mask_head_kind(cfg) == "pointrend":
        if cfg.get("MODEL.ROI_MASK_HEAD.CONV_DIM") != cfg.get("MODEL.FPN.OUT_CHANNELS"):
            raise D2ImportError(
                f"{cfg.source}: ROI_MASK_HEAD.CONV_DIM != FPN.OUT_CHANNELS needs detectron2's "
                "channel-reduction conv, which pointrend's coarse head does not have"
            )
    else:  # the baseline's mask RoIAlign is the box head's
        box = {"POOLER_TYPE": "ROIAlignV2", "POOLER_SAMPLING_RATIO": 0}
        box = {k: cfg.get(f"MODEL.ROI_BOX_HEAD.{k}", v) for k, v in box.items()}
        check_required(
            cfg,
            {f"MODEL.ROI_MASK_HEAD.{k}": v for k, v in box.items()},
            "pointrend's baseline pools masks as its box head does (ROI_BOX_HEAD's value)",
        )


# training samplers: detectron2 key -> torchvision's MaskRCNN keyword (defaults: detectron2's)
_SAMPLERS = {
    "MODEL.RPN.BATCH_SIZE_PER_IMAGE": ("rpn_batch_size_per_image", 256),
    "MODEL.RPN.POSITIVE_FRACTION": ("rpn_positive_fraction", 0.5),
    "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": ("box_batch_size_per_image", 512),
    "MODEL.ROI_HEADS.POSITIVE_FRACTION": ("box_positive_fraction", 0.25),
}


def _training_options(cfg: D2Config) -> dict:
    """The RPN's and the box head's samplers and IoU matchers (training only): detectron2's
    ``IOU_THRESHOLDS`` ``[bg, fg]`` (RPN, labels 0 / ignored / 1) and ``[t]`` (box head, labels
    0 / 1) or ``[bg, fg]`` (labels 0 / ignored / 1, as torchvision's between-thresholds)."""
    options = {name: type(d)(cfg.get(key, d)) for key, (name, d) in _SAMPLERS.items()}
    rpn = [float(t) for t in cfg.get("MODEL.RPN.IOU_THRESHOLDS", [0.3, 0.7])]
    box = [float(t) for t in cfg.get("MODEL.ROI_HEADS.IOU_THRESHOLDS", [0.5])]
    labels = {1: [0, 1], 2: [0, -1, 1]}.get(len(box))
    if len(rpn) != 2 or labels is None:
        raise D2ImportError(
            f"{cfg.source}: MODEL.RPN.IOU_THRESHOLDS = {rpn} / MODEL.ROI_HEADS.IOU_THRESHOLDS = "
            f"{box} is not supported (pointrend imports [bg, fg] and [t] or [bg, fg])"
        )
    check_required(cfg, {"MODEL.ROI_HEADS.IOU_LABELS": labels})
    options.update(rpn_bg_iou_thresh=rpn[0], rpn_fg_iou_thresh=rpn[1])
    options.update(box_bg_iou_thresh=box[0], box_fg_iou_thresh=box[-1])
    return options


def _num_classes(cfg: D2Config) -> int:
    """K of the config (detectron2 counts no background)."""
    k = int(cfg.get("MODEL.ROI_HEADS.NUM_CLASSES"))
    if mask_head_kind(cfg) == "pointrend" and int(cfg.get("MODEL.POINT_HEAD.NUM_CLASSES")) != k:
        raise D2ImportError(f"{cfg.source}: POINT_HEAD.NUM_CLASSES differs from ROI_HEADS'")
    return k


def _output_size(cfg: D2Config) -> int:
    """detectron2 starts at the 7x7 coarse mask and doubles it ``SUBDIVISION_STEPS`` times."""
    side = int(cfg.get("MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION"))
    return side * 2 ** int(cfg.get("MODEL.POINT_HEAD.SUBDIVISION_STEPS"))


def instance_options(cfg: D2Config) -> tuple[str, int, dict]:
    """``(backbone_name, num_classes, options)`` of :func:`pointrend_maskrcnn` (or
    :func:`maskrcnn` for :func:`mask_head_kind` ``"maskrcnn"``; plain values, as a config file's
    ``model.options``) for the detectron2 config; ``num_classes`` counts the background."""
    kind = mask_head_kind(cfg)
    _check_supported(cfg)
    name = resnet_name(cfg)
    pooler = cfg.get("MODEL.ROI_BOX_HEAD.POOLER_TYPE")
    if pooler not in _POOLERS:
        raise D2ImportError(f"{cfg.source}: ROI_BOX_HEAD.POOLER_TYPE {pooler!r} is not supported")
    sizes = [list(s) for s in cfg.get("MODEL.ANCHOR_GENERATOR.SIZES")]
    if any(len(s) != 1 for s in sizes) or len(sizes) != 5:
        raise D2ImportError(
            f"{cfg.source}: ANCHOR_GENERATOR.SIZES needs one size for each of 5 levels"
        )
    min_size = int(cfg.get("INPUT.MIN_SIZE_TEST"))
    max_size = int(cfg.get("INPUT.MAX_SIZE_TEST", 1333))  # detectron2's default
    options = {
        "norm": "frozen",
        **backbone_options(cfg),
        "min_size": min_size,
        # MIN_SIZE_TEST 0: no resize, MAX_SIZE_TEST does nothing (the option keeps its default)
        "max_size": max_size if min_size else 1333,
        "resize_rule": "detectron2",
        "rpn_anchor_sizes": [int(s[0]) for s in sizes],
        "rpn_anchor_rule": "detectron2",
        "rpn_pre_nms_top_n_test": int(cfg.get("MODEL.RPN.PRE_NMS_TOPK_TEST")),
        "rpn_post_nms_top_n_test": int(cfg.get("MODEL.RPN.POST_NMS_TOPK_TEST")),
        "rpn_nms_thresh": float(cfg.get("MODEL.RPN.NMS_THRESH")),
        # training (fine-tuning): detectron2's proposal counts (torchvision keeps 2000 after NMS)
        "rpn_pre_nms_top_n_train": int(cfg.get("MODEL.RPN.PRE_NMS_TOPK_TRAIN", 2000)),
        "rpn_post_nms_top_n_train": int(cfg.get("MODEL.RPN.POST_NMS_TOPK_TRAIN", 1000)),
        "rpn_smooth_l1_beta": float(cfg.get("MODEL.RPN.SMOOTH_L1_BETA", 0.0)),
        **_training_options(cfg),
        # layers a fine-tuning run re-creates (another class count) start as detectron2's
        "box_head_init": "detectron2",
        "roi_align_aligned": _POOLERS[pooler],
        "roi_align_sampling_ratio": int(cfg.get("MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO")),
        "box_head_dim": int(cfg.get("MODEL.ROI_BOX_HEAD.FC_DIM")),
        "box_score_thresh": float(cfg.get("MODEL.ROI_HEADS.SCORE_THRESH_TEST")),
        "box_nms_thresh": float(cfg.get("MODEL.ROI_HEADS.NMS_THRESH_TEST")),
        "box_detections_per_img": int(cfg.get("TEST.DETECTIONS_PER_IMAGE")),
        "mask_paste": "detectron2",
    }
    if kind == "pointrend":
        options.update(
            coarse_head_fc_dim=int(cfg.get("MODEL.ROI_MASK_HEAD.FC_DIM")),
            coarse_head_conv_dim=int(cfg.get("MODEL.ROI_MASK_HEAD.CONV_DIM")),
            mask_train_on_pred_boxes=bool(cfg.get("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", True)),
            box_smooth_l1_beta=float(cfg.get("MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", 0.0)),
            coarse_head_num_fc=int(cfg.get("MODEL.ROI_MASK_HEAD.NUM_FC")),
            **point_head_options(cfg),
            mask_output_size=_output_size(cfg),
        )
    else:
        options["mask_head_dim"] = int(cfg.get("MODEL.ROI_MASK_HEAD.CONV_DIM"))
    return name, _num_classes(cfg) + 1, options


def map_instance_weights(weights: dict[str, Tensor], cfg: D2Config) -> dict[str, Tensor]:
    """detectron2 weights (current key names) -> a state dict of the model of
    :func:`instance_options`. Keys it has no place for raise :class:`D2ImportError`, naming them."""
    _, _, flip = input_normalisation(cfg)
    return rename_instance_weights(weights, _num_classes(cfg), flip, cfg.source)


def instance_model_config_from_detectron2(cfg: D2Config) -> dict:
    """The model config fields (``task``, ``name``, ``arch``, ``backbone``, ``num_classes``,
    ``options``) that rebuild the imported model through the engine's ``build_model``."""
    name, num_classes, options = instance_options(cfg)
    return {
        "task": "instance",
        "name": mask_head_kind(cfg),
        "arch": "fpn",
        "backbone": name,
        "num_classes": num_classes,
        "options": options,
    }


def instance_model_from_detectron2(weights: dict[str, Tensor], cfg: D2Config) -> nn.Module:
    """The pointrend Mask R-CNN computing what the detectron2 model computes (eval mode), with
    ``weights`` (current detectron2 key names) loaded."""
    from ...instance import maskrcnn, pointrend_maskrcnn

    name, num_classes, options = instance_options(cfg)
    build = pointrend_maskrcnn if mask_head_kind(cfg) == "pointrend" else maskrcnn
    model = build(name, num_classes, **options)
    k, flip = _num_classes(cfg), input_normalisation(cfg)[2]
    state, origin, unused = rename_weights(
        weights, pointrend_key, flip, lambda key, value: with_background(key, value, k)
    )
    load_weights(model, state, cfg.source, origin, unused)
    return model.eval()
