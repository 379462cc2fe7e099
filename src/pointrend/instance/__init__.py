"""PointRend for box-based instance segmentation: torchvision's Mask R-CNN with PointRend's mask
branch (coarse 7x7 head on point-sampled P2 features, point head, adaptive subdivision to
224x224, masks pasted at full resolution)."""

from .builders import (
    maskrcnn,
    pointrend_maskrcnn,
    pointrend_maskrcnn_resnet50_fpn,
)
from .compact import CompactMasks, paste_compact, pasted_chunks
from .mask_head import CoarseMaskHead, PointRendMaskBranch, PointRendMaskConfig
from .model import PointRendMaskRCNN
from .paste import MasksBySize, paste_masks
from .roi_heads import PointRendRoIHeads, check_training_targets
from .targets import FlatMasks, sample_masks_at_points
from .transform import PointRendTransform

__all__ = [
    "CoarseMaskHead",
    "CompactMasks",
    "FlatMasks",
    "MasksBySize",
    "PointRendMaskBranch",
    "PointRendMaskRCNN",
    "PointRendMaskConfig",
    "PointRendRoIHeads",
    "PointRendTransform",
    "check_training_targets",
    "maskrcnn",
    "paste_compact",
    "paste_masks",
    "pasted_chunks",
    "pointrend_maskrcnn",
    "pointrend_maskrcnn_resnet50_fpn",
    "sample_masks_at_points",
]
