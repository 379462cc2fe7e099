"""Pasting box-relative masks into images (training targets: :mod:`.targets`).

It follows the library's one coordinate convention (docs/conventions.md): pixel ``i`` of a map of width
``W`` has its centre at ``(i + 0.5) / W`` (``grid_sample(..., align_corners=False)``), and a
point relative to a box ``(x0, y0, x1, y1)`` is ``x0 + u * (x1 - x0)`` in image pixels.

Everything here works on all boxes of an image (or of a batch) at once; the only Python loop is
over chunks of boxes, to bound the memory of the paste.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import _tracing

__all__ = [
    "paste_masks",
    "box_pixel_bounds",
    "box_pixel_ranges",
    "MasksBySize",
]


@dataclass
class MasksBySize:
    """Box-relative masks of ``count`` boxes rendered at different sizes, grouped by size.

    Attributes:
        count: R, the number of boxes.
        groups: ``(index, masks)`` pairs, one per size: ``index`` (``R_g`` int64) the boxes the
            group holds, ``masks`` their ``R_g x 1 x M_h x M_w`` values. Every box is in exactly
            one group.
    """

    count: int
    groups: list[tuple[Tensor, Tensor]]

    def map(self, fn: Callable[[Tensor], Tensor]) -> MasksBySize:
        """``fn`` applied to every group's masks (e.g. ``torch.sigmoid``)."""
        return MasksBySize(self.count, [(i, fn(m)) for i, m in self.groups])

    def split(self, counts: Sequence[int]) -> list[MasksBySize]:
        """One :class:`MasksBySize` per image, the boxes being ``counts[i]`` consecutive ones."""
        parts, first = [], 0
        for n in counts:
            groups = []
            for index, masks in self.groups:
                mine = (index >= first) & (index < first + n)
                groups.append((index[mine] - first, masks[mine]))
            parts.append(MasksBySize(int(n), groups))
            first += int(n)
        return parts

    def sizes(self) -> Tensor:
        """``R x 2`` int64: each box's mask ``(M_h, M_w)``."""
        out = torch.zeros(self.count, 2, dtype=torch.int64)
        for index, masks in self.groups:
            out[index.cpu()] = torch.tensor(masks.shape[-2:])
        return out


def box_pixel_bounds(boxes: Tensor, axis: int) -> tuple[Tensor, Tensor]:
    """The paste's inside-box rule: pixel ``i`` (along ``axis``, 0 = x, 1 = y) is inside a box
    ``(x0, y0, x1, y1)`` iff its centre is, ``lo <= i + 0.5 < hi``, i.e. ``start <= i < end``.

    Returns ``(start, end)``, each ``R`` (the boxes' dtype, integral values), not clipped to
    any image.
    """
    return torch.ceil(boxes[:, axis] - 0.5), torch.ceil(boxes[:, axis + 2] - 0.5)


def box_pixel_ranges(boxes: Tensor, size: int, axis: int) -> tuple[Tensor, Tensor]:
    """Pixels whose centres lie inside each box along one axis, clipped to ``[0, size)``.

    Args:
        boxes: ``R x 4`` boxes ``(x0, y0, x1, y1)`` in pixels.
        size: the image's width (``axis=0``) or height (``axis=1``).

    Returns:
        ``(start, end)``, each ``R`` int64: pixel ``i`` is inside iff ``start <= i < end``
        (:func:`box_pixel_bounds`). Empty (``start == end``) for boxes of zero extent.
    """
    start, end = (b.clamp(0, size).to(torch.int64) for b in box_pixel_bounds(boxes, axis))
    return start, torch.maximum(start, end)


