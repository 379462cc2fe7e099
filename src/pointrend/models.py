"""Model builders: PointRend versions of torchvision's segmentation models and their baselines.

``pointrend.models`` is the one public place of the builders; the task packages
(``pointrend.instance``, ``pointrend.semantic``) hold the implementations. Every model comes as a
pair with the same backbone and coarse model: the baseline (``maskrcnn``, ``semantic_fpn``,
``deeplabv3``) and PointRend (``pointrend_<baseline>``), plus the paper's named ResNet-50 models.
Options a builder does not take raise :class:`OptionError`, naming the option, the builder's
options and the closest one.
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
