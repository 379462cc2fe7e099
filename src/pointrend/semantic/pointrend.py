"""One PointRend wrapper for semantic models (Semantic FPN, DeepLabV3) and their plain baselines.

Geometry (the library's one convention, see :mod:`pointrend.backbones`): a stride-``s``
map of size ``h x w`` covers the top-left ``s*h x s*w`` pixels of the image, zero-padded at the
bottom and right when ``H`` or ``W`` is not a multiple of ``s``. Points are ``(x, y)`` in
``[0, 1]`` of that canvas for the coarse map; image pixels are ``x * s * w``. Refining from the
coarse map to the canvas's full resolution takes ``log2(s)`` steps; the output is then cropped to
exactly ``H x W``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._fused_head import inference_point_head
from .._scripting import NotScriptable
from .._tracing import check_no_test_resize
from ..head import PointHead
from ..image_checks import as_model_dtype, check_image_tensor
from ..points import (
    calculate_semantic_uncertainty,
    point_sample,
    sample_training_points,
)
from ..render import subdivision_inference
from ..resize import shortest_edge_size
from ..settings import SEMANTIC_SETTINGS, PointRendSettings

__all__ = [
    "SemanticPointRendConfig",
    "SemanticSegmenter",
    "check_labels",
    "sample_labels_nearest",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class SemanticPointRendConfig:
    """PointRend's semantic options: ``pointrend``, the :class:`~pointrend.settings.PointRendSettings`
    with the semantic defaults (:data:`~pointrend.settings.SEMANTIC_SETTINGS`: 2048 training
    points per image, k = 3, beta = 0.75, 8192 points per subdivision step, a 3 x 256 point head
    with the coarse logits only at its input). ``pointrend.subdivision_steps = None`` refines up
    to the full resolution (``log2(coarse stride)`` steps); fewer steps are followed by a
    bilinear upsampling to it.
    """

    pointrend: PointRendSettings = SEMANTIC_SETTINGS


def check_labels(labels: Tensor, num_classes: int, ignore_index: int) -> None:
    """Raise a ``ValueError`` naming the values of ``labels`` outside ``[0, K)`` and not ignored."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        values = torch.unique(labels[bad]).tolist()
        raise ValueError(
            f"targets hold labels {values[:10]} outside [0, {num_classes}) that are not the ignore "
            f"label {ignore_index}"
        )


def sample_labels_nearest(labels: Tensor, image_points: Tensor, ignore_index: int) -> Tensor:
    """Labels at points by nearest sampling; points outside the image get ``ignore_index``.

    Args:
        labels: ``N x H x W`` int64.
        image_points: ``N x P x 2`` in image pixels.

    Returns:
        ``N x P`` int64.
    """
    N, H, W = labels.shape
    x = torch.floor(image_points[..., 0]).long()
    y = torch.floor(image_points[..., 1]).long()
    inside = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    flat = (y.clamp(0, H - 1) * W + x.clamp(0, W - 1)).view(N, -1)
    picked = torch.gather(labels.reshape(N, H * W), 1, flat)
    return torch.where(inside, picked, torch.full_like(picked, ignore_index))


def _channel_statistics(mean: Sequence[float], std: Sequence[float]) -> tuple[Tensor, Tensor]:
    """``image_mean`` / ``image_std`` as two float32 tensors of 3 values; std must be positive."""
    values = []
    for name, given in (("image_mean", mean), ("image_std", std)):
        tensor = torch.as_tensor(given, dtype=torch.float32).flatten()
        if tensor.numel() != 3:
            raise ValueError(f"{name} needs 3 values (R, G, B), got {list(given)}")
        values.append(tensor)
    if bool((values[1] <= 0).any()):
        raise ValueError(f"image_std must be positive, got {list(std)}")
    return values[0], values[1]