def paste_masks(
    masks: Tensor | MasksBySize,
    boxes: Tensor,
    image_size: Sequence[int],
    max_elements: int = 1 << 24,
    fade_border: bool = False,
) -> Tensor:
    """Paste box-relative masks (e.g. 224 x 224 rendered probabilities) into an image.

    A pixel whose centre lies inside a box gets the mask's bilinear value at that centre
    (box-relative cell-centre convention, values clamped to the mask's border cells near the
    box edge); a pixel whose centre is outside the box gets 0. Boxes may be partly or wholly
    outside the image and may have zero width or height (their masks are all zero).

    Args:
        masks: ``R x 1 x M x M'`` box-relative values (probabilities or logits; any M), or a
            :class:`MasksBySize` (each size pasted in one call, a loop over the sizes only). A
            mask whose grid has one cell per pixel of an integer-aligned box pastes exactly:
            pixel centres fall on cell centres.
        boxes: ``R x 4`` boxes ``(x0, y0, x1, y1)`` in the pixels of the target image.
        image_size: ``(H, W)`` of the target image.
        max_elements: bound on the number of sampled values computed at once; boxes are
            processed in chunks of this many window pixels.
        fade_border: read the mask with zero padding up to the box edge instead of clamping to
            its border cells, so that values fade towards 0 within half a mask cell of the edge
            (detectron2's paste; thresholded at 0.5 it gives detectron2's masks).

    Returns:
        ``R x 1 x H x W`` in ``masks``' floating dtype.

    Only each box's own pixel window is sampled (one ``grid_sample`` per chunk of boxes of
    about the same window size, padded to the chunk's largest); values are written with one
    ``scatter_add`` per chunk.
    """
    if isinstance(masks, MasksBySize):
        return _paste_by_size(masks, boxes, image_size, max_elements, fade_border)
    if _tracing.is_tracing():  # no size read into Python: every box reads the whole image
        boxes = boxes.to(torch.float32)
        masks = masks if masks.is_floating_point() else masks.to(torch.float32)
        bounds = (box_pixel_bounds(boxes, 0), box_pixel_bounds(boxes, 1))
        grid = _window_grid(
            masks, boxes, *_tracing.whole_image_windows(*bounds, image_size), fade_border
        )
        return F.grid_sample(masks, grid, padding_mode="zeros", align_corners=False)
    H, W = int(image_size[0]), int(image_size[1])
    R = masks.shape[0]
    if masks.dim() != 4 or masks.shape[1] != 1:
        raise ValueError(f"masks must be R x 1 x M x M, got shape {tuple(masks.shape)}")
    if boxes.shape != (R, 4):
        raise ValueError(f"boxes must be {R} x 4 to match masks, got shape {tuple(boxes.shape)}")
    dtype = masks.dtype if masks.is_floating_point() else torch.float32
    out = torch.zeros(R, H * W, dtype=dtype, device=masks.device)
    if R and H and W:
        rows = torch.arange(R, device=masks.device)
        _paste_into(out, rows, masks, boxes, W, max_elements, fade_border)
    return out.view(R, 1, H, W)


def _paste_by_size(
    masks: MasksBySize,
    boxes: Tensor,
    image_size: Sequence[int],
    max_elements: int,
    fade_border: bool,
) -> Tensor:
    """:func:`paste_masks` of masks grouped by size: ``R x 1 x H x W``."""
    if boxes.shape != (masks.count, 4):
        raise ValueError(
            f"boxes must be {masks.count} x 4 to match masks, got shape {tuple(boxes.shape)}"
        )
    H, W = int(image_size[0]), int(image_size[1])
    dtypes = [m.dtype for _, m in masks.groups if m.is_floating_point()]
    dtype = dtypes[0] if dtypes else torch.float32
    out = torch.zeros(masks.count, H * W, dtype=dtype, device=boxes.device)
    for index, group in masks.groups:
        if index.numel() and H and W:
            _paste_into(out, index, group, boxes[index], W, max_elements, fade_border)
    return out.view(masks.count, 1, H, W)


def _paste_into(
    out: Tensor,
    rows: Tensor,
    masks: Tensor,
    boxes: Tensor,
    W: int,
    max_elements: int,
    fade_border: bool,
) -> None:
    """Add the pasted ``masks`` (``R x 1 x M_h x M_w``) of ``boxes`` (``R x 4``) into the rows
    ``rows`` (``R`` int64) of ``out`` (``N x (H * W)`` zeros)."""
    H = out.shape[1] // W
    for chunk, values, win_rows, win_cols in window_values(
        masks.to(out.dtype), boxes, (H, W), max_elements, fade_border
    ):
        # Outside-window positions carry 0, so clamping their index to the image keeps them
        # harmless.
        pixel = win_rows.clamp(max=H - 1)[:, :, None] * W + win_cols.clamp(max=W - 1)[:, None, :]
        index = rows[chunk].to(torch.int64)[:, None, None] * (H * W) + pixel
        values = values.to(out.dtype)  # autocast may compute grid_sample in another dtype
        out.view(-1).scatter_add_(0, index.reshape(-1), values.reshape(-1))


