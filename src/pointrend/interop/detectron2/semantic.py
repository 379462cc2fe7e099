"""detectron2's PointRend Semantic FPN (``SemanticSegmentor`` with ``PointRendSemSegHead``, or
the plain ``SemSegFPNHead``) as a pointrend :class:`~pointrend.semantic.SemanticSegmenter`.

What makes the pointrend model compute what detectron2 computes, all ordinary builder options of
:func:`~pointrend.models.pointrend_semantic_fpn` (``model.options`` in a YAML config):

* ``stride_in_1x1`` from ``MODEL.RESNETS.STRIDE_IN_1X1`` (the MSRA ResNets stride their first
  1x1 conv); ``norm="frozen"`` for ``FrozenBN`` (eval maths are the same as batch norm's, and
  fine-tuning keeps the statistics fixed as detectron2 does); ``trainable_backbone_layers`` from
  ``MODEL.BACKBONE.FREEZE_AT``.
* The input convention: detectron2 takes ``INPUT.FORMAT`` (BGR) images in 0..255 and
  normalises with ``MODEL.PIXEL_MEAN`` / ``MODEL.PIXEL_STD``; pointrend takes RGB in
  ``[0, 1]``. The statistics become ``image_mean`` / ``image_std`` (RGB order, divided by 255)
  and the first conv's input channels are reordered to RGB.
* ``size_divisibility``: detectron2 zero-pads the normalised input at the bottom / right to a
  multiple of the FPN's largest stride (32) and crops the output; without it, the features
  differ far from the border.
* The head: ``conv_dims`` = ``SEM_SEG_HEAD.CONVS_DIM`` (GroupNorm with 32 groups, detectron2's
  ``"GN"``), ``levels`` from ``SEM_SEG_HEAD.IN_FEATURES`` / ``COMMON_STRIDE``; the point head
  and the subdivision settings from ``MODEL.POINT_HEAD``.

Classes need no reordering: a semantic model has no background slot (label ``k`` is class
``k``, ``SEM_SEG_HEAD.IGNORE_VALUE`` 255 is left out of the losses).

detectron2's test-time resize (``INPUT.MIN_SIZE_TEST`` / ``MAX_SIZE_TEST``: 1024 / 2048 for
Cityscapes, an identity on 1024 x 2048 frames) becomes ``test_min_size`` / ``test_max_size``:
the model resizes the image and the logits back to the input size, as detectron2's
``sem_seg_postprocess`` does. detectron2 resizes the uint8 image with PIL's bilinear filter,
pointrend the float image with antialiased bilinear interpolation: within one grey level of
PIL's, and the labels agree on >= 99.5% of the pixels (not bit-exact).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from ...data.semantic import CITYSCAPES_CLASSES
from ...semantic import SemanticSegmenter, pointrend_semantic_fpn, semantic_fpn
from .common import (
    POINT_HEAD_REQUIRED,
    backbone_options,
    check_backbone,
    check_required,
    check_weights,
    input_normalisation,
    load_weights,
    point_head_options,
    rename_weights,
    resnet_name,
)
from .config import D2Config, D2ImportError
from .instance_weights import pointrend_key

__all__ = [
    "IGNORED_KEYS",
    "semantic_class_names",
    "semantic_model_config_from_detectron2",
    "semantic_model_from_detectron2",
    "semantic_state_dict_from_detectron2",
]

_LEVELS = {("p2", "p3", "p4", "p5"): ("P2-P5", 4), ("p3", "p4", "p5"): ("P3-P5", 8)}
# detectron2 settings of which pointrend imports one value only: key -> that value
_REQUIRED = {
    "MODEL.SEM_SEG_HEAD.NORM": "GN",
    "MODEL.SEM_SEG_HEAD.IGNORE_VALUE": 255,
    "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT": 1.0,  # pointrend's losses are not weighted
}
# keys a SemanticSegmentor does not read (they change nothing); every other key a config sets is
# mapped to an option or required
IGNORED_KEYS = ("MODEL.MASK_ON",)
_POINTREND_REQUIRED = {
    **POINT_HEAD_REQUIRED,
    "MODEL.POINT_HEAD.COARSE_SEM_SEG_HEAD_NAME": "SemSegFPNHead",
}


def _check_supported(cfg: D2Config, pointrend: bool) -> None:
    check_backbone(cfg)
    check_required(cfg, {**_REQUIRED, **(_POINTREND_REQUIRED if pointrend else {})})


def semantic_model_config_from_detectron2(cfg: D2Config) -> dict[str, Any]:
    """The pointrend model a detectron2 semantic config describes, as the fields of a model
    config (``task``, ``name``, ``arch``, ``backbone``, ``num_classes``, ``options``): what an
    imported checkpoint stores so that :func:`pointrend.engine.build.build_model` rebuilds it.
    """
    head_name = cfg.get("MODEL.SEM_SEG_HEAD.NAME")
    if head_name not in ("PointRendSemSegHead", "SemSegFPNHead"):
        raise D2ImportError(
            f"{cfg.source}: MODEL.SEM_SEG_HEAD.NAME = {head_name!r} is not supported "
            "(PointRendSemSegHead or SemSegFPNHead)"
        )
    pointrend = head_name == "PointRendSemSegHead"
    _check_supported(cfg, pointrend)
    in_features = tuple(cfg.get("MODEL.SEM_SEG_HEAD.IN_FEATURES"))
    common_stride = int(cfg.get("MODEL.SEM_SEG_HEAD.COMMON_STRIDE"))
    if _LEVELS.get(in_features, (None, None))[1] != common_stride:
        raise D2ImportError(
            f"{cfg.source}: MODEL.SEM_SEG_HEAD.IN_FEATURES {list(in_features)} with COMMON_STRIDE "
            f"{common_stride} is not supported (p2..p5 with 4, or p3..p5 with 8)"
        )
    num_classes = int(cfg.get("MODEL.SEM_SEG_HEAD.NUM_CLASSES"))
    options: dict[str, Any] = {
        "levels": _LEVELS[in_features][0],
        "norm": "frozen" if cfg.get("MODEL.RESNETS.NORM") == "FrozenBN" else "batch",
        **backbone_options(cfg),
        "conv_dims": int(cfg.get("MODEL.SEM_SEG_HEAD.CONVS_DIM")),
        "size_divisibility": 32,  # the stride of res5, the FPN's last input
        "test_min_size": int(cfg.get("INPUT.MIN_SIZE_TEST")),
        "test_max_size": int(cfg.get("INPUT.MAX_SIZE_TEST")),
    }
    if pointrend:
        options.update(_point_head_options(cfg, num_classes, common_stride))
    return {
        "task": "semantic",
        "name": "pointrend" if pointrend else "coarse",
        "arch": "fpn",
        "backbone": resnet_name(cfg),
        "num_classes": num_classes,
        "options": options,
    }


def semantic_class_names(cfg: D2Config) -> list[str]:
    """Names of the ``SEM_SEG_HEAD.NUM_CLASSES`` labels: Cityscapes' 19 train ids in order
    (road, sidewalk, ...) when the config's datasets (``DATASETS.TRAIN`` / ``DATASETS.TEST``)
    are Cityscapes ones, else ``class_0``, ``class_1``, ..."""
    num_classes = int(cfg.get("MODEL.SEM_SEG_HEAD.NUM_CLASSES"))
    datasets = [*cfg.get("DATASETS.TRAIN", ()), *cfg.get("DATASETS.TEST", ())]
    cityscapes = bool(datasets) and all(str(d).startswith("cityscapes") for d in datasets)
    if cityscapes and num_classes == len(CITYSCAPES_CLASSES):
        return list(CITYSCAPES_CLASSES)
    return [f"class_{k}" for k in range(num_classes)]


def _point_head_options(cfg: D2Config, num_classes: int, common_stride: int) -> dict[str, Any]:
    point_classes = int(cfg.get("MODEL.POINT_HEAD.NUM_CLASSES"))
    if point_classes != num_classes:
        raise D2ImportError(
            f"{cfg.source}: MODEL.POINT_HEAD.NUM_CLASSES = {point_classes} differs from "
            f"MODEL.SEM_SEG_HEAD.NUM_CLASSES = {num_classes}"
        )
    steps = int(cfg.get("MODEL.POINT_HEAD.SUBDIVISION_STEPS"))
    if steps != int(math.log2(common_stride)):
        raise D2ImportError(
            f"{cfg.source}: MODEL.POINT_HEAD.SUBDIVISION_STEPS = {steps}: pointrend refines the "
            f"stride-{common_stride} logits to the full resolution in "
            f"{int(math.log2(common_stride))} steps"
        )
    each_layer = bool(cfg.get("MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER", True))
    return {**point_head_options(cfg), "point_head_coarse_pred_each_layer": each_layer}


def _head_key(key: str, model: SemanticSegmenter, first_level: int) -> str | None:
    """A detectron2 ``sem_seg_head.*`` key under pointrend's names (``None``: none).

    detectron2's tower of level ``p{L}`` is a Sequential of ``[conv (GroupNorm inside),
    upsample]`` per stage (no upsample at the finest level); pointrend's is ``[Conv2d,
    GroupNorm, ReLU, upsample]``: stage ``j`` is the ``j``-th conv of either.
    """
    match = re.fullmatch(r"sem_seg_head\.coarse_sem_seg_head\.p(\d)\.(\d+)\.(norm\.)?(\w+)", key)
    if match:
        tower_index = int(match[1]) - first_level
        if not 0 <= tower_index < len(model.coarse_head.towers):
            return None
        tower = model.coarse_head.towers[tower_index]
        per_stage = 2 if tower_index > 0 else 1
        convs = [i for i, m in enumerate(tower) if isinstance(m, nn.Conv2d)]
        stage, rest = divmod(int(match[2]), per_stage)
        if rest or stage >= len(convs):
            return None
        index = convs[stage] + (1 if match[3] else 0)
        return f"coarse_head.towers.{tower_index}.{index}.{match[4]}"
    rules = (
        (r"sem_seg_head\.coarse_sem_seg_head\.predictor\.(\w+)", r"coarse_head.predictor.\1"),
        (r"sem_seg_head\.point_head\.predictor\.(\w+)", r"point_head.predictor.\1"),
        (
            r"sem_seg_head\.point_head\.fc(\d+)\.(\w+)",
            lambda m: f"point_head.fc_layers.{int(m[1]) - 1}.{m[2]}",
        ),
    )
    for pattern, target in rules:
        match = re.fullmatch(pattern, key)
        if match:
            return target(match) if callable(target) else match.expand(target)
    return None


def _renamer(model: SemanticSegmenter, first_level: int):
    """detectron2 key -> pointrend key of ``model`` (``None``: none)."""

    def rename(key: str) -> str | None:
        if key.startswith("backbone."):
            return pointrend_key(key)  # the backbone's keys are the instance model's
        return _head_key(key, model, first_level)

    return rename


def semantic_state_dict_from_detectron2(
    weights: Mapping[str, Tensor], model: SemanticSegmenter, cfg: D2Config
) -> dict[str, Tensor]:
    """detectron2's state dict under ``model``'s key names, converted (the first conv's input
    channels in RGB order); every key of ``model`` set, every detectron2 key used, shapes
    equal, else a :class:`D2ImportError` naming the keys. ``num_batches_tracked`` counters
    (detectron2 does not keep them) are left out."""
    first_level = int(cfg.get("MODEL.SEM_SEG_HEAD.IN_FEATURES")[0][1:])
    flip = input_normalisation(cfg)[2]
    state, origin, unused = rename_weights(weights, _renamer(model, first_level), flip)
    check_weights(model, state, cfg.source, origin, unused)
    return state


def semantic_model_from_detectron2(weights: Mapping[str, Tensor], cfg: D2Config) -> nn.Module:
    """The pointrend model computing what detectron2's semantic model of ``cfg`` computes, with
    ``weights`` (detectron2's current key names) loaded.

    Shapes: ``model(images N x 3 x H x W RGB in [0, 1])["out"] -> N x K x H x W`` logits, class
    ``k`` being detectron2's class ``k``; the model is in eval mode.
    """
    spec = semantic_model_config_from_detectron2(cfg)
    builder = semantic_fpn if spec["name"] == "coarse" else pointrend_semantic_fpn
    model = builder(spec["backbone"], spec["num_classes"], **spec["options"])
    load_weights(model, semantic_state_dict_from_detectron2(weights, model, cfg), cfg.source)
    return model.eval()
