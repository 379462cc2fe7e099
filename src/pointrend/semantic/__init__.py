"""PointRend for semantic segmentation: Semantic FPN and DeepLabV3, plain or with PointRend."""

from .builders import (
    deeplabv3,
    pointrend_deeplabv3,
    pointrend_deeplabv3_resnet50,
    pointrend_semantic_fpn,
    pointrend_semantic_fpn_resnet50,
    semantic_fpn,
)
from .fpn_head import SemanticFPNHead
from .pointrend import SemanticPointRendConfig, SemanticSegmenter

__all__ = [
    "SemanticFPNHead",
    "SemanticPointRendConfig",
    "SemanticSegmenter",
    "deeplabv3",
    "pointrend_deeplabv3",
    "pointrend_deeplabv3_resnet50",
    "pointrend_semantic_fpn",
    "pointrend_semantic_fpn_resnet50",
    "semantic_fpn",
]