def window_values(
    masks: Tensor,
    boxes: Tensor,
    image_size: Sequence[int],
    max_elements: int = 1 << 24,
    fade_border: bool = False,
):
    """The pasted values of each box's pixel window, a chunk of boxes at a time.

    Boxes are read in chunks whose windows are padded to the chunk's largest: so that little
    is padded, a chunk holds boxes whose window heights and widths round up to the same powers
    of two (a loop over those classes, not over boxes), and at most about ``max_elements``
    window pixels; a single window larger than that is read in bands of rows.

    Args:
        masks: ``R x 1 x M_h x M_w`` box-relative values (floating point).
        boxes: ``R x 4`` boxes in the pixels of an image of ``image_size`` ``(H, W)``.

    Yields:
        ``(chunk, values, rows, cols)``: ``chunk`` ``r`` int64 positions among the ``R`` boxes,
        ``values`` ``r x h x w`` (0 outside the box), ``rows`` ``r x h`` and ``cols`` ``r x w``
        the window's image pixel indices (positions past the box's window, padding, are past
        its end and may be past the image's).
    """
    H, W = int(image_size[0]), int(image_size[1])
    if masks.shape[0] == 0 or H == 0 or W == 0:
        return
    boxes = boxes.to(torch.float32)
    x_start, x_end = box_pixel_ranges(boxes, W, axis=0)
    y_start, y_end = box_pixel_ranges(boxes, H, axis=1)
    size_class = _log2_ceil(y_end - y_start) * 64 + _log2_ceil(x_end - x_start)
    classes, order = torch.sort(size_class, stable=True)
    counts = torch.unique_consecutive(classes, return_counts=True)[1].tolist()
    for members in order.split(counts):
        win_w = max(int((x_end[members] - x_start[members]).max()), 1)
        win_h = max(int((y_end[members] - y_start[members]).max()), 1)
        # a window larger than max_elements is read in bands of rows
        band = max(1, max_elements // win_w)
        for chunk in members.split(max(1, max_elements // (win_w * win_h))):
            cols = x_start[chunk, None] + torch.arange(win_w, device=boxes.device)  # r x w
            for first in range(0, win_h, band):
                steps = torch.arange(first, min(first + band, win_h), device=boxes.device)
                rows = y_start[chunk, None] + steps  # r x h
                inside = (cols < x_end[chunk, None], rows < y_end[chunk, None])
                grid = _window_grid(masks[chunk], boxes[chunk], cols, rows, *inside, fade_border)
                values = F.grid_sample(
                    masks[chunk], grid, padding_mode="zeros", align_corners=False
                )
                yield chunk, values[:, 0], rows, cols


def _log2_ceil(n: Tensor) -> Tensor:
    """``ceil(log2(n))`` of int64 ``n >= 0`` (0 for ``n <= 1``)."""
    return torch.ceil(torch.log2(n.clamp(min=1).to(torch.float64))).to(torch.int64)


def _window_grid(
    masks: Tensor,
    boxes: Tensor,
    cols: Tensor,
    rows: Tensor,
    col_ok: Tensor,
    row_ok: Tensor,
    fade_border: bool = False,
) -> Tensor:
    """``grid_sample`` grid ``r x h x w x 2`` reading each box's mask at the pixels of a window.

    ``cols`` (``r x w``) and ``rows`` (``r x h``) are image pixel indices, ``col_ok`` /
    ``row_ok`` whether each lies inside its box; pixels outside get a point far outside the mask.
    ``fade_border``: no clamping to the outer cell centres (zero padding reaches into the box).
    """
    r = masks.shape[0]
    win_h, win_w = rows.shape[1], cols.shape[1]
    width = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6)
    height = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
    M_h, M_w = masks.shape[-2:]
    # Box-relative centres, clamped to the mask's outer cell centres (border values near the box
    # edge), then as grid_sample coordinates in [-1, 1]; pixels outside the box are sent far
    # outside the mask, where zero padding makes them 0. All on r x w and r x h vectors.
    u = (cols.to(torch.float32) + 0.5 - boxes[:, 0:1]) / width[:, None]
    v = (rows.to(torch.float32) + 0.5 - boxes[:, 1:2]) / height[:, None]
    if not fade_border:
        u = u.clamp(0.5 / M_w, 1 - 0.5 / M_w)
        v = v.clamp(0.5 / M_h, 1 - 0.5 / M_h)
    u, v = 2 * u - 1, 2 * v - 1
    u = torch.where(col_ok, u, torch.full_like(u, -3.0)).to(masks.dtype)
    v = torch.where(row_ok, v, torch.full_like(v, -3.0)).to(masks.dtype)
    return torch.stack(
        [u[:, None, :].expand(r, win_h, win_w), v[:, :, None].expand(r, win_h, win_w)], dim=-1
    )
