"""Evaluation: COCO box / mask AP, Boundary IoU / Boundary AP, mIoU and boundary F-score."""

from .boundary import boundary_f_score, boundary_iou, boundary_region
from .instance import BoundaryCOCOeval, InstanceEvaluator, predictions_to_coco
from .semantic import SemanticEvaluator, confusion_matrix

__all__ = [
    "BoundaryCOCOeval",
    "InstanceEvaluator",
    "SemanticEvaluator",
    "confusion_matrix",
    "boundary_f_score",
    "boundary_iou",
    "boundary_region",
    "predictions_to_coco",
]
