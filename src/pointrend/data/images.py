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
* Multi-frame files (GIF, TIFF stacks): the first frame.
* EXIF orientation (a phone's portrait photo is stored sideways with ``Orientation`` 6 or 8) is
  applied, as detectron2's ``read_image`` and ``torchvision.io.decode_image(...,
  apply_exif_orientation=True)`` do: the image segmented is the image a viewer shows, and masks
  and boxes are in that orientation. ``exif_orientation=False`` uses the pixels as stored.
  Data readers pass the size their annotation gives (``annotated_size``): an annotation whose
  width and height match only the stored orientation (made by a tool that ignored the tag)
  gets the stored pixels, one that matches the shown orientation (or both) gets them turned;
  :func:`pair_size_problem` and the COCO reader's header check accept either orientation and
  refuse any other size.

:func:`read_pixels` decodes without converting to float: ``uint8`` for 8-bit files (a quarter
of the memory of float32; ``pointrend predict`` shrinks large photos before converting), float32
otherwise; :func:`to_float_image` finishes the conversion.

Refusals raise :class:`ImageError` (a ``ValueError``) naming the file, its mode and what to do.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "ImageError",
    "read_image",
    "read_pixels",
    "to_float_image",
    "resize_to_float",
    "image_size",
    "size_matches",
    "pair_size_problem",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")

SIXTEEN_BIT = 65535.0


class ImageError(ValueError):
    """An image file that cannot be read or whose pixels cannot be scaled to ``[0, 1]``."""


def _gray_to_float(array: np.ndarray, mode: str, path: Path) -> np.ndarray:
    """``H x W`` pixels of a single-channel mode beyond 8 bits -> float32 in ``[0, 1]``."""
    if mode.startswith("I;16"):
        return array.astype(np.float32) / SIXTEEN_BIT
    values = array.astype(np.float64)
    if mode == "F" and not np.isfinite(values).all():
        raise ImageError(f"image {path}: float pixels include NaN or infinity")
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if mode == "I":
        if lo < 0 or hi > SIXTEEN_BIT:
            raise ImageError(
                f"image {path}: 32-bit integer pixels in [{lo:g}, {hi:g}] do not fit 16 bits; "
                f"save it as an 8- or 16-bit image"
            )
        return (values / SIXTEEN_BIT).astype(np.float32)
    if lo < 0 or hi > 1:
        raise ImageError(
            f"image {path}: float pixels in [{lo:g}, {hi:g}] are outside [0, 1]; "
            f"scale them to [0, 1] (or save an 8- or 16-bit image)"
        )
    return values.astype(np.float32)


def _to_rgb(im: Image.Image, path: Path) -> np.ndarray:
    """``H x W x 3``: uint8 for 8-bit modes, float32 in ``[0, 1]`` for deeper ones (module
    rules), of an open Pillow image."""
    if im.mode in ("F", "I") or im.mode.startswith("I;16"):
        gray = _gray_to_float(np.asarray(im), im.mode, path)
        return np.repeat(gray[..., None], 3, axis=2)
    return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


_SWAPS_SIDES = (5, 6, 7, 8)  # EXIF orientations that turn the image by 90 degrees
_ORIENTATION_TAG = 0x0112


def _orientation(im: Image.Image) -> int:
    """The EXIF orientation tag of an open image (1, upright, when absent or unreadable)."""
    try:
        return int(im.getexif().get(_ORIENTATION_TAG, 1))
    except (ValueError, TypeError, OSError, SyntaxError):
        return 1


