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

from .config import D2Config, D2ImportError
from .instance_weights import load_mapped, rename_instance_weights

__all__ = [
    "instance_model_config_from_detectron2",
    "instance_model_from_detectron2",
    "instance_options",
    "map_instance_weights",
]

# config key -> the value pointrend's model implements (other values are refused, by key)
_REQUIRED = {
    "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
    "MODEL.RESNETS.RES5_DILATION": 1,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": 256,
    "MODEL.RESNETS.OUT_FEATURES": ["res2", "res3", "res4", "res5"],
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, False, False, False],
    "MODEL.FPN.NORM": "",
    "MODEL.FPN.FUSE_TYPE": "sum",
    "MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS": [[0.5, 1.0, 2.0]],
    "MODEL.ANCHOR_GENERATOR.OFFSET": 0.0,
    "MODEL.RPN.BBOX_REG_WEIGHTS": [1.0, 1.0, 1.0, 1.0],
    "MODEL.ROI_BOX_HEAD.NAME": "FastRCNNConvFCHead",
    "MODEL.ROI_BOX_HEAD.NUM_FC": 2,
    "MODEL.ROI_BOX_HEAD.NUM_CONV": 0,
    "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION": 7,
    "MODEL.ROI_BOX_HEAD.BBOX_REG_WEIGHTS": [10.0, 10.0, 5.0, 5.0],
    "MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG": False,
    "MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION": 14,
    "MODEL.ROI_MASK_HEAD.CLS_AGNOSTIC_MASK": False,
}
_POINTREND_REQUIRED = {
    "MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION": 7,
    "MODEL.POINT_HEAD.NAME": "StandardPointHead",
    "MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK": False,
}
_BASELINE_REQUIRED = {"MODEL.ROI_MASK_HEAD.NUM_CONV": 4}
# ROI_MASK_HEAD.NAME -> pointrend's model (engine name) and the values it requires
_MASK_HEADS = {
    "PointRendMaskHead": ("pointrend", _POINTREND_REQUIRED),
    "MaskRCNNConvUpsampleHead": ("maskrcnn", _BASELINE_REQUIRED),
}
_POOLERS = {"ROIAlignV2": True, "ROIAlign": False}  # POOLER_TYPE -> aligned
_NORMS = ("FrozenBN", "BN", "SyncBN")  # all read as fixed statistics at inference


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
    required = {**_REQUIRED, **_MASK_HEADS[cfg.get("MODEL.ROI_MASK_HEAD.NAME")][1]}
    for key, value in required.items():
        if key in cfg and _same(cfg.get(key), value) is False:
            raise D2ImportError(
                f"{cfg.source}: {key} = {cfg.get(key)!r} is not supported (pointrend's model "
                f"implements {value!r})"
            )
    if cfg.get("MODEL.RESNETS.NORM") not in _NORMS:
        raise D2ImportError(
            f"{cfg.source}: MODEL.RESNETS.NORM = {cfg.get('MODEL.RESNETS.NORM')!r} is not "
            f"supported (one of {list(_NORMS)})"
        )
    pointrend = mask_head_kind(cfg) == "pointrend"
    if pointrend and cfg.get("MODEL.ROI_MASK_HEAD.CONV_DIM") != cfg.get("MODEL.FPN.OUT_CHANNELS"):
        raise D2ImportError(
            f"{cfg.source}: ROI_MASK_HEAD.CONV_DIM != FPN.OUT_CHANNELS needs detectron2's "
            "channel-reduction conv, which pointrend's coarse head does not have"
        )


def _same(a, b) -> bool:
    if isinstance(b, list):
        return [x if not isinstance(x, list) else list(x) for x in a] == b
    return a == b


def backbone_name(cfg: D2Config) -> str:
    """The torchvision name of the config's ResNet / ResNeXt (``resnet50``, ``resnext101_32x8d``)."""
    depth = int(cfg.get("MODEL.RESNETS.DEPTH"))
    groups = int(cfg.get("MODEL.RESNETS.NUM_GROUPS", 1))
    width = int(cfg.get("MODEL.RESNETS.WIDTH_PER_GROUP", 64))
    name = f"resnet{depth}" if (groups, width) == (1, 64) else f"resnext{depth}_{groups}x{width}d"
    from ...backbones import RESNETS

    if name not in RESNETS or depth < 50:
        raise D2ImportError(
            f"{cfg.source}: MODEL.RESNETS.DEPTH {depth}, NUM_GROUPS {groups}, WIDTH_PER_GROUP "
            f"{width} ({name}) is not a supported bottleneck ResNet / ResNeXt"
        )
    return name


