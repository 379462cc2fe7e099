"""Synthetic high-resolution segmentation data, generated deterministically from a seed.

Each image ``index`` of a dataset with seed ``seed`` is drawn from its own
``numpy.random.default_rng([seed, index])``, so any image can be generated alone, in any order,
and the same seed always gives the same pixels. Objects (stars, gears, rings, crescents, thin
bars and strokes, blobs, polygons) overlap and occlude each other on textured, noisy
backgrounds; instance masks are the visible parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .shapes import CATEGORIES, coverage, random_shape, scaled

__all__ = [
    "SyntheticSample",
    "render_sample",
    "SyntheticInstanceDataset",
    "SyntheticSemanticDataset",
    "SEMANTIC_CLASSES",
]

SEMANTIC_CLASSES = ["background", *CATEGORIES]
MIN_VISIBLE_PIXELS = 24


@dataclass
class SyntheticSample:
    """One image: ``image`` ``H x W x 3`` uint8, ``masks`` ``N x H x W`` bool (visible parts,
    bottom to top), ``labels`` ``N`` int64 in ``1..len(CATEGORIES)``."""

    image: np.ndarray
    masks: np.ndarray
    labels: np.ndarray

    def label_map(self) -> np.ndarray:
        """``H x W`` int64 semantic labels (0 = background; the visible object's category)."""
        out = np.zeros(self.image.shape[:2], dtype=np.int64)
        for mask, label in zip(self.masks, self.labels):
            out[mask] = label
        return out


def _smooth_noise(rng: np.random.Generator, height: int, width: int, waves: int = 6) -> np.ndarray:
    """Low-frequency texture in ``[-1, 1]``: a sum of random plane waves (``H x W``)."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.zeros((height, width), dtype=np.float32)
    for _ in range(waves):
        fx, fy = rng.normal(0, 0.08, size=2)
        out += np.sin(fx * xs + fy * ys + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    return out / waves


def _texture(rng, height, width, base) -> np.ndarray:
    """``H x W x 3`` float colours around ``base`` with a random texture and noise."""
    colour = np.asarray(base, dtype=np.float32)[None, None, :]
    other = rng.uniform(0, 255, size=3).astype(np.float32)[None, None, :]
    t = _smooth_noise(rng, height, width)[..., None] * rng.uniform(0.2, 0.6)
    return colour * (1 - np.abs(t)) + other * np.abs(t)


def render_sample(
    index: int,
    height: int,
    width: int | None = None,
    seed: int = 0,
    mask_size: tuple[int, int] | None = None,
) -> SyntheticSample:
    """Generate image ``index`` of the synthetic dataset with ``seed``.

    With ``mask_size = (H, W)`` the image is still ``height x width`` but the masks are the same
    objects rendered exactly at ``H x W`` (the scene's shapes scaled by ``H / height`` and
    ``W / width``, each pixel supersampled: exact ground truth at another size, not resampled).
    """
    width = height if width is None else width
    rng = np.random.default_rng([seed, index])
    image = _texture(rng, height, width, rng.uniform(40, 215, size=3))
    count = int(rng.integers(2, 7))
    shapes, fractions = [], []
    for _ in range(count):
        shape = random_shape(rng, height, width)
        cover = coverage(shape, height, width)
        if cover.sum() < MIN_VISIBLE_PIXELS:
            continue
        paint = _texture(rng, height, width, rng.uniform(0, 255, size=3))
        alpha = cover[..., None]
        image = image * (1 - alpha) + paint * alpha
        fractions.append(cover)
        shapes.append(shape)
    image += rng.normal(0, rng.uniform(4, 14), size=image.shape).astype(np.float32)
    image = np.clip(image, 0, 255).astype(np.uint8)

    masks = _visible_parts(fractions, height, width)
    keep = masks.reshape(len(masks), -1).sum(1) >= MIN_VISIBLE_PIXELS
    if mask_size is not None:
        h, w = mask_size
        fine = [coverage(scaled(s, h / height, w / width), h, w) for s in shapes]
        masks = _visible_parts(fine, h, w)
    labels = np.asarray([s.label for s in shapes], dtype=np.int64)
    return SyntheticSample(image, masks[keep], labels[keep])


def _visible_parts(fractions: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """``N x H x W`` bool: each shape's mask (coverage >= 0.5, bottom to top) less what the
    shapes above it cover."""
    masks = np.stack(fractions) >= 0.5 if fractions else np.zeros((0, height, width), dtype=bool)
    covered_above = np.zeros((height, width), dtype=bool)
    for i in range(len(masks) - 1, -1, -1):
        full = masks[i].copy()
        masks[i] &= ~covered_above
        covered_above |= full
    return masks


def _image_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image).permute(2, 0, 1).float().div_(255)


class SyntheticInstanceDataset(Dataset):
    """Torchvision-style instance data: ``(image 3 x H x W float in [0, 1], target)``.

    ``target`` has ``boxes`` (``N x 4`` XYXY float32, tight around the visible mask),
    ``labels`` (``N`` int64, 1-based: ``CATEGORIES[label - 1]``), ``masks`` (``N x H x W``
    uint8), ``image_id`` (int). ``transforms(image, target)`` is applied when given.

    ``gt_size``: the image stays ``size x size`` but ``boxes`` and ``masks`` are the same
    objects rendered exactly at ``gt_size x gt_size`` (to score predictions pasted at that
    size against exact ground truth).
    """

    categories = CATEGORIES

    def __init__(
        self,
        num_images: int,
        size: int = 256,
        seed: int = 0,
        transforms=None,
        gt_size: int | None = None,
    ):
        if num_images < 1 or size < 16:
            raise ValueError(f"need num_images >= 1 and size >= 16, got {num_images}, {size}")
        if gt_size is not None and gt_size < 16:
            raise ValueError(f"need gt_size >= 16, got {gt_size}")
        self.num_images, self.size, self.seed = num_images, size, seed
        self.gt_size = gt_size
        self.transforms = transforms
        self.num_classes = len(CATEGORIES) + 1  # with the background, as torchvision counts

    def __len__(self) -> int:
        return self.num_images

    def sample(self, index: int) -> SyntheticSample:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        gt = None if self.gt_size is None else (self.gt_size, self.gt_size)
        return render_sample(index, self.size, self.size, self.seed, mask_size=gt)

    def __getitem__(self, index: int):
        s = self.sample(index)
        image = _image_tensor(s.image)
        target = {
            "boxes": masks_to_boxes(s.masks),
            "labels": torch.from_numpy(s.labels),
            "masks": torch.from_numpy(s.masks.astype(np.uint8)),
            "image_id": index,
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target


class SyntheticSemanticDataset(Dataset):
    """Semantic data: ``(image 3 x H x W float in [0, 1], labels H x W int64)``.

    Class 0 is background, class ``c`` is ``SEMANTIC_CLASSES[c]``.
    """

    classes = SEMANTIC_CLASSES

    def __init__(self, num_images: int, size: int = 256, seed: int = 0, transforms=None):
        if num_images < 1 or size < 16:
            raise ValueError(f"need num_images >= 1 and size >= 16, got {num_images}, {size}")
        self.num_images, self.size, self.seed = num_images, size, seed
        self.transforms = transforms
        self.num_classes = len(SEMANTIC_CLASSES)
        self.ignore_index = 255

    def __len__(self) -> int:
        return self.num_images

    def __getitem__(self, index: int):
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} images")
        s = render_sample(index, self.size, self.size, self.seed)
        image, labels = _image_tensor(s.image), torch.from_numpy(s.label_map())
        if self.transforms is not None:
            image, labels = self.transforms(image, labels)
        return image, labels


def masks_to_boxes(masks: np.ndarray) -> torch.Tensor:
    """Tight XYXY boxes (pixel edges) of ``N x H x W`` boolean masks -> ``N x 4`` float32."""
    n = masks.shape[0]
    if n == 0:
        return torch.zeros(0, 4, dtype=torch.float32)
    rows, cols = masks.any(2), masks.any(1)
    y0, y1 = rows.argmax(1), masks.shape[1] - rows[:, ::-1].argmax(1)
    x0, x1 = cols.argmax(1), masks.shape[2] - cols[:, ::-1].argmax(1)
    return torch.from_numpy(np.stack([x0, y0, x1, y1], 1).astype(np.float32))
