"""PointRend for semantic segmentation: Semantic FPN and DeepLabV3, plain or with PointRend."""

from .builders import (
    build_semantic_model,
    deeplabv3,
    load_torchvision_deeplabv3,
    map_torchvision_deeplabv3_state_dict,
    pointrend_deeplabv3_resnet50,
    pointrend_semantic_fpn_resnet50,
    semantic_fpn,
)
from .fpn_head import SemanticFPNHead
from .pointrend import SemanticPointRendConfig, SemanticSegmenter

__all__ = [
    "SemanticFPNHead",
    "SemanticPointRendConfig",
    "SemanticSegmenter",
    "build_semantic_model",
    "deeplabv3",
    "load_torchvision_deeplabv3",
    "map_torchvision_deeplabv3_state_dict",
    "pointrend_deeplabv3_resnet50",
    "pointrend_semantic_fpn_resnet50",
    "semantic_fpn",
]