def input_normalisation(cfg: D2Config) -> tuple[list[float], list[float], bool]:
    """``(image_mean, image_std, flip)``: RGB ``[0, 1]`` normaliser equal to detectron2's, and
    whether the first conv's input channels are to be reversed (a BGR model)."""
    fmt = cfg.get("INPUT.FORMAT")
    if fmt not in ("BGR", "RGB"):
        raise D2ImportError(f"{cfg.source}: INPUT.FORMAT {fmt!r} is not supported (BGR or RGB)")
    mean = [float(v) / 255 for v in cfg.get("MODEL.PIXEL_MEAN")]
    std = [float(v) / 255 for v in cfg.get("MODEL.PIXEL_STD")]
    if len(mean) != 3 or len(std) != 3:
        raise D2ImportError(f"{cfg.source}: MODEL.PIXEL_MEAN / PIXEL_STD need 3 values")
    flip = fmt == "BGR"
    return (mean[::-1], std[::-1], flip) if flip else (mean, std, flip)


def _num_classes(cfg: D2Config) -> int:
    """K of the config (detectron2 counts no background)."""
    k = int(cfg.get("MODEL.ROI_HEADS.NUM_CLASSES"))
    if mask_head_kind(cfg) == "pointrend" and int(cfg.get("MODEL.POINT_HEAD.NUM_CLASSES")) != k:
        raise D2ImportError(f"{cfg.source}: POINT_HEAD.NUM_CLASSES differs from ROI_HEADS'")
    return k


def _subdivision(cfg: D2Config) -> dict:
    """Output size and steps: detectron2 starts at the 7x7 coarse mask and doubles
    ``SUBDIVISION_STEPS`` times."""
    side = int(cfg.get("MODEL.ROI_MASK_HEAD.OUTPUT_SIDE_RESOLUTION"))
    steps = int(cfg.get("MODEL.POINT_HEAD.SUBDIVISION_STEPS"))
    return {
        "mask_output_size": side * 2**steps,
        "mask_subdivision_points": int(cfg.get("MODEL.POINT_HEAD.SUBDIVISION_NUM_POINTS")),
    }


def instance_options(cfg: D2Config) -> tuple[str, int, dict]:
    """``(backbone_name, num_classes, options)`` of :func:`pointrend_maskrcnn` (or
    :func:`maskrcnn` for :func:`mask_head_kind` ``"maskrcnn"``; plain values, as a config file's
    ``model.options``) for the detectron2 config; ``num_classes`` counts the background."""
    kind = mask_head_kind(cfg)
    _check_supported(cfg)
    name = backbone_name(cfg)
    mean, std, _ = input_normalisation(cfg)
    pooler = cfg.get("MODEL.ROI_BOX_HEAD.POOLER_TYPE")
    if pooler not in _POOLERS:
        raise D2ImportError(f"{cfg.source}: ROI_BOX_HEAD.POOLER_TYPE {pooler!r} is not supported")
    sizes = [list(s) for s in cfg.get("MODEL.ANCHOR_GENERATOR.SIZES")]
    if any(len(s) != 1 for s in sizes) or len(sizes) != 5:
        raise D2ImportError(
            f"{cfg.source}: ANCHOR_GENERATOR.SIZES needs one size for each of 5 levels"
        )
    min_size = int(cfg.get("INPUT.MIN_SIZE_TEST"))
    options = {
        "norm": "frozen",
        "trainable_backbone_layers": 5 - int(cfg.get("MODEL.BACKBONE.FREEZE_AT")),
        "stride_in_1x1": bool(cfg.get("MODEL.RESNETS.STRIDE_IN_1X1")),
        "fpn_channels": int(cfg.get("MODEL.FPN.OUT_CHANNELS")),
        "image_mean": mean,
        "image_std": std,
        "min_size": min_size,
        "max_size": int(cfg.get("INPUT.MAX_SIZE_TEST")) if min_size else 1333,
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
            mask_fc_dim=int(cfg.get("MODEL.ROI_MASK_HEAD.FC_DIM")),
            mask_conv_dim=int(cfg.get("MODEL.ROI_MASK_HEAD.CONV_DIM")),
            mask_train_on_pred_boxes=bool(cfg.get("MODEL.ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES", True)),
            box_smooth_l1_beta=float(cfg.get("MODEL.ROI_BOX_HEAD.SMOOTH_L1_BETA", 0.0)),
            mask_train_num_points=int(cfg.get("MODEL.POINT_HEAD.TRAIN_NUM_POINTS", 196)),
            mask_oversample_ratio=float(cfg.get("MODEL.POINT_HEAD.OVERSAMPLE_RATIO", 3)),
            mask_importance_sample_ratio=float(
                cfg.get("MODEL.POINT_HEAD.IMPORTANCE_SAMPLE_RATIO", 0.75)
            ),
            **_subdivision(cfg),
        )
    else:
        options["mask_head_dim"] = int(cfg.get("MODEL.ROI_MASK_HEAD.CONV_DIM"))
    return name, _num_classes(cfg) + 1, options


def map_instance_weights(weights: dict[str, Tensor], cfg: D2Config) -> dict[str, Tensor]:
    """detectron2 weights (current key names) -> a state dict of the model of
    :func:`instance_options`. Keys it has no place for raise :class:`D2ImportError`, naming them."""
    _, _, flip = input_normalisation(cfg)
    return rename_instance_weights(weights, _num_classes(cfg), flip)


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
    load_mapped(model, map_instance_weights(weights, cfg), cfg.source)
    return model.eval()
