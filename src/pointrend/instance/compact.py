"""Compact instance masks: each detection's box-local grid and its box, pasted only when asked.

A dense Mask R-CNN output holds ``R x 1 x H x W`` float32 probabilities: at 8000 x 6000 pixels
that is 192 MB per detection. :class:`CompactMasks` keeps what the mask branch rendered (the
``R x 1 x M x M`` box-local probabilities, or per-box grids of several sizes) with the boxes and
the image size they belong to; :func:`paste_compact` turns any subset of them into full-size
``bool`` / ``uint8`` masks or straight into COCO RLE, and :func:`pasted_chunks` hands them out a
few at a time, so that no ``R x H x W`` float tensor is ever made.

The pasted masks are the dense output thresholded: a pixel is in detection ``r``'s mask iff its
value in :func:`~pointrend.instance.paste.paste_masks` (same boxes, same grids, same paste rule)
is at least ``threshold``. Pixels outside a box are never in its mask.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torchvision.models.detection.transform import resize_boxes

from .paste import MasksBySize, box_pixel_ranges, paste_masks, window_values

__all__ = [
    "CompactMasks",
    "compact_detections",
    "paste_compact",
    "pasted_chunks",
    "binary_mask_chunks",
    "MASK_OUTPUTS",
]

MASK_OUTPUTS = ("dense", "compact")


@dataclass
class CompactMasks:
    """The masks of one image's ``R`` detections before they are pasted.

    Attributes:
        grids: ``R x 1 x M x M'`` box-local mask probabilities, or a
            :class:`~pointrend.instance.paste.MasksBySize` (per-box grids, ``mask_resolution:
            box``).
        boxes: ``R x 4`` boxes ``(x0, y0, x1, y1)`` in the pixels of ``image_size``.
        image_size: ``(H, W)`` of the image the boxes are given in.
        fade_border: read the grids with zero padding up to the box edge (``mask_paste:
            detectron2``) instead of clamping to their border cells.
    """

    grids: Tensor | MasksBySize
    boxes: Tensor
    image_size: tuple[int, int]
    fade_border: bool = False

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    def dense(self) -> Tensor:
        """The dense output, ``R x 1 x H x W`` probabilities (what the model returns by default)."""
        return paste_masks(self.grids, self.boxes, self.image_size, fade_border=self.fade_border)


def compact_detections(
    result: list[dict],
    image_shapes: Sequence[Sequence[int]],
    output_sizes: Sequence[Sequence[int]],
    fade_border: bool = False,
) -> list[dict]:
    """The RoI heads' detections (boxes in the resized images ``image_shapes``) with boxes in
    ``output_sizes`` and their ``masks`` (box-local grids) kept as ``mask_grids``: one
    :class:`CompactMasks` per image, at its output size. Each dict is updated in place."""
    for pred, size, out in zip(result, image_shapes, output_sizes):
        pred["boxes"] = resize_boxes(pred["boxes"], tuple(size), tuple(out))
        if "masks" in pred:
            out_hw = (int(out[0]), int(out[1]))
            pred["mask_grids"] = CompactMasks(pred.pop("masks"), pred["boxes"], out_hw, fade_border)
    return result


def binary_mask_chunks(
    output: dict,
    index: Sequence[int] | Tensor | None = None,
    threshold: float = 0.5,
    max_bytes: int = 1 << 28,
) -> Iterator[tuple[Tensor, Tensor, tuple[int, int, int, int]]]:
    """:func:`pasted_chunks` of one image's output, whether it holds compact ``mask_grids`` or
    dense ``masks`` (``N x 1 x H x W`` probabilities, thresholded a chunk at a time; the window
    is then the whole image)."""
    if "mask_grids" in output:
        yield from pasted_chunks(output["mask_grids"], None, index, threshold, max_bytes)
        return
    masks = output["masks"]
    wanted = torch.arange(masks.shape[0]) if index is None else torch.as_tensor(index)
    per_chunk = max(1, int(max_bytes) // max(masks.shape[-2] * masks.shape[-1], 1))
    for positions in torch.arange(wanted.numel()).split(per_chunk) if wanted.numel() else ():
        chunk = masks[wanted[positions].to(masks.device), 0] >= threshold  # k x H x W
        window = (0, masks.shape[-2], 0, masks.shape[-1])
        yield positions, chunk.to(torch.uint8).transpose(1, 2).contiguous().transpose(1, 2), window


def _scaled_boxes(compact: CompactMasks, size: tuple[int, int]) -> Tensor:
    """``R x 4`` float32 boxes of ``compact`` in the pixels of an image of ``size`` ``(H, W)``."""
    boxes = compact.boxes.to(torch.float32)
    if size == tuple(compact.image_size):
        return boxes
    (h0, w0), (h1, w1) = compact.image_size, size
    ratio = torch.tensor([w1 / w0, h1 / h0, w1 / w0, h1 / h0], dtype=torch.float32)
    return boxes * ratio.to(boxes.device)


def _fill(
    canvas: Tensor,
    slots: Tensor,
    grids: Tensor,
    boxes: Tensor,
    threshold: float,
    fade_border: bool,
    max_elements: int,
) -> None:
    """Set to 1 the pixels of ``canvas`` (``k x W x H`` uint8, each mask column-major) where
    the pasted ``grids`` (``r x 1 x M_h x M_w``) of ``boxes`` (``r x 4``) reach ``threshold``;
    box ``i`` goes to mask ``slots[i]``, which no other box writes."""
    W, H = canvas.shape[1], canvas.shape[2]
    grids = grids.to(torch.float32)
    for chunk, values, rows, cols in window_values(grids, boxes, (H, W), max_elements, fade_border):
        on = values >= threshold  # r x h x w, False outside the box
        if len(chunk) == 1:  # one window (or band of one): a block of rows and columns
            r0, c0 = int(rows[0, 0]), int(cols[0, 0])
            h, w = min(rows.shape[1], H - r0), min(cols.shape[1], W - c0)
            if h > 0 and w > 0:
                block = canvas[int(slots[chunk[0]]), c0 : c0 + w, r0 : r0 + h]
                block.copy_(on[0, :h, :w].t())  # outside the box: 0, as the mask is there
            continue
        on &= (rows < H)[:, :, None] & (cols < W)[:, None, :]
        r, y, x = on.nonzero(as_tuple=True)
        canvas[slots[chunk][r], cols[r, x], rows[r, y]] = 1


def pasted_chunks(
    compact: CompactMasks,
    image_size: Sequence[int] | None = None,
    index: Sequence[int] | Tensor | None = None,
    threshold: float = 0.5,
    max_bytes: int = 1 << 28,
    max_elements: int = 1 << 22,
) -> Iterator[tuple[Tensor, Tensor, tuple[int, int, int, int]]]:
    """Full-size binary masks of some detections, a few at a time.

    Args:
        compact: one image's :class:`CompactMasks`.
        image_size: ``(H, W)`` to paste at (default ``compact.image_size``; boxes are scaled).
        index: the detections wanted, in the order wanted (default: all, in order).
        threshold: a pixel is in a mask iff its pasted probability is ``>= threshold``
            (``0 < threshold <= 1``).
        max_bytes: bound on the size of one chunk's masks (at least one mask per chunk).
        max_elements: bound on the window pixels sampled at once (see ``paste_masks``).

    Yields:
        ``(positions, masks, window)``: ``positions`` ``k`` int64 indices into ``index`` (0,
        1, ... in order over the chunks), ``masks`` ``k x H x W`` uint8 (0 / 1), ``window``
        ``(y0, y1, x0, x1)``: the rows and columns outside it are 0 in every mask of the chunk.
        Each mask is stored column-major (``masks.permute(1, 2, 0).numpy()`` is
        Fortran-ordered, as pycocotools' ``mask.encode`` wants it).
    """
    if not 0 < float(threshold) <= 1:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    H, W = (int(s) for s in (image_size or compact.image_size))
    R = len(compact)
    wanted = torch.arange(R) if index is None else torch.as_tensor(index, dtype=torch.int64)
    wanted = wanted.reshape(-1).cpu()
    if wanted.numel() and (int(wanted.min()) < 0 or int(wanted.max()) >= R):
        raise ValueError(f"index holds detections outside [0, {R}): {wanted.tolist()}")
    boxes = _scaled_boxes(compact, (H, W))
    groups = (
        compact.grids.groups
        if isinstance(compact.grids, MasksBySize)
        else [(torch.arange(R), compact.grids)]
    )
    per_chunk = max(1, int(max_bytes) // max(H * W, 1))
    for positions in torch.arange(wanted.numel()).split(per_chunk) if wanted.numel() else ():
        canvas = torch.zeros(len(positions), W, H, dtype=torch.uint8, device=boxes.device)
        slot_of = torch.full((R,), -1, dtype=torch.int64)
        slot_of[wanted[positions]] = torch.arange(len(positions))
        for members, grids in groups:
            slots = slot_of[members.cpu()]
            take = slots >= 0
            if bool(take.any()):
                picked = members.cpu()[take].to(boxes.device)
                _fill(
                    canvas,
                    slots[take].to(boxes.device),
                    grids[take.to(grids.device)],
                    boxes[picked],
                    threshold,
                    compact.fade_border,
                    max_elements,
                )
        x0, x1 = box_pixel_ranges(boxes[wanted[positions]], W, axis=0)
        y0, y1 = box_pixel_ranges(boxes[wanted[positions]], H, axis=1)
        window = (int(y0.min()), int(y1.max()), int(x0.min()), int(x1.max()))
        yield positions, canvas.transpose(1, 2), window


def paste_compact(
    compact: CompactMasks,
    image_size: Sequence[int] | None = None,
    index: Sequence[int] | Tensor | None = None,
    output: str = "bool",
    threshold: float = 0.5,
    max_bytes: int = 1 << 28,
) -> Tensor | list[dict]:
    """Paste some detections of a :class:`CompactMasks` to full size (never as float images).

    Args:
        compact, image_size, index, threshold, max_bytes: as :func:`pasted_chunks`.
        output: ``"bool"`` or ``"uint8"`` (an ``n x H x W`` tensor, ``n`` the detections
            asked for), or ``"rle"`` (a list of ``n`` COCO RLE dicts, ``counts`` as text; only
            one chunk of uint8 masks is held at a time).
    """
    if output not in ("bool", "uint8", "rle"):
        raise ValueError(f"output must be 'bool', 'uint8' or 'rle', got {output!r}")
    H, W = (int(s) for s in (image_size or compact.image_size))
    n = len(compact) if index is None else int(torch.as_tensor(index).numel())
    chunks = pasted_chunks(compact, (H, W), index, threshold, max_bytes)
    if output == "rle":
        from pycocotools import mask as mask_utils

        rles = []
        for _, masks, _ in chunks:
            for rle in mask_utils.encode(np.asfortranarray(masks.cpu().permute(1, 2, 0).numpy())):
                rle["counts"] = rle["counts"].decode("ascii")
                rles.append(rle)
        return rles
    dtype = torch.bool if output == "bool" else torch.uint8
    out = torch.zeros(n, H, W, dtype=dtype, device=compact.boxes.device)
    for positions, masks, _ in chunks:
        out[positions.to(out.device)] = masks.to(dtype)
    return out
