"""PointRend's mask branch for box-based instance segmentation (Mask R-CNN).

* :class:`CoarseMaskHead`: ``R x C x 14 x 14`` box features (a regular grid of cell centres over
  each box, sampled from P2) -> 2x2 stride-2 conv + ReLU -> ``num_fc`` fully connected layers +
  ReLU -> ``R x K x 7 x 7`` class-specific coarse logits.
* :class:`PointRendMaskBranch`: the coarse head plus a :class:`~pointrend.head.PointHead` on
  fine P2 features and the K coarse logits, with the two things Mask R-CNN asks of a mask branch:
  :meth:`~PointRendMaskBranch.losses` (training) and :meth:`~PointRendMaskBranch.render`
  (inference, adaptive subdivision).

Boxes are given per image (``N`` tensors ``R_i x 4`` in the pixels of the padded batch, as
torchvision passes proposals); all work is done for the whole batch at once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._fused_head import FusedPointHead, inference_point_head
from ..head import PointHead
from ..points import (
    calculate_uncertainty,
    generate_regular_grid_point_coords,
    point_sample,
    point_sample_fine_grained_features,
    sample_training_points,
    select_class,
)
from ..render import subdivision_inference, subdivision_sizes
from ..settings import INSTANCE_SETTINGS, PointRendSettings
from .targets import FlatMasks, coarse_mask_targets, sample_masks_at_points

MASK_RESOLUTIONS = ("fixed", "box")

__all__ = [
    "PointRendMaskConfig",
    "CoarseMaskHead",
    "PointRendMaskBranch",
    "infer_stride",
    "box_grid_features",
]


@dataclass(frozen=True)
class PointRendMaskConfig:
    """Options of PointRend's mask branch; the defaults are the paper's (COCO, R50-FPN).

    Attributes:
        feature_key: the FPN level of the fine-grained features (``"0"`` = P2, stride 4).
        coarse_grid: points per side sampled over each box for the coarse head (14).
        coarse_head_conv_dim: channels of the coarse head's 2x2 stride-2 conv (256).
        coarse_head_fc_dim, coarse_head_num_fc: the coarse head's fully connected layers
            (2 x 1024).
        output_size: side of the rendered mask at inference (224 = 7 * 2**5); the subdivision
            stops there (or after ``pointrend.subdivision_steps`` steps).
        pointrend: the point head, training points and subdivision
            (:data:`~pointrend.settings.INSTANCE_SETTINGS`: 196 training points per box, k = 3,
            beta = 0.75, 784 points per step, a 3 x 256 point head with the coarse logits at
            every layer).
        mask_resolution: ``"fixed"`` (every box rendered to ``output_size``) or ``"box"``
            (inference only: each box subdivided until its grid is at least its size in the
            output image, see :mod:`~pointrend.instance.box_resolution`).
        max_mask_size: the largest grid side of ``"box"`` (1024).
        points_per_side: points per subdivision step per cell of the final grid's mean side
            ``(M_h + M_w) / 2`` in ``"box"`` mode; ``None``: ``subdivision_num_points /
            output_size`` (784 / 224 = 3.5, so 224 x 224 gets 784 points, 1024 x 1024 3584).
        train_on_pred_boxes: train the mask branch on the box head's class-specific boxes of the
            foreground proposals (regressed for the ground-truth class, without gradient, not
            clipped: detectron2's ``ROI_BOX_HEAD.TRAIN_ON_PRED_BOXES``, the authors' recipe)
            instead of on the proposals themselves.
    """

    feature_key: str = "0"
    coarse_grid: int = 14
    coarse_head_conv_dim: int = 256
    coarse_head_fc_dim: int = 1024
    coarse_head_num_fc: int = 2
    output_size: int = 224
    pointrend: PointRendSettings = INSTANCE_SETTINGS
    mask_resolution: str = "fixed"
    max_mask_size: int = 1024
    points_per_side: float | None = None
    train_on_pred_boxes: bool = True

    def __post_init__(self):
        if self.mask_resolution not in MASK_RESOLUTIONS:
            raise ValueError(
                f"mask_resolution must be one of {MASK_RESOLUTIONS}, got {self.mask_resolution!r}"
            )
        if self.max_mask_size < self.coarse_grid // 2:
            raise ValueError(
                f"max_mask_size {self.max_mask_size} is smaller than the coarse mask "
                f"({self.coarse_grid // 2})"
            )
        if self.points_per_side is not None and self.points_per_side < 0:
            raise ValueError(f"points_per_side must be >= 0, got {self.points_per_side}")
        if self.coarse_grid < 2 or self.coarse_grid % 2:
            raise ValueError(f"coarse_grid must be even and >= 2, got {self.coarse_grid}")
        if self.output_size < self.coarse_grid // 2:
            raise ValueError(
                f"output_size {self.output_size} is smaller than the coarse mask "
                f"({self.coarse_grid // 2})"
            )


class CoarseMaskHead(nn.Module):
    """Coarse class-specific mask logits from box features.

    Shapes: ``forward(R x C x S x S) -> R x K x S/2 x S/2`` (S = 14 by default).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        input_size: int = 14,
        conv_dim: int = 256,
        fc_dim: int = 1024,
        num_fc: int = 2,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.output_size = input_size // 2
        self.reduce = nn.Conv2d(in_channels, conv_dim, kernel_size=2, stride=2)
        fcs = []
        width = conv_dim * self.output_size**2
        for _ in range(num_fc):
            fcs.append(nn.Linear(width, fc_dim))
            width = fc_dim
        self.fcs = nn.ModuleList(fcs)
        self.predictor = nn.Linear(width, num_classes * self.output_size**2)

        nn.init.kaiming_normal_(self.reduce.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.reduce.bias)
        for fc in self.fcs:
            nn.init.kaiming_uniform_(fc.weight, a=1)
            nn.init.zeros_(fc.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.reduce(x)).flatten(1)
        for fc in self.fcs:
            x = torch.relu(fc(x))
        s = self.output_size
        return self.predictor(x).view(-1, self.num_classes, s, s)


