"""Builders: Semantic FPN and DeepLabV3, plain (the baselines) or with PointRend.

* :func:`semantic_fpn` / :func:`pointrend_semantic_fpn`: the Semantic FPN head on a ResNet-FPN
  (P2-P5: stride-4 logits, or P3-P5: stride 8); PointRend's fine-grained features are P2.
* :func:`deeplabv3` / :func:`pointrend_deeplabv3`: torchvision's DeepLabV3 head on a ResNet
  dilated to output stride 16 or 8; PointRend's fine-grained features are res2 (stride 4).
* :func:`pointrend_semantic_fpn_resnet50`, :func:`pointrend_deeplabv3_resnet50`: the paper's.

The backbone comes from :mod:`pointrend.backbones` with batch norm and every stage trainable by
default (as torchvision's segmentation models); ``norm="frozen"`` and
``trainable_backbone_layers`` change that. PointRend's options are the fields of
:class:`SemanticPointRendConfig` (its ``pointrend`` settings), given whole (``config``) or field
by field (``train_num_points=1024``);
the baselines accept them too (unused), so a pair of configs can differ only in the builder.
Options a builder does not take raise :class:`~pointrend.options.OptionError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from ..backbones import move_stride_to_1x1_, resnet_backbone, resnet_fpn_backbone
from ..head import PointHead
from ..options import check_options, keyword_options
from ..pretrained import load_pretrained, torchvision_weights
from ..settings import PointRendSettings, replace_options
from .fpn_head import SemanticFPNHead
from .pointrend import IMAGENET_MEAN, IMAGENET_STD, SemanticPointRendConfig, SemanticSegmenter

__all__ = [
    "deeplabv3",
    "pointrend_deeplabv3",
    "pointrend_deeplabv3_resnet50",
    "pointrend_semantic_fpn",
    "pointrend_semantic_fpn_resnet50",
    "semantic_fpn",
]

# The flat option names: the fields of the embedded PointRend settings.
POINTREND_OPTIONS = tuple(f.name for f in dataclasses.fields(PointRendSettings))
DEEPLABV3_WEIGHTS = ("resnet50", "resnet101")  # torchvision's COCO DeepLabV3 backbones


def _point_head(fine_channels: int, num_classes: int, config: SemanticPointRendConfig) -> PointHead:
    settings = config.pointrend
    return PointHead(
        fine_channels,
        num_classes,
        fc_dim=settings.point_head_fc_dim,
        num_fc=settings.point_head_num_fc,
        coarse_pred_each_layer=settings.point_head_coarse_pred_each_layer,
    )


def _semantic_config(
    builder: str, model_function, config, config_overrides: dict
) -> SemanticPointRendConfig:
    """Check a builder's options (``model_function``'s keywords and PointRend's settings), then
    apply them to ``config``."""
    known = {*keyword_options(model_function), *POINTREND_OPTIONS} - {"pointrend", "builder"}
    check_options(builder, config_overrides, known)
    return replace_options(config or SemanticPointRendConfig(), **config_overrides)


def _semantic_fpn_model(
    backbone: str,
    num_classes: int,
    *,
    pointrend: bool,
    builder: str,
    levels: str = "P2-P5",
    weights=None,
    weights_backbone=None,
    norm: str | None = "batch",
    trainable_backbone_layers: int | None = 5,
    conv_dims: int = 128,
    fpn_channels: int = 256,
    backbone_returned_layers: list[int] | None = None,
    stride_in_1x1: bool = False,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    size_divisibility: int = 1,
    test_min_size: int = 0,
    test_max_size: int = 0,
    load_weights: bool = True,
    config: SemanticPointRendConfig | None = None,
    **config_overrides,
) -> SemanticSegmenter:
    """Semantic FPN, with PointRend's point head when ``pointrend`` (options: :func:`semantic_fpn`)."""
    config = _semantic_config(builder, _semantic_fpn_model, config, config_overrides)
    if weights is not None:
        raise ValueError(
            f"weights={weights!r}: Semantic FPN has no torchvision weights (use weights_backbone)"
        )
    returned = list(backbone_returned_layers or [1, 2, 3, 4])
    if returned not in ([1, 2, 3], [1, 2, 3, 4]):
        raise ValueError(
            f"backbone_returned_layers must be [1, 2, 3] or [1, 2, 3, 4], got {returned}"
        )
    if levels not in ("P2-P5", "P3-P5"):
        raise ValueError(f"levels must be 'P2-P5' or 'P3-P5', got {levels!r}")
    enum = torchvision_weights(backbone, weights_backbone)
    fpn = resnet_fpn_backbone(
        backbone,
        returned_layers=returned,
        fpn_channels=fpn_channels,
        max_pool_level=False,
        norm=norm,
        pretrained=enum is not None,
        trainable_layers=trainable_backbone_layers,
    )
    if stride_in_1x1:
        move_stride_to_1x1_(fpn.body)
    first = 0 if levels == "P2-P5" else 1
    in_strides = fpn.strides[first:]
    head = SemanticFPNHead(fpn_channels, num_classes, in_strides, conv_dims=conv_dims)
    model = SemanticSegmenter(
        fpn,
        head,
        num_classes=num_classes,
        coarse_stride=in_strides[0],
        fine_index=0,
        fine_stride=fpn.strides[0],
        point_head=_point_head(fpn_channels, num_classes, config) if pointrend else None,
        config=config,
        coarse_inputs=tuple(range(first, len(returned))),
        image_mean=image_mean,
        image_std=image_std,
        size_divisibility=size_divisibility,
        test_min_size=test_min_size,
        test_max_size=test_max_size,
    )
    if enum is not None and load_weights:
        load_pretrained(model, enum, "classification")
    return model


