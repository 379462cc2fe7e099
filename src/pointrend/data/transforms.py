"""Augmentation with ``torchvision.transforms.v2``: boxes and masks move with the image.

Instance transforms take and return ``(image 3 x H x W float, target dict)``; semantic ones
``(image, labels H x W int64)``. Instance models resize inside (torchvision's transform, set by
the model's ``min_size`` / ``max_size``), so instance transforms resize only when asked.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2

__all__ = ["InstanceTransform", "SemanticTransform", "build_transforms"]


class InstanceTransform:
    """Apply a v2 transform to an image and its torchvision-style target."""

    def __init__(self, transform: v2.Transform):
        self.transform = transform

    def __call__(self, image: torch.Tensor, target: dict):
        wrapped = dict(target)
        wrapped["boxes"] = tv_tensors.BoundingBoxes(
            target["boxes"], format="XYXY", canvas_size=tuple(image.shape[-2:])
        )
        wrapped["masks"] = tv_tensors.Mask(target["masks"])
        image, wrapped = self.transform(tv_tensors.Image(image), wrapped)
        out = dict(target)
        out["boxes"] = wrapped["boxes"].as_subclass(torch.Tensor)
        out["masks"] = wrapped["masks"].as_subclass(torch.Tensor)
        return image.as_subclass(torch.Tensor), out


class SemanticTransform:
    """Apply a v2 transform to an image and its label map (labels resized with nearest)."""

    def __init__(self, transform: v2.Transform):
        self.transform = transform

    def __call__(self, image: torch.Tensor, labels: torch.Tensor):
        image, mask = self.transform(tv_tensors.Image(image), tv_tensors.Mask(labels))
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor)


def build_transforms(task: str, train: bool, cfg) -> InstanceTransform | SemanticTransform | None:
    """Transforms for a :class:`~pointrend.engine.config.DatasetConfig`.

    * resize by shorter side: ``cfg.min_size`` (a random choice in training), longer side at most
      ``cfg.max_size`` — for semantic data; instance models resize themselves;
    * training: random horizontal flip (``cfg.flip``), colour jitter (``cfg.color_jitter``),
      random crop to ``cfg.crop_size`` for semantic data (padded with the ignore label 255).
    """
    steps: list[v2.Transform] = []
    if task == "semantic" and cfg.min_size:
        sizes = list(cfg.min_size) if train else [cfg.min_size[-1]]
        steps.append(v2.RandomShortestSize(sizes, max_size=cfg.max_size, antialias=True))
    if train:
        if cfg.flip:
            steps.append(v2.RandomHorizontalFlip())
        if cfg.color_jitter:
            j = cfg.color_jitter
            steps.append(
                v2.ColorJitter(brightness=j, contrast=j, saturation=j, hue=min(j, 0.5) / 4)
            )
        if task == "semantic" and cfg.crop_size:
            h, w = (cfg.crop_size * 2)[:2]
            steps.append(
                v2.RandomCrop(
                    (h, w), pad_if_needed=True, fill={tv_tensors.Image: 0, tv_tensors.Mask: 255}
                )
            )
    if not steps:
        return None
    compose = v2.Compose(steps)
    return InstanceTransform(compose) if task == "instance" else SemanticTransform(compose)