def infer_stride(feature_size: Sequence[int], image_sizes: Sequence[Sequence[int]]) -> float:
    """Stride of a feature map of a batch, from the batch's image sizes (before padding).

    torchvision pads a batch to a multiple of 32 before the backbone, so ``r = max image side /
    map side`` lies in ``(stride / 2, stride]`` whenever the largest image side is over half its
    padded size (any side >= 17 pixels): the stride is the power of two at or just above ``r``.
    """
    ratio_h = max(int(s[0]) for s in image_sizes) / int(feature_size[0])
    ratio_w = max(int(s[1]) for s in image_sizes) / int(feature_size[1])
    ratio = max(ratio_h, ratio_w, 1.0)
    return float(2 ** math.ceil(math.log2(ratio) - 1e-6))


def box_grid_features(
    features: Tensor, stride: float, boxes: Sequence[Tensor], side: int
) -> Tensor:
    """Features at the cell centres of a ``side x side`` grid over every box.

    This is RoIAlign (aligned) with one sample per bin, done with the project's point sampling.

    Args:
        features: ``N x C x H x W`` one feature map of the batch.
        stride: its stride in image pixels.
        boxes: ``N`` tensors ``R_i x 4`` in image pixels.

    Returns:
        ``R x C x side x side``, ``R = sum(R_i)``.
    """
    R = sum(b.shape[0] for b in boxes)  # no int(): symbolic under tracing (export)
    grid = generate_regular_grid_point_coords(R, side, device=features.device)
    sampled, _ = point_sample_fine_grained_features([features], [stride], boxes, grid)
    return sampled.view(R, features.shape[1], side, side)