def semantic_fpn(backbone: str = "resnet50", num_classes: int = 19, **options) -> SemanticSegmenter:
    """The baseline Semantic FPN: its coarse logits bilinearly upsampled.

    Args:
        backbone: a ResNet / ResNeXt name (:data:`pointrend.backbones.RESNETS`).
        num_classes: K.
        levels: ``"P2-P5"`` (stride-4 logits) or ``"P3-P5"`` (stride 8).
        weights: none exist for Semantic FPN (an error when given); weights_backbone: ImageNet
            weights of the backbone (enum or name). load_weights: ``False`` builds the model
            those weights make (the norm and trainable stages) without downloading or loading
            them, for a checkpoint loaded next.
        norm, trainable_backbone_layers: see :mod:`pointrend.backbones`.
        conv_dims: width of the head's towers (128); fpn_channels: of every FPN level (256).
        backbone_returned_layers: ``[1, 2, 3]`` drops ``layer4`` (P2-P4 instead of P2-P5; 3/4 of
            a ResNet-18's weights): a small CPU model.
        stride_in_1x1: stride the first 1x1 conv of ``layer2..layer4`` instead of the 3x3, as
            the MSRA ResNets of detectron2 do (:func:`pointrend.backbones.move_stride_to_1x1_`).
        image_mean, image_std, size_divisibility: the input normalisation (RGB, ``[0, 1]``
            units; ImageNet's by default) and the padding of the normalised input to a multiple
            of ``size_divisibility`` (1: none; detectron2 pads to 32); see
            :class:`~pointrend.semantic.SemanticSegmenter`.
        test_min_size, test_max_size: eval-time resize of the shorter side to
            ``test_min_size`` (0: none, the default), the longer at most ``test_max_size``
            (0: no limit), logits resized back to the input size
            (:class:`~pointrend.semantic.SemanticSegmenter`).
        config, **config_overrides: PointRend's options (:class:`SemanticPointRendConfig` and
            its fields), accepted and kept in ``model.config`` so that a baseline and its
            PointRend model can share one set of options; the baseline does not use them.
    """
    return _semantic_fpn_model(
        backbone, num_classes, pointrend=False, builder="semantic_fpn", **options
    )


def pointrend_semantic_fpn(
    backbone: str = "resnet50", num_classes: int = 19, **options
) -> SemanticSegmenter:
    """Semantic FPN with PointRend (fine-grained features: P2, ``fpn_channels``, stride 4).

    Arguments of :func:`semantic_fpn`, plus ``config`` (:class:`SemanticPointRendConfig`) whose
    fields ``config_overrides`` set (e.g. ``train_num_points=1024``).
    """
    return _semantic_fpn_model(
        backbone, num_classes, pointrend=True, builder="pointrend_semantic_fpn", **options
    )