def read_pixels(
    path: str | Path, exif_orientation: bool = True, annotated_size=None
) -> torch.Tensor:
    """An image file's ``3 x H x W`` RGB pixels: uint8 for 8-bit files, float32 in ``[0, 1]``
    otherwise (rules: module doc). ``annotated_size``: ``(H, W)`` the annotation gives, which
    picks the orientation when it matches only the stored one. The tensor may be a
    channels-last view (``H x W x 3`` in memory): no copy is made to reorder it.

    Raises:
        ImageError: the file is missing, not an image, or its pixels cannot be scaled.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            turned = _turn_lazily(im, exif_orientation, annotated_size)
            if im.format == "JPEG" and im.mode in ("RGB", "L"):
                pixels = _decode_jpeg(path, turned)
                if pixels is not None:
                    return pixels
            array = _to_rgb(ImageOps.exif_transpose(im) if turned else im, path)
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"cannot read image {path}: {err}") from err
    return torch.from_numpy(np.require(array, requirements=["W"])).permute(2, 0, 1)


def _turn_lazily(im: Image.Image, exif_orientation: bool, annotated_size) -> bool:
    """Whether the image is to be turned as its EXIF orientation says (module rules)."""
    orientation = _orientation(im) if exif_orientation else 1
    if orientation == 1:
        return False
    stored = (im.size[1], im.size[0])
    if annotated_size is not None and orientation in _SWAPS_SIDES:
        return not (tuple(annotated_size) == stored and stored != stored[::-1])
    return True


def _decode_jpeg(path: Path, turned: bool) -> torch.Tensor | None:
    """``3 x H x W`` uint8 of a JPEG decoded by torchvision (libjpeg-turbo, the pixels Pillow
    gives, in about half the time), EXIF orientation applied when ``turned``; ``None`` when
    torchvision cannot decode it (Pillow then does)."""
    try:
        with warnings.catch_warnings():  # torchvision 0.29 announces TorchCodec's decoders
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg, read_file

            data = read_file(str(path))
            return decode_jpeg(data, mode=ImageReadMode.RGB, apply_exif_orientation=turned)
    except (ImportError, RuntimeError, ValueError):
        return None


def to_float_image(pixels: torch.Tensor) -> torch.Tensor:
    """:func:`read_pixels`' result as float32 in ``[0, 1]`` (``uint8 / 255``), same shape."""
    if pixels.dtype == torch.uint8:
        return pixels.to(torch.float32).div_(255.0)
    return pixels.to(torch.float32)


def resize_to_float(
    pixels: torch.Tensor, size, antialias: bool = False, rows_per_strip: int = 256
) -> torch.Tensor:
    """``3 x H x W`` pixels (uint8 or float) -> ``3 x h x w`` float32 in ``[0, 1]`` at ``size``
    ``(h, w)``: ``F.interpolate(to_float_image(pixels)[None], size, mode="bilinear",
    align_corners=False, antialias=antialias)`` computed without a full-size float copy.

    Bilinear interpolation is separable: the width is resized first, ``rows_per_strip`` rows at
    a time (the rows kept as they are), then the height of the narrow float image; the values
    are those of the one-call interpolation up to float rounding."""
    C, H, W = pixels.shape
    h, w = int(size[0]), int(size[1])
    narrow = torch.empty(C, H, w, dtype=torch.float32)
    for start in range(0, H, rows_per_strip):
        strip = to_float_image(pixels[:, start : start + rows_per_strip])
        narrow[:, start : start + strip.shape[1]] = F.interpolate(
            strip[None], (strip.shape[1], w), mode="bilinear", antialias=antialias
        )[0]
    return F.interpolate(narrow[None], (h, w), mode="bilinear", antialias=antialias)[0]


def read_image(
    path: str | Path, exif_orientation: bool = True, annotated_size=None
) -> torch.Tensor:
    """An image file as a ``3 x H x W`` float32 RGB tensor in ``[0, 1]`` (rules: module doc;
    arguments: :func:`read_pixels`).

    Raises:
        ImageError: the file is missing, not an image, or its pixels cannot be scaled.
    """
    # contiguous 3 x H x W, as the datasets' transforms have always had it
    return to_float_image(read_pixels(path, exif_orientation, annotated_size).contiguous())


def image_size(path: str | Path, exif_orientation: bool = True) -> tuple[int, int]:
    """``(H, W)`` of an image file from its header (the pixels are not decoded), as shown (EXIF
    orientation applied) or, with ``exif_orientation=False``, as stored.

    Raises:
        ImageError: the file is missing or not an image Pillow can open.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
            turned = exif_orientation and _orientation(im) in _SWAPS_SIDES
    except (UnidentifiedImageError, OSError, ValueError) as err:
        reason = "not found" if not path.exists() else str(err)
        raise ImageError(f"cannot read image {path}: {reason}") from err
    return (width, height) if turned else (height, width)


def size_matches(path: Path, size) -> bool:
    """Whether ``(H, W)`` ``size`` is the image's size as shown or as stored (see
    ``annotated_size``); raises :class:`ImageError` like :func:`image_size`."""
    size = tuple(size)
    return size in (image_size(path), image_size(path, exif_orientation=False))


def pair_size_problem(image_path: Path, label_path: Path) -> str | None:
    """Why an image and its label image cannot be used together, from the file headers:
    one is unreadable, or their sizes differ (``None``: fine)."""
    try:
        image_hw, label_hw = image_size(image_path), image_size(label_path)
        if size_matches(image_path, label_hw):
            return None
    except ImageError as err:
        return str(err)
    if image_hw != label_hw:
        return f"{label_path} is {label_hw} (H x W) but its image {image_path} is {image_hw}"
    return None
