"""The input rule both models enforce, with a one-line error for each way of breaking it.

A model takes RGB images as floating-point tensors (float32, float16, bfloat16 or float64) with
values in ``[0, 1]``: one ``3 x H x W`` tensor per image for instance models, an
``N x 3 x H x W`` batch for semantic models, with ``H, W >= 1`` and every value finite. The
model casts them to its own dtype (:func:`as_model_dtype`: float32, or what ``model.half()`` /
``model.to(torch.bfloat16)`` made it), so a float16 batch feeds a float32 model under autocast
and float32 images feed a half model. uint8 images (0-255), integer dtypes, 1- or 4-channel
images, ``H x W x 3`` layouts and empty images are refused with a message that says what was
expected and how to convert.

Values are checked with a tolerance of ``RANGE_TOLERANCE`` (resampling rounds a little outside
``[0, 1]``), all images of a call at once (one host-device synchronisation). While tracing for
export, compiling, or on the ``meta`` device only the dtype and the shape are checked: value
checks would be frozen into the graph, meta tensors have no values.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ._tracing import is_tracing

__all__ = ["check_image_tensor", "check_images", "as_model_dtype", "RANGE_TOLERANCE"]

RANGE_TOLERANCE = 1e-3
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


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


def _dtype_problem(image: Tensor) -> str | None:
    if image.dtype in FLOAT_DTYPES:
        return None
    fix = "use image.float() / 255" if image.dtype == torch.uint8 else "use image.float()"
    return f"must be floating point with values in [0, 1], got {image.dtype}: {fix}"


def _skip_values(image: Tensor) -> bool:
    return image.is_meta or is_tracing() or torch.compiler.is_compiling()


def check_images(images: Sequence[Tensor], names: Sequence[str], batched: bool = False) -> None:
    """Raise a one-line ``ValueError`` naming the first of ``images`` that breaks the input rule.

    Args:
        images: each ``3 x H x W`` (or ``N x 3 x H x W`` when ``batched``).
        names: how the message names each input, e.g. ``"images[2]"``.
    """
    for image, name in zip(images, names):
        if not torch.is_tensor(image):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(image).__name__}")
        problem = _dtype_problem(image) or _layout_problem(image, batched)
        if problem:
            raise ValueError(f"{name} {problem}")
    checked = [(x, n) for x, n in zip(images, names) if not _skip_values(x)]
    if not checked:
        return
    ranges = torch.stack([torch.stack(torch.aminmax(x.detach())).float() for x, _ in checked])
    for (lo, hi), (_, name) in zip(ranges.tolist(), checked):  # the one synchronisation
        if lo != lo or hi != hi or abs(lo) == float("inf") or abs(hi) == float("inf"):
            raise ValueError(f"{name} holds NaN or infinite values: images must be finite")
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            hint = " (0-255 values: divide by 255)" if hi > 1.5 else ""
            raise ValueError(
                f"{name} has values in [{lo:.3g}, {hi:.3g}], expected [0, 1]{hint}; the model "
                f"normalises inside, do not subtract a mean"
            )


def check_image_tensor(image: Tensor, name: str = "image", batched: bool = False) -> None:
    """:func:`check_images` for one input."""
    check_images([image], [name], batched)


def as_model_dtype(image: Tensor, dtype: torch.dtype) -> Tensor:
    """``image`` in the model's floating dtype (no copy when it is already)."""
    return image if image.dtype == dtype else image.to(dtype)