def _deeplabv3_model(
    backbone: str,
    num_classes: int,
    *,
    pointrend: bool,
    builder: str,
    output_stride: int = 16,
    weights=None,
    weights_backbone=None,
    norm: str | None = "batch",
    trainable_backbone_layers: int | None = 5,
    image_mean: Sequence[float] = IMAGENET_MEAN,
    image_std: Sequence[float] = IMAGENET_STD,
    size_divisibility: int = 1,
    test_min_size: int = 0,
    test_max_size: int = 0,
    load_weights: bool = True,
    config: SemanticPointRendConfig | None = None,
    **config_overrides,
) -> SemanticSegmenter:
    """DeepLabV3, with PointRend's point head when ``pointrend`` (options: :func:`deeplabv3`)."""
    config = _semantic_config(builder, _deeplabv3_model, config, config_overrides)
    if output_stride not in (8, 16):
        raise ValueError(f"output_stride must be 8 or 16, got {output_stride}")
    if weights is not None and backbone not in DEEPLABV3_WEIGHTS:
        raise ValueError(
            f"weights={weights!r}: torchvision's DeepLabV3 weights exist for "
            f"{' and '.join(DEEPLABV3_WEIGHTS)}, not {backbone!r}"
        )
    if weights is not None:
        load = (torchvision_weights(f"deeplabv3_{backbone}", weights), "deeplabv3")
    elif weights_backbone is not None:
        load = (torchvision_weights(backbone, weights_backbone), "classification")
    else:
        load = None
    body = resnet_backbone(
        backbone,
        returned_layers=(1, 4),
        dilation=(False, False, True) if output_stride == 16 else (False, True, True),
        norm=norm,
        pretrained=load is not None,
        trainable_layers=trainable_backbone_layers,
    )
    fine_channels, coarse_channels = body.channels
    model = SemanticSegmenter(
        body,
        DeepLabHead(coarse_channels, num_classes),
        num_classes=num_classes,
        coarse_stride=output_stride,
        fine_index=0,
        fine_stride=body.strides[0],
        point_head=_point_head(fine_channels, num_classes, config) if pointrend else None,
        config=config,
        coarse_inputs=1,
        image_mean=image_mean,
        image_std=image_std,
        size_divisibility=size_divisibility,
        test_min_size=test_min_size,
        test_max_size=test_max_size,
    )
    if load is not None and load_weights:
        load_pretrained(model, *load)
    return model


def deeplabv3(backbone: str = "resnet50", num_classes: int = 19, **options) -> SemanticSegmenter:
    """The baseline DeepLabV3 (torchvision's head): its coarse logits bilinearly upsampled.

    Args:
        backbone: a ResNet / ResNeXt name, dilated to ``output_stride`` (16 or 8).
        num_classes: K.
        weights: ``"COCO"`` or torchvision's ``DeepLabV3_ResNet50_Weights`` /
            ``DeepLabV3_ResNet101_Weights`` (trained at output stride 8): backbone and head (the
            last classifier conv only when ``num_classes`` is 21); weights_backbone: ImageNet
            weights of the backbone, ignored with ``weights``.
        norm, trainable_backbone_layers: see :mod:`pointrend.backbones`.
        image_mean, image_std, size_divisibility, test_min_size, test_max_size: as
            :func:`semantic_fpn`.
        config, **config_overrides: as :func:`semantic_fpn` (kept, not used by the baseline).
    """
    return _deeplabv3_model(backbone, num_classes, pointrend=False, builder="deeplabv3", **options)


def pointrend_deeplabv3(
    backbone: str = "resnet50", num_classes: int = 19, **options
) -> SemanticSegmenter:
    """DeepLabV3 with PointRend (fine-grained features: res2, stride 4).

    Arguments of :func:`deeplabv3`, plus ``config`` (:class:`SemanticPointRendConfig`) whose
    fields ``config_overrides`` set (e.g. ``subdivision_num_points=4096``).
    """
    return _deeplabv3_model(
        backbone, num_classes, pointrend=True, builder="pointrend_deeplabv3", **options
    )


def pointrend_semantic_fpn_resnet50(
    num_classes: int = 19, *, weights_backbone=None, **kwargs
) -> SemanticSegmenter:
    """The paper's PointRend Semantic FPN (P2-P5), ResNet-50 (:func:`pointrend_semantic_fpn`)."""
    return pointrend_semantic_fpn(
        "resnet50", num_classes, weights_backbone=weights_backbone, **kwargs
    )


def pointrend_deeplabv3_resnet50(
    num_classes: int = 19, *, weights=None, weights_backbone=None, **kwargs
) -> SemanticSegmenter:
    """The paper's PointRend DeepLabV3 (output stride 16), ResNet-50 (:func:`pointrend_deeplabv3`)."""
    return pointrend_deeplabv3(
        "resnet50", num_classes, weights=weights, weights_backbone=weights_backbone, **kwargs
    )