def _masked_cross_entropy(logits: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """Mean cross-entropy over non-ignored entries; 0 (finite, with gradient) when all are."""
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp(min=1)


class SemanticSegmenter(NotScriptable, nn.Module):
    """A coarse semantic model, with PointRend on top when ``point_head`` is given.

    Args:
        backbone: ``images N x 3 x H x W -> feature maps`` (a list, or a dict whose values are
            taken in order; inputs normalised inside).
        coarse_head: ``feature maps -> N x K x h x w`` coarse logits.
        num_classes: K.
        coarse_stride: stride of the coarse logits (4 for Semantic FPN, 16 for DeepLabV3-OS16).
        fine_index, fine_stride: which feature map gives the fine-grained features, and its
            stride (res2 / P2: 4).
        point_head: a :class:`~pointrend.head.PointHead` (``None``: the plain baseline, whose
            output is the coarse logits bilinearly upsampled).
        config: :class:`SemanticPointRendConfig` (its ``pointrend`` settings: training points,
            points per subdivision step).
        ignore_index: label left out of the losses (255).
        coarse_inputs: which feature maps the coarse head takes (an index, a tuple of indices,
            or ``None`` for all).
        image_mean, image_std: per-channel RGB statistics in ``[0, 1]`` units; the backbone
            sees ``(images - image_mean) / image_std`` (ImageNet's by default).
        size_divisibility: the normalised images are zero-padded at the bottom and right to a
            multiple of it (1: no padding) before the backbone, and the output is cropped back
            to ``H x W``. Padding changes the features near the border and, through the
            receptive field, far from it: a model trained on padded inputs (detectron2's
            Semantic FPN pads to 32) computes its outputs only with the same padding.
        test_min_size, test_max_size: in eval mode, resize the images (bilinear, antialiased)
            by :func:`shortest_edge_size` before the network and the logits back to ``H x W``
            (bilinear) after; ``test_min_size=0`` (the default) runs at the input size. Export
            needs ``test_min_size=0`` (an error otherwise).

    Everything after the two modules is passed by name. Inputs are images in ``[0, 1]``. Training: ``model(images, targets N x H x W
    int64) -> {"loss_sem_seg", "loss_sem_seg_point"}`` (the baseline only the first). Eval:
    ``model(images) -> {"out": N x K x H x W}`` logits. ``torch.jit.script`` refuses it with
    :class:`~pointrend._scripting.NotScriptableError` (trace or export to ONNX instead).
    """

    def __init__(
        self,
        backbone: nn.Module,
        coarse_head: nn.Module,
        *,
        num_classes: int,
        coarse_stride: int,
        fine_index: int,
        fine_stride: int,
        point_head: PointHead | None = None,
        config: SemanticPointRendConfig | None = None,
        ignore_index: int = 255,
        coarse_inputs: int | tuple[int, ...] | None = None,
        image_mean: Sequence[float] = IMAGENET_MEAN,
        image_std: Sequence[float] = IMAGENET_STD,
        size_divisibility: int = 1,
        test_min_size: int = 0,
        test_max_size: int = 0,
    ):
        super().__init__()
        if coarse_stride < 1 or coarse_stride & (coarse_stride - 1):
            raise ValueError(f"coarse_stride must be a power of two, got {coarse_stride}")
        self.backbone, self.coarse_head, self.point_head = backbone, coarse_head, point_head
        self.coarse_stride, self.fine_index, self.fine_stride = (
            coarse_stride,
            fine_index,
            fine_stride,
        )
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.config = config or SemanticPointRendConfig()
        self.coarse_inputs = coarse_inputs
        mean, std = _channel_statistics(image_mean, image_std)
        if int(size_divisibility) != size_divisibility or size_divisibility < 1:
            raise ValueError(
                f"size_divisibility must be a positive integer, got {size_divisibility}"
            )
        self.size_divisibility = int(size_divisibility)
        if test_min_size < 0 or test_max_size < 0:
            raise ValueError(
                f"test_min_size and test_max_size must be >= 0 (0: off), got {test_min_size} "
                f"and {test_max_size}"
            )
        self.test_min_size, self.test_max_size = int(test_min_size), int(test_max_size)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    def _features(self, images: Tensor) -> tuple[list[Tensor], Tensor]:
        x = (as_model_dtype(images, self.mean.dtype) - self.mean) / self.std
        d = self.size_divisibility
        if d > 1:
            x = F.pad(x, (0, -x.shape[-1] % d, 0, -x.shape[-2] % d))
        features = self.backbone(x)
        if isinstance(features, dict):
            features = list(features.values())
        if self.coarse_inputs is None:
            inputs = features
        elif isinstance(self.coarse_inputs, int):
            inputs = features[self.coarse_inputs]
        else:
            inputs = [features[i] for i in self.coarse_inputs]
        return features, self.coarse_head(inputs)

    def _point_logits(
        self, fine: Tensor, coarse: Tensor, points: Tensor, head: nn.Module | None = None
    ) -> Tensor:
        """Point head logits ``N x K x P`` at canvas points ``N x P x 2`` (coarse-map relative).

        ``head`` predicts them (by default :func:`~pointrend._fused_head.inference_point_head`
        of the model's point head: its fused copy when autograd is off).
        """
        s, (h, w) = self.coarse_stride, coarse.shape[-2:]
        fh, fw = fine.shape[-2:]
        # Written with tensor arithmetic so that traced sizes (export) stay symbolic.
        one = points.new_ones(())
        scale = torch.stack(
            [one * (s * w) / (self.fine_stride * fw), one * (s * h) / (self.fine_stride * fh)]
        )
        if head is None:
            head = inference_point_head(self.point_head)
        return head(point_sample(fine, points * scale), point_sample(coarse, points))

    def forward(self, images: Tensor, targets: Tensor | None = None):
        check_image_tensor(images, "images", batched=True)  # the values: one host read
        if not self.training:
            return {"out": self._predict(images)}
        H, W = images.shape[-2:]
        if targets is None:
            raise ValueError("in training mode the model needs targets (N x H x W int64 labels)")
        if targets.shape != (images.shape[0], H, W):
            raise ValueError(
                f"targets must be {(images.shape[0], H, W)} (N x H x W), got {tuple(targets.shape)}"
            )
        features, coarse = self._features(images)
        s, (h, w) = self.coarse_stride, coarse.shape[-2:]
        targets = targets.long()
        check_labels(targets, self.num_classes, self.ignore_index)
        up = F.interpolate(coarse, size=(s * h, s * w), mode="bilinear", align_corners=False)
        losses = {
            "loss_sem_seg": _masked_cross_entropy(up[..., :H, :W], targets, self.ignore_index)
        }
        if self.point_head is not None:
            losses["loss_sem_seg_point"] = self._point_loss(
                features[self.fine_index], coarse, targets
            )
        return losses

    def _logits(self, images: Tensor) -> Tensor:
        """Eval logits ``N x K x H x W`` of ``images`` ``N x 3 x H x W`` as they are."""
        H, W = images.shape[-2:]
        features, coarse = self._features(images)
        s, (h, w) = self.coarse_stride, coarse.shape[-2:]
        if self.point_head is None:
            out = F.interpolate(coarse, size=(s * h, s * w), mode="bilinear", align_corners=False)
        else:
            out = self.render(features[self.fine_index], coarse)
        return out[..., :H, :W]

    def _predict(self, images: Tensor) -> Tensor:
        """Eval logits ``N x K x H x W``, through the test-time resize when it is set."""
        if not self.test_min_size:
            return self._logits(images)
        check_no_test_resize(self.test_min_size)
        H, W = images.shape[-2:]
        size = shortest_edge_size(H, W, self.test_min_size, self.test_max_size)
        if size == (H, W):
            return self._logits(images)
        resized = F.interpolate(
            as_model_dtype(images, self.mean.dtype),
            size=size,
            mode="bilinear",
            align_corners=False,
            antialias=True,
        ).clamp_(0.0, 1.0)
        return F.interpolate(
            self._logits(resized), size=(H, W), mode="bilinear", align_corners=False
        )

    def _point_loss(self, fine: Tensor, coarse: Tensor, targets: Tensor) -> Tensor:
        settings = self.config.pointrend
        s, (h, w) = self.coarse_stride, coarse.shape[-2:]
        points = sample_training_points(
            coarse,
            calculate_semantic_uncertainty,
            settings.train_num_points,
            settings.train_point_sampling,
            settings.oversample_ratio,
            settings.importance_sample_ratio,
        )
        logits = self._point_logits(fine, coarse, points)
        image_points = points * points.new_tensor([s * w, s * h])
        labels = sample_labels_nearest(targets, image_points, self.ignore_index)
        return _masked_cross_entropy(logits, labels, self.ignore_index)

    def render(self, fine: Tensor, coarse: Tensor, return_steps: bool = False):
        """Subdivide the coarse logits ``N x K x h x w`` to the canvas resolution ``s*h x s*w``.

        ``log2(s)`` steps of ``pointrend.subdivision_num_points`` points (``s`` the coarse
        stride); with ``pointrend.subdivision_steps`` fewer, the result is then upsampled
        bilinearly to the canvas. One point head (fused without autograd) serves every step.
        """
        settings = self.config.pointrend
        full = int(math.log2(self.coarse_stride))
        steps = (
            full if settings.subdivision_steps is None else min(settings.subdivision_steps, full)
        )
        head = inference_point_head(self.point_head)
        out = subdivision_inference(
            coarse,
            lambda points: self._point_logits(fine, coarse, points, head),
            calculate_semantic_uncertainty,
            steps=steps,
            num_points=settings.subdivision_num_points,
            return_steps=return_steps,
        )
        if steps == full:
            return out
        logits = out[0] if return_steps else out
        size = (self.coarse_stride * coarse.shape[-2], self.coarse_stride * coarse.shape[-1])
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return (logits, out[1]) if return_steps else logits
