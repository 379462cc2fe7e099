"""Reading image files: the one reader of ``pointrend predict`` and every dataset on disk.

:func:`read_image` returns a ``3 x H x W`` float32 RGB tensor in ``[0, 1]``, scaled by the
range of the file's pixel type, so that no real image becomes a constant one:

* 8-bit images (RGB, grayscale ``L``, palette ``P``, ``CMYK``, ...): ``/ 255``; grayscale is
  repeated on the three channels, a palette is looked up.
* An alpha channel (``RGBA``, ``LA``, ``PA``) is dropped: the colours are used as stored.
* 16-bit grayscale (``I;16``, ``I;16B``, ...): ``/ 65535``. 16-bit RGB PNGs are decoded by
  Pillow to their high byte (8 bits per channel), then ``/ 255``.
* 32-bit integer grayscale (``I``): ``/ 65535`` when every value lies in ``[0, 65535]`` (16-bit
  data stored in 32 bits); otherwise refused.
* 32-bit float grayscale (``F``): used as is when every value lies in ``[0, 1]``; refused
  otherwise (and when a value is not finite).
* 1-bit (``1``): black 0, white 1.
* Multi-frame files (GIF, TIFF stacks): the first frame. EXIF orientation is not applied:
  pixels are used as stored, as the sizes of annotation files count them.

Refusals raise :class:`ImageError` (a ``ValueError``) naming the file, its mode and what to do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

__all__ = ["ImageError", "read_image", "image_size", "pair_size_problem", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")

_SIXTEEN_BIT = 65535.0


class ImageError(ValueError):
    """An image file that cannot be read or whose pixels cannot be scaled to ``[0, 1]``."""


def _gray_to_float(array: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """``H x W`` pixels of a single-channel mode beyond 8 bits -> float32 in ``[0, 1]``."""
    if mode.startswith("I;16"):
        return array.astype(np.float32) / _SIXTEEN_BIT
    values = array.astype(np.float64)
    if mode == "F" and not np.isfinite(values).all():
        raise ImageError(f"image {path}: float pixels include NaN or infinity")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "I":
        if lo < 0 or hi > _SIXTEEN_BIT:
            raise ImageError(
                f"image {path}: 32-bit integer pixels in [{lo:g}, {hi:g}] do not fit 16 bits; "
                f"save it as an 8- or 16-bit image"
            )
        return (values / _SIXTEEN_BIT).astype(np.float32)
    if lo < 0 or hi > 1:
        raise ImageError(
            f"image {path}: float pixels in [{lo:g}, {hi:g}] are outside [0, 1]; "
            f"scale them to [0, 1] (or save an 8- or 16-bit image)"
        )
    return values.astype(np.float32)


def _to_rgb_float(im: Image.Image, path: Path) -> np.ndarray:
    """``H x W x 3`` float32 in ``[0, 1]`` for an open Pillow image (see the module rules)."""
    if im.mode in ("F", "I") or im.mode.startswith("I;16"):
        gray = _gray_to_float(np.asarray(im), im.mode, path)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as a ``3 x H x W`` float32 RGB tensor in ``[0, 1]`` (rules: module doc).

    Raises:
        ImageError: the file is missing, not an image, or its pixels cannot be scaled.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            array = _to_rgb_float(im, path)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageError(f"cannot read image {path}: {err}") from err
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (the pixels are not decoded).

    Raises:
        ImageError: the file is missing or not an image Pillow can open.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
    except (UnidentifiedImageError, OSError, ValueError) as err:
        reason = "not found" if not path.exists() else str(err)
        raise ImageError(f"cannot read image {path}: {reason}") from err
    return height, width


def pair_size_problem(image_path: Path, label_path: Path) -> str | None:
    """Why an image and its label image cannot be used together, from the file headers:
    one is unreadable, or their sizes differ (``None``: fine)."""
    try:
        image_hw, label_hw = image_size(image_path), image_size(label_path)
    except ImageError as err:
        return str(err)
    if image_hw != label_hw:
        return f"{label_path} is {label_hw} (H x W) but its image {image_path} is {image_hw}"
    return None
