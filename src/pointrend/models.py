"""Model builders: PointRend versions of torchvision's segmentation models and their baselines.

``pointrend.models.<builder>(...)`` is the stable way to build a model; the task packages
(``pointrend.instance``, ``pointrend.semantic``) hold the implementations.
"""

__all__: list[str] = []

# --- instance segmentation (pointrend.instance) ---
from .instance import maskrcnn, pointrend_maskrcnn, pointrend_maskrcnn_resnet50_fpn  # noqa: E402

__all__ += ["maskrcnn", "pointrend_maskrcnn", "pointrend_maskrcnn_resnet50_fpn"]

# --- semantic segmentation (pointrend.semantic) ---
from .semantic import (  # noqa: E402
    deeplabv3,
    pointrend_deeplabv3_resnet50,
    pointrend_semantic_fpn_resnet50,
    semantic_fpn,
)

__all__ += [
    "deeplabv3",
    "pointrend_deeplabv3_resnet50",
    "pointrend_semantic_fpn_resnet50",
    "semantic_fpn",
]
