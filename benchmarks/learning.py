"""PointRend's pasted masks vs torchvision's 28x28 masks on boundary quality, learned from scratch.

Both models are the same tiny ResNet-18-FPN Mask R-CNN trained from scratch with the same budget
(``steps`` Adam steps of 2 images of ``size x size``; 40 steps at 128 x 128 by default) on four
synthetic images of star-shaped objects, made here at full resolution. The region proposals are
given (an "oracle RPN": the ground-truth boxes jittered by 5% of their size, 8 per box; the box
head and both mask branches train as usual, through ``model(images, targets)``), and the masks are
evaluated on the ground-truth boxes (forced as detections, so that each model's own inference and
paste run unchanged). What is compared is the mask branch: the Boundary IoU of the pasted masks
thresholded at 0.5, with the boundary band ``d`` = 2% of the image diagonal (Cheng et al., 2021),
and the mask IoU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torchvision.models.detection.transform import resize_boxes

from pointrend.evaluation.boundary import boundary_distance, boundary_region
from pointrend.instance import maskrcnn, pointrend_maskrcnn

from .common import batched_iou

# Gradient clipping keeps a few dozen steps from scratch from being chaotic: without it a
# rounding-level change in the point head (1e-7 relative) moved PointRend's mask IoU between
# 0.67 and 0.90.
CLIP = 1.0
MODELS = {"PointRend": pointrend_maskrcnn, "Mask R-CNN 4x conv": maskrcnn}


def star_mask(cx, cy, r_out, r_in, spikes, rotation, size) -> Tensor:
    """``size x size`` bool: pixels (centres) inside a star with straight edges in polar form."""
    ys, xs = torch.meshgrid(torch.arange(size) + 0.5, torch.arange(size) + 0.5, indexing="ij")
    dx, dy = xs - cx, ys - cy
    t = ((torch.atan2(dy, dx) + rotation) / (2 * math.pi) * spikes) % 1.0
    radius = r_in + (r_out - r_in) * (1 - (2 * t - 1).abs())
    return dx**2 + dy**2 <= radius**2


def _star_image(i: int, size: int, g: torch.Generator) -> tuple[Tensor, dict]:
    colours = {1: torch.tensor([0.9, 0.5, 0.2]), 2: torch.tensor([0.3, 0.8, 0.9])}
    image = 0.2 + 0.1 * torch.rand(3, size, size, generator=g)
    masks, boxes, labels = [], [], []
    for cx, cy, r_out, r_in, spikes, rotation, label in [
        (0.32, 0.35, 0.28, 0.12, 5 + i, 0.3 * i, 1),
        (0.70, 0.68, 0.25, 0.10, 4 + i, 0.5 + i, 2),
    ]:
        mask = star_mask(cx * size, cy * size, r_out * size, r_in * size, spikes, rotation, size)
        if masks:
            mask &= ~torch.stack(masks).any(0)
        ys, xs = torch.where(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        masks.append(mask)
        labels.append(label)
        texture = colours[label][:, None, None] + 0.05 * torch.rand(3, size, size, generator=g)
        image = torch.where(mask, texture, image)
    target = {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
    target["masks"] = torch.stack(masks).to(torch.uint8)
    return image.clamp(0, 1), target


def star_images(size: int, seed: int = 0) -> tuple[list[Tensor], list[dict]]:
    """Four ``3 x size x size`` images of two stars each, and their targets."""
    g = torch.Generator().manual_seed(seed)
    pairs = [_star_image(i, size, g) for i in range(4)]
    return [p[0] for p in pairs], [p[1] for p in pairs]


class OracleRPN(nn.Module):
    """Proposals = ground-truth boxes jittered by 5% of their size (8 per box), no RPN loss."""

    def forward(self, images, features, targets=None):
        if targets is None:  # inference: detections are forced, proposals do not matter
            return [torch.tensor([[0.0, 0.0, 8.0, 8.0]]) for _ in images.image_sizes], {}
        proposals = []
        for t in targets:
            boxes = t["boxes"].repeat(8, 1)
            scale = (boxes[:, 2:] - boxes[:, :2]).repeat(1, 2)
            proposals.append(boxes + 0.05 * scale * torch.randn(boxes.shape))
        return proposals, {}


def boundary_iou(pred: Tensor, gt: Tensor, d: int) -> Tensor:
    """``N``: IoU of the ``d``-pixel boundary regions (the published definition, image border
    included: :func:`pointrend.evaluation.boundary_region`) of ``N x H x W`` bool masks."""
    return batched_iou(boundary_region(pred, distance=d), boundary_region(gt, distance=d))


def _trained(builder: Callable, images, targets, steps: int, size: int) -> nn.Module:
    torch.manual_seed(0)
    options = {"box_head_dim": 64, "min_size": size, "max_size": size}
    model = builder("resnet18", 3, **options, box_batch_size_per_image=32)
    model.rpn = OracleRPN()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model.train()
    for step in range(steps):
        batch = [step % 4, (step + 1) % 4]
        losses = model([images[i] for i in batch], [targets[i] for i in batch])
        optimizer.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
    return model


def train_and_score(builder: Callable, images, targets, steps: int, size: int) -> dict:
    """Train ``builder``'s model on the images; its mean Boundary IoU and mask IoU on them."""
    model = _trained(builder, images, targets, steps, size)

    def ground_truth_detections(class_logits, box_regression, proposals, image_shapes):
        boxes = [resize_boxes(t["boxes"], (size, size), s) for t, s in zip(targets, image_shapes)]
        return boxes, [torch.ones(len(b)) for b in boxes], [t["labels"] for t in targets]

    model.roi_heads.postprocess_detections = ground_truth_detections
    model.eval()
    with torch.no_grad():
        outputs = model(images)
    d = boundary_distance(size, size)
    pred = torch.cat([out["masks"][:, 0] >= 0.5 for out in outputs])  # M x H x W
    gt = torch.cat([t["masks"].bool() for t in targets])
    iou = {"boundary_iou": boundary_iou(pred, gt, d), "mask_iou": batched_iou(pred, gt)}
    return {key: value.mean().item() for key, value in iou.items()}


def boundary_learning(steps: int = 40, size: int = 128, log: Callable = print) -> dict:
    """Both models trained and scored on the same star images (see the module's docstring)."""
    images, targets = star_images(size)
    rows = {name: train_and_score(b, images, targets, steps, size) for name, b in MODELS.items()}
    log(f"  {rows}")
    return {"steps": steps, "image_size": size, "images": len(images), "rows": rows}
