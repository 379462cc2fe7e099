"""Resize rules the models share (detectron2's test-time ``ResizeShortestEdge``).

* :func:`shortest_edge_size`: the output size of detectron2's ``ResizeShortestEdge``.
* :func:`resize_uint8_bilinear`: the pixels detectron2 feeds its network. detectron2 resizes the
  8-bit image with PIL's bilinear filter (``PIL.Image.resize(..., BILINEAR)``: fixed-point
  weights of a triangle filter, widened when shrinking so that it antialiases, one axis after
  the other with a uint8 image in between). The resize here calls PIL itself, on the CPU, so the
  bytes are PIL's whatever its version (its order of the two passes is not the same for every
  pair of sizes: a re-implementation would have to follow each release).
* :func:`quantise_to_uint8`: how a float ``[0, 1]`` image becomes 8-bit for that resize,
  ``round(x * 255)`` clamped to ``[0, 255]`` (the exact bytes of an 8-bit photo read as
  ``value / 255``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["shortest_edge_size", "resize_uint8_bilinear", "quantise_to_uint8"]


def shortest_edge_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The size an ``height x width`` image is resized to for inference: the shorter side to
    ``min_size``, then both scaled down so that the longer is at most ``max_size`` (0: no
    limit), rounded to the nearest integer (detectron2's ``ResizeShortestEdge`` rule)."""
    scale = min_size / min(height, width)
    new_h, new_w = height * scale, width * scale
    if max_size and max(new_h, new_w) > max_size:
        shrink = max_size / max(new_h, new_w)
        new_h, new_w = new_h * shrink, new_w * shrink
    return int(new_h + 0.5), int(new_w + 0.5)


def quantise_to_uint8(image: Tensor) -> Tensor:
    """``round(x * 255)`` clamped to ``[0, 255]`` as uint8, same shape (float ``[0, 1]`` in)."""
    return (image * 255).round_().clamp_(0, 255).to(torch.uint8)


def resize_uint8_bilinear(image: Tensor, size: tuple[int, int]) -> Tensor:
    """PIL's ``Image.resize((W', H'), BILINEAR)`` of an RGB uint8 image, bit for bit.

    Args:
        image: ``3 x H x W`` uint8, any device (PIL runs on the CPU; the result comes back).
        size: ``(H', W')``.

    Returns:
        ``3 x H' x W'`` uint8 on ``image``'s device; ``image`` itself when the size does not
        change.
    """
    if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
        raise ValueError(
            f"resize_uint8_bilinear takes a 3 x H x W uint8 image, got {image.dtype} "
            f"of shape {tuple(image.shape)}"
        )
    new_h, new_w = (int(s) for s in size)
    if new_h < 1 or new_w < 1:
        raise ValueError(f"resize_uint8_bilinear: output size must be at least 1 x 1, got {size}")
    if (new_h, new_w) == tuple(image.shape[-2:]):
        return image
    from PIL import Image

    pixels = image.detach().permute(1, 2, 0).contiguous().cpu().numpy()
    resized = Image.fromarray(pixels).resize((new_w, new_h), Image.BILINEAR)
    out = torch.from_numpy(np.array(resized, dtype=np.uint8, copy=True)).permute(2, 0, 1)
    return out.contiguous().to(image.device)