class PointRendMaskBranch(nn.Module):
    """Coarse mask head + point head: the whole PointRend mask branch of Mask R-CNN.

    Args:
        in_channels: channels of the fine-grained feature map (256 for an FPN).
        num_classes: K, including the background (as torchvision counts).
        config: :class:`PointRendMaskConfig`.
    """

    def __init__(
        self, in_channels: int, num_classes: int, config: PointRendMaskConfig | None = None
    ):
        super().__init__()
        self.config = config = config or PointRendMaskConfig()
        self.num_classes = num_classes
        self.coarse_head = CoarseMaskHead(
            in_channels,
            num_classes,
            input_size=config.coarse_grid,
            conv_dim=config.coarse_head_conv_dim,
            fc_dim=config.coarse_head_fc_dim,
            num_fc=config.coarse_head_num_fc,
        )
        self.point_head = PointHead(
            in_channels,
            num_classes,
            fc_dim=config.pointrend.point_head_fc_dim,
            num_fc=config.pointrend.point_head_num_fc,
            coarse_pred_each_layer=config.pointrend.point_head_coarse_pred_each_layer,
        )

    def coarse_logits(self, features: Tensor, stride: float, boxes: Sequence[Tensor]) -> Tensor:
        """``R x K x 7 x 7`` coarse logits of all boxes."""
        grid = box_grid_features(features, stride, boxes, self.config.coarse_grid)
        return self.coarse_head(grid)

    def point_logits(
        self,
        features: Tensor,
        stride: float,
        boxes: Sequence[Tensor],
        coarse: Tensor,
        points: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Point head logits ``R x K x P`` at box-relative ``points`` (``R x P x 2``).

        Also returns the points in image pixels (``R x P x 2``).
        """
        fine, image_points = point_sample_fine_grained_features([features], [stride], boxes, points)
        return self.point_head(fine, point_sample(coarse, points)), image_points

    def losses(
        self,
        features: Tensor,
        stride: float,
        boxes: Sequence[Tensor],
        gt_classes: Tensor,
        gt_masks: FlatMasks,
        mask_index: Tensor,
    ) -> dict[str, Tensor]:
        """``loss_mask`` (coarse, 7x7) and ``loss_mask_point`` for the positive boxes.

        The authors' recipe (detectron2's ``PointRendMaskHead``): the coarse loss is the mean
        binary cross-entropy of the ground-truth class's ``R x 7 x 7`` logits against binary
        RoIAlign targets (:func:`~pointrend.instance.targets.coarse_mask_targets`); the point
        loss that of its ``R x P`` point logits against the bitmask sampled at the points (soft
        at edges, :func:`~pointrend.instance.targets.sample_masks_at_points`), the points chosen
        by the uncertainty of the ground-truth class's coarse logit. Both have weight 1.

        Args:
            features: ``N x C x H x W`` fine feature map (P2).
            boxes: ``N`` tensors ``R_i x 4`` of positive boxes (image pixels).
            gt_classes: ``R`` ground-truth class of each box (``R = sum(R_i)``).
            gt_masks: the batch's ground-truth masks; ``mask_index`` (``R``) picks each box's.

        With no positive box both losses are 0 (still connected to the parameters).
        """
        all_boxes = torch.cat([b.reshape(-1, 4) for b in boxes]).to(torch.float32)
        coarse = self.coarse_logits(features, stride, boxes)  # R x K x 7 x 7
        if all_boxes.shape[0] == 0:
            zero = coarse.sum() * 0.0 + sum(p.sum() * 0.0 for p in self.point_head.parameters())
            return {"loss_mask": zero, "loss_mask_point": zero.clone()}

        coarse_gt = select_class(coarse, gt_classes)  # R x 1 x 7 x 7
        targets = coarse_mask_targets(gt_masks, mask_index, all_boxes, coarse.shape[-1])
        loss_mask = F.binary_cross_entropy_with_logits(coarse_gt[:, 0], targets)

        points = self.training_points(coarse_gt)
        logits, image_points = self.point_logits(features, stride, boxes, coarse, points)
        point_gt = select_class(logits, gt_classes)[:, 0]  # R x P
        labels = sample_masks_at_points(gt_masks, mask_index, image_points)
        loss_point = F.binary_cross_entropy_with_logits(point_gt, labels)
        return {"loss_mask": loss_mask, "loss_mask_point": loss_point}

    def training_points(self, coarse_gt: Tensor) -> Tensor:
        """Box-relative training points ``R x P x 2`` from the coarse logits of the GT class."""
        settings = self.config.pointrend
        return sample_training_points(
            coarse_gt,
            calculate_uncertainty,
            settings.train_num_points,
            settings.train_point_sampling,
            settings.oversample_ratio,
            settings.importance_sample_ratio,
        )

    def render(
        self,
        features: Tensor,
        stride: float,
        boxes: Sequence[Tensor],
        classes: Tensor,
        return_steps: bool = False,
    ):
        """Mask logits of the predicted classes by adaptive subdivision: ``R x 1 x M x M``.

        ``M = config.output_size``; the point head still sees all K coarse logits, but only the
        ``classes`` channel is carried through the steps (uncertainty of the predicted class).
        With ``return_steps`` also the coarse logits ``R x 1 x 7 x 7`` and the
        :class:`~pointrend.render.SubdivisionStep` list (for figures). This is the fixed mode
        whatever ``config.mask_resolution``; the per-box mode is
        :func:`~pointrend.instance.box_resolution.render_by_box_size`.

        Without autograd the points are predicted with a
        :class:`~pointrend._fused_head.FusedPointHead` (the predicted class's row only); with
        autograd or under tracing with the point head itself, then the class selected.
        """
        cfg, settings = self.config, self.config.pointrend
        # Channels-last: point sampling reads all channels of a pixel together (faster).
        features = features.contiguous(memory_format=torch.channels_last)
        coarse = self.coarse_logits(features, stride, boxes)
        if coarse.shape[0] == 0 and not torch.jit.is_tracing():  # traced: no branch on boxes
            return coarse.new_zeros(0, 1, cfg.output_size, cfg.output_size)
        sizes = subdivision_sizes(
            coarse.shape[-2:], settings.subdivision_steps, (cfg.output_size, cfg.output_size)
        )
        points = min(settings.subdivision_num_points, cfg.output_size**2) * len(sizes)
        predictor = self.point_predictor(features, stride, coarse, coarse.shape[0] * points)
        coarse_class = select_class(coarse, classes)
        out = subdivision_inference(
            coarse_class,
            predictor(boxes, coarse, classes),
            calculate_uncertainty,
            steps=settings.subdivision_steps,
            num_points=settings.subdivision_num_points,
            output_size=(cfg.output_size, cfg.output_size),
            return_steps=return_steps,
        )
        return (out[0], coarse_class, out[1]) if return_steps else out

    def point_predictor(self, features: Tensor, stride: float, coarse: Tensor, total_points):
        """A factory of point predictors for :func:`~pointrend.render.subdivision_inference`.

        ``features`` (``N x C x H x W``) are projected by the fused head's first layer once when
        ``total_points`` (all boxes, all steps) outnumber their pixels. The factory takes boxes
        (``N`` tensors ``R_i x 4``), their coarse logits ``R x K x 7 x 7`` and classes ``R``
        (any subset of the boxes) and returns ``points R x P x 2 -> R x 1 x P`` logits.
        """
        head = inference_point_head(self.point_head)
        if not isinstance(head, FusedPointHead):

            def plain(boxes, coarse, classes):
                def predict(points: Tensor) -> Tensor:
                    logits, _ = self.point_logits(features, stride, boxes, coarse, points)
                    return select_class(logits, classes)

                return predict

            return plain
        pixels = features.shape[0] * features.shape[-2] * features.shape[-1]
        projected = head.num_hidden > 0 and total_points > pixels
        fine_map = head.project_fine_features(features) if projected else features

        def fused(boxes, coarse, classes):
            def predict(points: Tensor) -> Tensor:
                fine, _ = point_sample_fine_grained_features([fine_map], [stride], boxes, points)
                return head(fine, point_sample(coarse, points), classes, fine_projected=projected)

            return predict

        return fused
