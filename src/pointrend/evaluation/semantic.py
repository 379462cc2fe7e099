"""Semantic evaluation: mIoU over a confusion matrix, boundary F-score, Boundary IoU per class."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .boundary import boundary_f_score, boundary_region

__all__ = ["SemanticEvaluator", "confusion_matrix"]


def confusion_matrix(
    gt: torch.Tensor, pred: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """``K x K`` int64 counts (rows: ground truth, columns: prediction), ignored pixels left out."""
    gt, pred = gt.reshape(-1).long(), pred.reshape(-1).long()
    valid = gt != ignore_index
    if ((gt[valid] < 0) | (gt[valid] >= num_classes)).any():
        bad = torch.unique(gt[valid][(gt[valid] < 0) | (gt[valid] >= num_classes)]).tolist()
        raise ValueError(
            f"ground-truth labels {bad} are outside [0, {num_classes}) and not the ignore label {ignore_index}"
        )
    index = gt[valid] * num_classes + pred[valid].clamp(0, num_classes - 1)
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


class SemanticEvaluator:
    """Accumulate label maps batch by batch (memory: a ``K x K`` matrix and a few sums).

    Reports ``mIoU`` and per-class ``IoU`` (percent), ``boundary_f`` (mean over images of the
    boundary F-score with ``tolerance`` pixels, percent) and ``boundary_iou`` (per class,
    boundary regions of each class's mask with ``dilation_ratio``, pooled over images, percent).
    """

    def __init__(
        self,
        num_classes: int,
        ignore_index: int = 255,
        tolerance: int = 2,
        dilation_ratio: float = 0.02,
        class_names: Sequence[str] | None = None,
    ):
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.tolerance, self.dilation_ratio = tolerance, dilation_ratio
        self.class_names = (
            list(class_names) if class_names else [str(k) for k in range(num_classes)]
        )
        self.reset()

    def reset(self) -> None:
        K = self.num_classes
        self.matrix = torch.zeros(K, K, dtype=torch.int64)
        self.boundary_inter = torch.zeros(K, dtype=torch.int64)
        self.boundary_union = torch.zeros(K, dtype=torch.int64)
        self.f_sum, self.count = 0.0, 0

    def update(self, gt: torch.Tensor, pred: torch.Tensor) -> None:
        """``gt`` and ``pred``: ``N x H x W`` (or ``H x W``) integer label maps."""
        gt, pred = gt.cpu(), pred.cpu()
        if gt.shape != pred.shape:
            raise ValueError(f"gt {tuple(gt.shape)} and pred {tuple(pred.shape)} differ in shape")
        if gt.dim() == 2:
            gt, pred = gt[None], pred[None]
        self.matrix += confusion_matrix(gt, pred, self.num_classes, self.ignore_index)
        classes = torch.arange(self.num_classes)
        for g, p in zip(gt, pred):
            self.f_sum += boundary_f_score(g, p, self.tolerance, self.ignore_index)
            self.count += 1
            valid = g != self.ignore_index
            gm = (g[None] == classes[:, None, None]) & valid
            pm = (p[None] == classes[:, None, None]) & valid
            gb = boundary_region(gm, self.dilation_ratio)
            pb = boundary_region(pm, self.dilation_ratio)
            self.boundary_inter += (gb & pb).flatten(1).sum(1)
            self.boundary_union += (gb | pb).flatten(1).sum(1)

    def state(self) -> dict:
        return {
            "matrix": self.matrix,
            "bi": self.boundary_inter,
            "bu": self.boundary_union,
            "f_sum": self.f_sum,
            "count": self.count,
        }

    def merge(self, state: dict) -> None:
        self.matrix += state["matrix"]
        self.boundary_inter += state["bi"]
        self.boundary_union += state["bu"]
        self.f_sum += state["f_sum"]
        self.count += state["count"]

    def evaluate(self) -> dict:
        m = self.matrix.double()
        inter, union = m.diag(), m.sum(0) + m.sum(1) - m.diag()
        present = union > 0
        iou = torch.where(present, inter / union.clamp(min=1), torch.full_like(inter, float("nan")))
        b_union = self.boundary_union.double()
        b_iou = torch.where(
            b_union > 0,
            self.boundary_inter / b_union.clamp(min=1),
            torch.full_like(b_union, float("nan")),
        )
        return {
            "mIoU": float(iou[present].mean() * 100) if present.any() else float("nan"),
            "pixel_accuracy": float(inter.sum() / m.sum().clamp(min=1) * 100),
            "boundary_f": self.f_sum / max(self.count, 1) * 100,
            "boundary_iou": float(b_iou[b_union > 0].mean() * 100)
            if (b_union > 0).any()
            else float("nan"),
            "IoU": {n: float(v * 100) for n, v in zip(self.class_names, iou)},
        }
