"""Shapes with boundary detail a 28x28 mask cannot hold, rendered exactly.

Every shape is a membership test ``inside(x, y) -> bool`` on arrays of image coordinates (pixels,
pixel ``i`` spans ``[i, i + 1)``). Ground truth is rendered by supersampling: each pixel is
tested at ``ss x ss`` sub-pixel centres, the coverage is the fraction inside, and the mask is
``coverage >= 0.5``. Appearance uses the coverage itself (anti-aliased edges).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

__all__ = ["CATEGORIES", "Shape", "random_shape", "scaled", "coverage"]

# contiguous label -> name (0 is background for semantic data)
CATEGORIES = ["star", "gear", "ring", "crescent", "bar", "blob", "polygon"]

Inside = Callable[[np.ndarray, np.ndarray], np.ndarray]


@dataclass
class Shape:
    """A shape: its category (1-based), membership test and bounding box ``(x0, y0, x1, y1)``."""

    label: int
    inside: Inside
    bbox: tuple[float, float, float, float]


def _polar(x, y, cx, cy, rotation):
    dx, dy = x - cx, y - cy
    return np.hypot(dx, dy), np.arctan2(dy, dx) + rotation


def _star(rng, cx, cy, r):
    n = int(rng.integers(5, 13))
    inner = r * rng.uniform(0.35, 0.6)
    rot = rng.uniform(0, 2 * math.pi)

    def inside(x, y):
        d, a = _polar(x, y, cx, cy, rot)
        t = (a * n / (2 * math.pi)) % 1.0
        return d <= inner + (r - inner) * np.abs(2 * t - 1)

    return inside


def _gear(rng, cx, cy, r):
    n = int(rng.integers(8, 21))
    root = r * rng.uniform(0.7, 0.85)
    duty = rng.uniform(0.35, 0.55)
    rot = rng.uniform(0, 2 * math.pi)
    hole = root * rng.uniform(0.0, 0.4)

    def inside(x, y):
        d, a = _polar(x, y, cx, cy, rot)
        t = (a * n / (2 * math.pi)) % 1.0
        return (d <= np.where(t < duty, r, root)) & (d >= hole)

    return inside


def _ring(rng, cx, cy, r):
    inner = r * rng.uniform(0.55, 0.85)

    def inside(x, y):
        d = np.hypot(x - cx, y - cy)
        return (d <= r) & (d >= inner)

    return inside


def _crescent(rng, cx, cy, r):
    angle = rng.uniform(0, 2 * math.pi)
    shift = r * rng.uniform(0.25, 0.55)
    ox, oy = cx + shift * math.cos(angle), cy + shift * math.sin(angle)
    r2 = r * rng.uniform(0.8, 1.0)

    def inside(x, y):
        return (np.hypot(x - cx, y - cy) <= r) & (np.hypot(x - ox, y - oy) > r2)

    return inside


def _bar(rng, cx, cy, r, image_size):
    angle = rng.uniform(0, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    half_width = max(0.8, rng.uniform(0.004, 0.02) * image_size)
    amplitude = r * rng.uniform(0.0, 0.25)  # thin straight bars and wavy strokes
    freq = rng.uniform(1.0, 3.0) * math.pi / r

    def inside(x, y):
        u = (x - cx) * c + (y - cy) * s
        v = -(x - cx) * s + (y - cy) * c
        return (np.abs(u) <= r) & (np.abs(v - amplitude * np.sin(freq * u)) <= half_width)

    return inside


def _blob(rng, cx, cy, r):
    ks = np.arange(2, 6)
    amps = rng.uniform(0.0, 0.12, size=ks.shape)
    phases = rng.uniform(0, 2 * math.pi, size=ks.shape)
    scale = 1.0 / (1.0 + amps.sum())

    def inside(x, y):
        d, a = _polar(x, y, cx, cy, 0.0)
        wobble = (amps[:, None] * np.sin(ks[:, None] * a.reshape(1, -1) + phases[:, None])).sum(0)
        return d <= r * scale * (1.0 + wobble.reshape(d.shape))

    return inside


def _polygon(rng, cx, cy, r):
    n = int(rng.integers(3, 9))
    angles = np.sort(rng.uniform(0, 2 * math.pi, size=n))
    angles = (
        angles
        if np.diff(np.r_[angles, angles[0] + 2 * math.pi]).max() < math.pi
        else (np.linspace(0, 2 * math.pi, n, endpoint=False) + rng.uniform(0, 2 * math.pi))
    )
    px, py = cx + r * np.cos(angles), cy + r * np.sin(angles)  # convex: vertices on a circle
    ex, ey = np.roll(px, -1) - px, np.roll(py, -1) - py

    def inside(x, y):
        result = np.ones(x.shape, dtype=bool)
        for i in range(n):  # one half-plane per edge (a handful), vectorised over pixels
            result &= ex[i] * (y - py[i]) - ey[i] * (x - px[i]) >= 0
        return result

    return inside


def random_shape(rng: np.random.Generator, height: int, width: int) -> Shape:
    """A random shape of a random category, from small to image-filling, in an image."""
    size = min(height, width)
    label = int(rng.integers(1, len(CATEGORIES) + 1))
    r = size * float(np.exp(rng.uniform(math.log(0.07), math.log(0.45))))
    cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
    name = CATEGORIES[label - 1]
    if name == "bar":
        inside = _bar(rng, cx, cy, r, size)
    else:
        inside = {
            "star": _star,
            "gear": _gear,
            "ring": _ring,
            "crescent": _crescent,
            "blob": _blob,
            "polygon": _polygon,
        }[name](rng, cx, cy, r)
    bbox = (max(cx - r, 0.0), max(cy - r, 0.0), min(cx + r, width), min(cy + r, height))
    return Shape(label, inside, bbox)


def scaled(shape: Shape, sy: float, sx: float) -> Shape:
    """The same shape in an image ``sy`` times as tall and ``sx`` times as wide: image point
    ``(x, y)`` is inside iff ``(x / sx, y / sy)`` is inside ``shape`` (exact, not resampled)."""

    def inside(x, y):
        return shape.inside(x / sx, y / sy)

    x0, y0, x1, y1 = shape.bbox
    return Shape(shape.label, inside, (x0 * sx, y0 * sy, x1 * sx, y1 * sy))


def coverage(shape: Shape, height: int, width: int, ss: int = 4) -> np.ndarray:
    """Fraction of each pixel inside ``shape`` (``H x W`` float32), from ``ss x ss`` samples.

    Only the pixels of the shape's bounding box are tested.
    """
    out = np.zeros((height, width), dtype=np.float32)
    x0, y0 = int(math.floor(shape.bbox[0])), int(math.floor(shape.bbox[1]))
    x1, y1 = int(math.ceil(shape.bbox[2])), int(math.ceil(shape.bbox[3]))
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 <= x0 or y1 <= y0:
        return out
    offsets = (np.arange(ss) + 0.5) / ss
    xs = (np.arange(x0, x1)[:, None] + offsets[None, :]).reshape(-1)
    ys = (np.arange(y0, y1)[:, None] + offsets[None, :]).reshape(-1)
    grid_x, grid_y = np.meshgrid(xs, ys)
    hits = shape.inside(grid_x, grid_y).astype(np.float32)
    hits = hits.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3))
    out[y0:y1, x0:x1] = hits
    return out
