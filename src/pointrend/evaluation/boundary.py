"""Boundary regions, Boundary IoU (Cheng et al., CVPR 2021) and boundary F-score.

The boundary region of a mask is the mask minus its erosion by ``d`` successive 3x3 erosions,
``d = max(1, round(dilation_ratio x image diagonal))`` (Python's ``round``: halves go to even).
This is the published definition (Cheng et al., CVPR 2021, and its reference evaluation code):
the mask is first padded with one pixel of zeros, so the image border counts as a contour and a
mask cut off by the border has boundary along it. ``d`` erosions by a 3x3 square are one erosion
by a ``(2d+1) x (2d+1)`` square, and with the zero ring the pixels outside the image count as
background; the code erodes that way (a row pass then a column pass).

``border="replicate"`` is a named variant that does not count the image border as a contour
(outside the image is "the same as the nearest pixel"); it is not Boundary IoU as published.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "BORDERS",
    "boundary_distance",
    "boundary_region",
    "boundary_iou",
    "boundary_f_score",
]


BORDERS = ("zero", "replicate")  # "zero": the published definition


def boundary_distance(height: int, width: int, dilation_ratio: float = 0.02) -> int:
    """``d`` in pixels for an ``height x width`` image (at least 1)."""
    return max(1, int(round(dilation_ratio * math.hypot(height, width))))


def _as_tensor(mask) -> torch.Tensor:
    if isinstance(mask, np.ndarray):
        mask = torch.from_numpy(np.ascontiguousarray(mask))
    return mask.bool()


def _full_runs(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """Bool: are the ``k`` values of ``x`` (0/1) ending at each position along ``dim`` all 1?
    The output is ``k - 1`` shorter along ``dim`` (windows wholly inside ``x``)."""
    total = x.cumsum(dim, dtype=torch.int32)
    n = x.shape[dim]
    before = F.pad(total, (1, 0) if dim == -1 else (0, 0, 1, 0)).narrow(dim, 0, n - k + 1)
    return total.narrow(dim, k - 1, n - k + 1) - before == k


def _erode(masks: torch.Tensor, d: int, border: str = "zero") -> torch.Tensor:
    """Erode ``N x H x W`` boolean masks by a ``(2d+1)^2`` square; outside the image is
    background (``border="zero"``) or the nearest pixel's value (``"replicate"``)."""
    # a square's erosion is a row erosion then a column erosion, each a running sum over the
    # window (two cumulative sums: the cost does not grow with d)
    if border == "zero":
        x = F.pad(masks.to(torch.uint8), (d, d, d, d))
    else:
        x = F.pad(masks.float().unsqueeze(1), (d, d, d, d), mode="replicate").squeeze(1)
    return _full_runs(_full_runs(x, 2 * d + 1, -1), 2 * d + 1, -2)


def boundary_region(
    masks, dilation_ratio: float = 0.02, distance: int | None = None, border: str = "zero"
) -> torch.Tensor:
    """Inner boundary region of masks: ``(N x) H x W`` bool -> the same shape, bool.

    A pixel is in the region if it is in the mask and within chessboard distance ``distance``
    (default: :func:`boundary_distance` of the image size and ``dilation_ratio``) of a pixel
    outside the mask; with ``border="zero"`` (the published definition) the pixels outside the
    image count as outside the mask, with ``"replicate"`` they do not count.
    """
    if border not in BORDERS:
        raise ValueError(f"border must be one of {BORDERS}, got {border!r}")
    if distance is not None and distance < 1:
        raise ValueError(f"boundary distance must be at least 1 pixel, got {distance}")
    m = _as_tensor(masks)
    single = m.dim() == 2
    if single:
        m = m.unsqueeze(0)
    if m.shape[0] == 0:
        return m.clone()
    d = distance if distance is not None else boundary_distance(*m.shape[-2:], dilation_ratio)
    region = m & ~_erode(m, d, border)
    return region[0] if single else region


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    union = (a | b).sum().item()
    return float((a & b).sum().item() / union) if union else 1.0


def boundary_iou(gt_mask, pred_mask, dilation_ratio: float = 0.02, border: str = "zero") -> float:
    """Boundary IoU of two ``H x W`` masks: ``|Bg n Bp| / |Bg u Bp|`` (1.0 if both are empty),
    ``B`` the :func:`boundary_region` of each."""
    gt, pred = _as_tensor(gt_mask), _as_tensor(pred_mask)
    if gt.shape != pred.shape:
        raise ValueError(f"masks differ in shape: gt {tuple(gt.shape)}, pred {tuple(pred.shape)}")
    regions = boundary_region(torch.stack([gt, pred]), dilation_ratio, border=border)
    return _iou(regions[0], regions[1])


def _dilate(masks: torch.Tensor, d: int) -> torch.Tensor:
    x = masks.float().unsqueeze(1)
    return F.max_pool2d(x, kernel_size=2 * d + 1, stride=1, padding=d).squeeze(1) > 0.5


def boundary_f_score(gt_labels, pred_labels, tolerance: int = 2, ignore_index: int = 255) -> float:
    """Boundary F-score of two label maps (``H x W`` int): contours within ``tolerance`` pixels.

    The contour of a label map is every pixel whose 3x3 neighbourhood holds another label.
    Precision is the fraction of predicted contour pixels within ``tolerance`` of a true contour
    pixel, recall the converse; F = 2PR / (P + R). Pixels labelled ``ignore_index`` in the
    ground truth are left out. Returns 1.0 when neither map has a contour.
    """
    gt, pred = torch.as_tensor(np.asarray(gt_labels)), torch.as_tensor(np.asarray(pred_labels))
    if gt.shape != pred.shape:
        raise ValueError(
            f"label maps differ in shape: gt {tuple(gt.shape)}, pred {tuple(pred.shape)}"
        )
    valid = gt != ignore_index
    gt_edges = _label_edges(gt, valid)
    pred_edges = _label_edges(pred, valid)
    n_gt, n_pred = int(gt_edges.sum()), int(pred_edges.sum())
    if n_gt == 0 and n_pred == 0:
        return 1.0
    if n_gt == 0 or n_pred == 0:
        return 0.0
    precision = float((pred_edges & _dilate(gt_edges[None], tolerance)[0]).sum()) / n_pred
    recall = float((gt_edges & _dilate(pred_edges[None], tolerance)[0]).sum()) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def _label_edges(labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Pixels of an ``H x W`` label map with a different label among their valid 4-neighbours
    (a pixel next to an ignored one is not an edge for that reason)."""
    x = labels.long()
    edge = torch.zeros_like(x, dtype=torch.bool)
    dx = (x[:, 1:] != x[:, :-1]) & valid[:, 1:] & valid[:, :-1]
    dy = (x[1:, :] != x[:-1, :]) & valid[1:, :] & valid[:-1, :]
    edge[:, 1:] |= dx
    edge[:, :-1] |= dx
    edge[1:, :] |= dy
    edge[:-1, :] |= dy
    return edge
