"""Training targets of PointRend's mask branch, as detectron2 makes them.

Ground truth is one full-image 0/1 bitmask per instance (the masks at the image's size, as the
transform leaves them), and every target is read from it: nothing is rasterised per box.

* :func:`coarse_mask_targets`: the coarse head's ``S x S`` targets, **binary**:
  ``RoIAlign((S, S), spatial_scale 1, sampling_ratio 0, aligned=True)`` of the bitmask as float,
  then ``>= 0.5`` (detectron2's ``BitMasks.crop_and_resize``). ``sampling_ratio 0`` is adaptive
  (``ceil(bin size)`` samples per bin and axis); parts of a box outside the image read 0.
* :func:`sample_masks_at_points`: the point head's labels, the bitmask bilinearly sampled at the
  points (``grid_sample``, ``align_corners=False``, zero outside the image: detectron2's
  ``point_sample`` of the bitmask): soft within half a pixel of an edge, not thresholded.

Boxes are not clipped to the image (detectron2 trains on the box head's unclipped boxes).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align

__all__ = ["FlatMasks", "sample_masks_at_points", "coarse_mask_targets"]


class FlatMasks:
    """The ground-truth masks of a batch, flattened into one buffer to be read at points.

    Images of a batch have different sizes and different numbers of instances; instead of
    padding, every mask is stored flat, back to back, with its offset and size. Reading stays in
    the masks' own dtype (``uint8`` / ``bool`` / float) until the four neighbours are gathered.

    Args:
        masks: one ``N_i x H_i x W_i`` tensor per image (``N_i`` may be 0).

    Attributes:
        masks: the per-image tensors as given.
        values: ``sum(N_i * H_i * W_i)`` flat buffer.
        offsets, heights, widths: ``G`` int64, one per mask (``G = sum(N_i)``).
        first: ``len(masks)`` int64, the global index of each image's first mask.
    """

    def __init__(self, masks: Sequence[Tensor]):
        self.masks = list(masks)
        device = masks[0].device if len(masks) else torch.device("cpu")
        counts = [int(m.shape[0]) for m in masks]
        self.values = (
            torch.cat([m.reshape(-1) for m in masks]) if masks else torch.zeros(0, device=device)
        )
        sizes = torch.tensor(
            [[n, m.shape[-2], m.shape[-1]] for n, m in zip(counts, masks)],
            dtype=torch.int64,
            device=device,
        ).reshape(-1, 3)
        per_mask = torch.repeat_interleave(sizes, sizes[:, 0], dim=0)
        self.heights, self.widths = per_mask[:, 1], per_mask[:, 2]
        areas = self.heights * self.widths
        self.offsets = torch.cumsum(areas, 0) - areas
        counts_t = sizes[:, 0]
        self.first = torch.cumsum(counts_t, 0) - counts_t


def sample_masks_at_points(flat: FlatMasks, mask_index: Tensor, points: Tensor) -> Tensor:
    """Bilinearly sample ground-truth masks at points given in image pixels.

    Same values as ``point_sample(mask[None, None], points / (W, H))`` (``align_corners=False``,
    zero outside the mask), for many masks of different sizes at once.

    Args:
        flat: the batch's masks (:class:`FlatMasks`).
        mask_index: ``R`` int64 global mask index per region (``flat.first[image] + matched``).
        points: ``R x P x 2`` points ``(x, y)`` in image pixels.

    Returns:
        ``R x P`` float32 values in ``[0, 1]`` for binary masks.
    """
    R, P = points.shape[0], points.shape[1]
    if R == 0:
        return points.new_zeros(0, P)
    H = flat.heights[mask_index][:, None]  # R x 1
    W = flat.widths[mask_index][:, None]
    offset = flat.offsets[mask_index][:, None]
    px = points[..., 0].to(torch.float32) - 0.5  # pixel-centre coordinates
    py = points[..., 1].to(torch.float32) - 0.5
    x0 = torch.floor(px)
    y0 = torch.floor(py)
    wx1, wy1 = px - x0, py - y0
    x0, y0 = x0.to(torch.int64), y0.to(torch.int64)
    result = points.new_zeros(R, P, dtype=torch.float32)
    for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
        xi, yi = x0 + dx, y0 + dy
        ok = (xi >= 0) & (xi < W) & (yi >= 0) & (yi < H)
        index = offset + yi.clamp(min=0) * W + xi.clamp(min=0)
        index = torch.where(ok, index, torch.zeros_like(index))
        value = flat.values[index].to(torch.float32) * ok.to(torch.float32)
        weight = (wx1 if dx else 1 - wx1) * (wy1 if dy else 1 - wy1)
        result = result + weight * value
    return result


def coarse_mask_targets(gt: FlatMasks, mask_index: Tensor, boxes: Tensor, size: int) -> Tensor:
    """Binary ``size x size`` coarse targets: RoIAlign of each box's bitmask, then ``>= 0.5``.

    Args:
        gt: the batch's ground-truth masks (full-image 0/1 bitmasks).
        mask_index: ``R`` int64 global index of each box's matched mask.
        boxes: ``R x 4`` float boxes ``(x0, y0, x1, y1)`` in image pixels, not clipped.

    Returns:
        ``R x size x size`` float32 of 0 and 1 (detectron2's ``crop_and_resize(boxes, size)``:
        ``roi_align(..., aligned=True, sampling_ratio=0) >= 0.5``).

    RoIAlign runs once per image on that image's masks that some box reads (a loop over images).
    """
    R = boxes.shape[0]
    targets = boxes.new_zeros(R, size, size, dtype=torch.float32)
    if R == 0:
        return targets
    first = gt.first.to(mask_index.device)
    image_of = torch.searchsorted(first, mask_index, right=True) - 1  # R
    for i in torch.unique(image_of).tolist():
        rows = torch.where(image_of == i)[0]
        used, local = torch.unique(mask_index[rows] - first[i], return_inverse=True)
        masks = gt.masks[i].to(boxes.device)[used.to(gt.masks[i].device)][:, None].float()
        rois = torch.cat([local[:, None].to(masks.dtype), boxes[rows].to(masks.dtype)], 1)
        values = roi_align(masks, rois, (size, size), 1.0, 0, aligned=True)
        targets[rows] = (values[:, 0] >= 0.5).to(torch.float32)
    return targets
