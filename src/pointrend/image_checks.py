"""The input rule both models enforce, with a one-line error for each way of breaking it.

A model takes RGB images as float tensors with values in ``[0, 1]`` and the model's dtype
(float32 unless the model was converted): one ``3 x H x W`` tensor per image for instance models,
an ``N x 3 x H x W`` batch for semantic models, with ``H, W >= 1`` and every value finite.
uint8 images (0-255), other float dtypes, 1- or 4-channel images, ``H x W x 3`` layouts and
empty images are refused with a message that says what was expected and how to convert.

Values are checked with a tolerance of ``RANGE_TOLERANCE`` (resampling rounds a little outside
``[0, 1]``). While tracing for export, compiling, or on the ``meta`` device only the dtype and
the shape are checked: value checks would be frozen into the graph, meta tensors have no values.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["check_image_tensor", "RANGE_TOLERANCE"]

RANGE_TOLERANCE = 1e-3


def _layout_problem(image: Tensor, batched: bool) -> str | None:
    """What is wrong with the shape of ``image`` (``None``: nothing)."""
    expected = "N x 3 x H x W" if batched else "3 x H x W"
    dims = 4 if batched else 3
    shape = tuple(image.shape)
    if image.dim() != dims:
        return f"must be {expected}, got shape {shape}"
    channels = image.shape[-3]
    if channels != 3:
        hint = ""
        if image.shape[-1] == 3:
            order = "0, 3, 1, 2" if batched else "2, 0, 1"
            hint = f" (it looks channels-last: use .permute({order}))"
        elif channels == 4:
            hint = " (RGBA: drop the alpha channel, image[..., :3, :, :])"
        elif channels == 1:
            hint = " (grayscale: repeat it, .expand(3, H, W))"
        return f"must be {expected} RGB, got shape {shape}{hint}"
    if image.shape[-1] == 0 or image.shape[-2] == 0:
        return f"is empty: shape {shape}, H and W must be at least 1"
    return None


def check_image_tensor(
    image: Tensor, name: str = "image", dtype: torch.dtype = torch.float32, batched: bool = False
) -> None:
    """Raise a one-line ``ValueError`` naming ``name`` if ``image`` breaks the input rule.

    Args:
        image: ``3 x H x W`` (or ``N x 3 x H x W`` when ``batched``).
        name: how the message names the input, e.g. ``"images[2]"``.
        dtype: the dtype the model computes in.
    """
    if not torch.is_tensor(image):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
    if image.dtype != dtype:
        if image.dtype == torch.uint8:
            fix = f"use image.to(torch.{str(dtype)[6:]}) / 255"
        else:
            fix = f"use image.to(torch.{str(dtype)[6:]})"
        raise ValueError(f"{name} must be {dtype} with values in [0, 1], got {image.dtype}: {fix}")
    problem = _layout_problem(image, batched)
    if problem:
        raise ValueError(f"{name} {problem}")
    if image.is_meta or torch.jit.is_tracing() or torch.compiler.is_compiling():
        return  # no values to look at, or checks that would be frozen into a graph
    if not bool(torch.isfinite(image).all()):
        raise ValueError(f"{name} holds NaN or infinite values: images must be finite")
    lo, hi = float(image.min()), float(image.max())
    if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        hint = " (0-255 values: divide by 255)" if hi > 1.5 else ""
        raise ValueError(
            f"{name} has values in [{lo:.3g}, {hi:.3g}], expected [0, 1]{hint}; the model "
            f"normalises inside, do not subtract a mean"
        )
