"""What changes when a model is traced for export (``torch.jit.trace``, the ONNX exporter).

Tracing records one run of the Python code as a graph, so the code must avoid what the graph
cannot keep: ``int()`` of a size (the traced input's value would be frozen), branches on the
number of boxes, in-place writes the exporter cannot express. Everything that differs under
tracing lives in this module. The core (``points.py``, ``render.py``, ``head.py``) asks its
questions through the functions here (:func:`as_size`, :func:`is_zero`, ...) and never tests for
tracing itself; the instance transform, paste and RoIAlign and the input checks ask
:func:`is_tracing` at the one line where they hand over to a function here.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops.poolers import _onnx_merge_levels

__all__ = [
    "is_tracing",
    "is_recording",
    "as_size",
    "any_symbolic",
    "capped_count",
    "is_zero",
    "may_be_zero",
    "sizes_tensor",
    "merge_roi_levels",
    "check_no_test_resize",
    "resize_to_limits",
    "whole_image_windows",
]


def is_tracing() -> bool:
    """True while ``torch.jit.trace`` (and so the TorchScript-based ONNX exporter) records."""
    return torch.jit.is_tracing()


# Core


def is_recording() -> bool:
    """True while autograd or a tracer records the operations: tensors they saw must then not be
    written in place, and the plain modules (not the fused inference path) must run."""
    return torch.is_grad_enabled() or is_tracing()


def as_size(value) -> int | Tensor:
    """``int(value)`` of a size read from a shape; under tracing a traced size stays the 0-dim
    tensor it is (``int()`` would freeze it to the traced input's value, so an exported model
    follows its input size)."""
    return value if is_tracing() and isinstance(value, Tensor) else int(value)


def any_symbolic(sizes: list[tuple]) -> bool:
    """Whether any of ``sizes`` (``(H, W)`` pairs) is a traced size, e.g. of a semantic model
    exported for any image size (eager sizes, and an instance model's mask sizes, are numbers)."""
    return any(isinstance(v, Tensor) for size in sizes for v in size)


def capped_count(count, cap: int) -> int | Tensor:
    """``min(count, cap)``, symbolic when ``count`` is a traced size (Python's ``min`` would make
    the comparison a constant of the traced input: a model exported at one image size would pick
    the wrong number of points at another)."""
    return torch.clamp(count, max=cap) if isinstance(count, Tensor) else min(count, cap)


def is_zero(count: int) -> bool:
    """``count == 0`` for a count read from a shape (e.g. of boxes); always False under tracing,
    where the graph must not branch on it (an exported model takes any number of boxes)."""
    return count == 0 and not is_tracing()


def may_be_zero(count: int) -> bool:
    """``count == 0``, or under tracing always True: the traced graph may run with no boxes,
    so it must take the path that handles them."""
    return is_tracing() or count == 0


def sizes_tensor(sizes: list, device: torch.device) -> Tensor:
    """Sizes read from shapes (e.g. each image's number of boxes) as one int64 tensor; traced
    sizes (0-dim tensors) are stacked, so an exported model takes any number of detections."""
    if is_tracing():
        return torch.stack(sizes).to(device)
    return torch.tensor(sizes, device=device)


def merge_roi_levels(levels: Tensor, pooled: list[Tensor]) -> Tensor:
    """Each box's RoIAlign result from its level's (``pooled[l]``: the boxes with ``levels == l``,
    in order) -> ``R x C x S x S`` in box order, without the in-place index writes the exporter
    cannot express (torchvision's merge for ONNX)."""
    return _onnx_merge_levels(levels, pooled)


def check_no_test_resize(test_min_size: int) -> None:
    """Refuse to trace a semantic model that resizes its test images (the traced graph would keep
    the one resized size of the traced input)."""
    if test_min_size and is_tracing():
        raise RuntimeError(
            f"a model with test_min_size={test_min_size} cannot be exported (the traced "
            "graph would keep one resized size): export it with "
            "model.options.test_min_size=0 and resize the images before"
        )


# Instance models


def resize_to_limits(
    image: torch.Tensor, min_size: float, max_size: int, round_half_up: bool = False
) -> torch.Tensor:
    """The instance models' test resize, traced: ``3 x H x W`` -> ``3 x H' x W'``, the short side
    to ``min_size`` unless the long one would exceed ``max_size``, then bilinear to that size.

    Each side is ``floor(side * scale)`` (torchvision's rule), or with ``round_half_up`` rounded
    to the nearest pixel (detectron2's ``ResizeShortestEdge``; traced, it resamples the
    normalised float image without antialiasing, which the ONNX exporter lacks, so an exported
    model's pixels differ a little from eager's 8-bit PIL resize).

    Traced, torchvision's resize takes a float32 scale and lets the exported ``Resize`` round
    the output size, which for shrunk images can come out a pixel smaller than in PyTorch
    (e.g. 200 x 150 -> 160 x 119 instead of 160 x 120), and then every pixel is resampled
    differently. Here the size is computed in float64, as Python computes it in eager mode.
    """
    # 1-d float64 throughout: the exporter casts 0-dim (scalar) arithmetic to float32.
    side = torch.stack(list(image.shape[-2:])).to(torch.float64)  # (H, W)
    limits = torch.tensor([min_size, max_size], dtype=torch.float64)
    scale = (limits / torch.sort(side).values).amin(0, keepdim=True)
    size = torch.floor(side * scale + (0.5 if round_half_up else 0.0)).to(torch.int64)
    return torch.nn.functional.interpolate(
        image[None], size=(size[0], size[1]), mode="bilinear", align_corners=False
    )[0]


def whole_image_windows(
    x_bounds: tuple[torch.Tensor, torch.Tensor],
    y_bounds: tuple[torch.Tensor, torch.Tensor],
    image_size: tuple,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pixel windows of the traced mask paste: the whole image for every box.

    The eager paste reads each box's own window, sized in Python; traced, no size may be read
    into Python (the image size and the number of boxes stay symbolic), so every box reads all
    ``H x W`` pixels, the size of the output.

    Args:
        x_bounds, y_bounds: ``(start, end)``, each ``R``: pixel ``i`` is inside a box along
            that axis iff ``start <= i < end`` (``pointrend.instance.paste.box_pixel_bounds``).
        image_size: ``(H, W)`` of the image.

    Returns:
        ``(cols, rows, col_ok, row_ok)``: ``R x W`` and ``R x H`` pixel indices and whether each
        lies inside its box.
    """
    R = x_bounds[0].shape[0]
    device = x_bounds[0].device
    cols = torch.arange(image_size[1], device=device)[None, :].expand(R, -1)  # R x W
    rows = torch.arange(image_size[0], device=device)[None, :].expand(R, -1)  # R x H
    col_ok = (cols >= x_bounds[0][:, None]) & (cols < x_bounds[1][:, None])
    row_ok = (rows >= y_bounds[0][:, None]) & (rows < y_bounds[1][:, None])
    return cols, rows, col_ok, row_ok
