"""Resize rules the models share (detectron2's test-time ``ResizeShortestEdge``)."""

from __future__ import annotations

__all__ = ["shortest_edge_size"]


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
