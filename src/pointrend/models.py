"""Model builders: PointRend versions of torchvision's segmentation models and their baselines.

``pointrend.models`` is the one public place of the builders; the task packages
(``pointrend.instance``, ``pointrend.semantic``) hold the implementations. Every model comes as a
pair with the same backbone and coarse model: the baseline (``maskrcnn``, ``semantic_fpn``,
``deeplabv3``) and PointRend (``pointrend_<baseline>``), plus the paper's named ResNet-50 models.
Options a builder does not take raise :class:`OptionError`, naming the option, the builder's
options and the closest one.

This module is an entry point, above the engine (:func:`from_zoo` loads through it); the engine
and the importers take the builders from the task packages, so that nothing imports back here.
"""

from .instance import maskrcnn, pointrend_maskrcnn, pointrend_maskrcnn_resnet50_fpn
from .options import OptionError
from .semantic import (
    deeplabv3,
    pointrend_deeplabv3,
    pointrend_deeplabv3_resnet50,
    pointrend_semantic_fpn,
    pointrend_semantic_fpn_resnet50,
    semantic_fpn,
)

__all__ = [
    "OptionError",
    "from_detectron2",
    "from_zoo",
    "zoo_names",
    # instance segmentation
    "maskrcnn",
    "pointrend_maskrcnn",
    "pointrend_maskrcnn_resnet50_fpn",
    # semantic segmentation
    "deeplabv3",
    "pointrend_deeplabv3",
    "pointrend_deeplabv3_resnet50",
    "semantic_fpn",
    "pointrend_semantic_fpn",
    "pointrend_semantic_fpn_resnet50",
]


def from_detectron2(checkpoint, d2_config=None, zoo=None):
    """A detectron2 PointRend checkpoint as a pointrend model (eval mode):
    :func:`pointrend.interop.detectron2.from_detectron2`."""
    from .interop.detectron2 import from_detectron2 as convert

    return convert(checkpoint, d2_config, zoo)


def from_zoo(name: str, device=None):
    """The PointRend authors' published model ``name`` (e.g. ``"pointrend_rcnn_R_50_FPN_3x_coco"``,
    see :func:`zoo_names`), trained weights included, in eval mode on ``device`` (``None``:
    ``auto``, the GPU when there is one).

    The first call downloads detectron2's checkpoint into torch's hub cache and converts it
    once (:func:`pointrend.engine.imported.converted_zoo_checkpoint`); the model's class
    names are ``model.class_names`` (by label, ``"background"`` first for instance models).
    For thresholded results with class names, use :class:`pointrend.Predictor`.
    """
    from .engine.imported import converted_zoo_checkpoint
    from .engine.inference import load_trained_model

    trained = load_trained_model(converted_zoo_checkpoint(name), device=device)
    trained.model.class_names = list(trained.class_names)
    return trained.model


def zoo_names() -> list[str]:
    """The names :func:`from_zoo` takes: the published models the importer knows."""
    from .interop.detectron2.zoo import ZOO

    return sorted(ZOO)
