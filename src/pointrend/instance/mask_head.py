"""PointRend's mask branch for box-based instance segmentation (Mask R-CNN).

* :class:`CoarseMaskHead`: ``R x C x 14 x 14`` box features (a regular grid of cell centres over
  each box, sampled from P2) -> 2x2 stride-2 conv + ReLU -> ``num_fc`` fully connected layers +
  ReLU -> ``R x K x 7 x 7`` class-specific coarse logits.
* :class:`PointRendMaskBranch`: the coarse head plus a :class:`~pointrend.head.PointHead` on
  fine P2 features and the K coarse logits, with the two things Mask R-CNN asks of a mask branch:
  :meth:`~PointRendMaskBranch.losses` (training) and :meth:`~PointRendMaskBranch.predict`
  (inference, adaptive subdivision in either mode: :meth:`~PointRendMaskBranch.render`, every
  box at ``output_size``, or :meth:`~PointRendMaskBranch.render_by_box_size`, each box at about
  its size in the output image).

Boxes are given per image (``N`` tensors ``R_i x 4`` in the pixels of the padded batch, as
torchvision passes proposals); all work is done for the whole batch at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import _tracing
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
from .box_resolution import group_by_grid
from .mask_config import PointRendMaskConfig
from .paste import MasksBySize
from .targets import FlatMasks, coarse_mask_targets, sample_masks_at_points

__all__ = [
    "PointRendMaskConfig",
    "CoarseMaskHead",
    "PointRendMaskBranch",
    "box_grid_features",
]


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

    def predict(
        self,
        features: Tensor,
        stride: float,
        boxes: Sequence[Tensor],
        classes: Tensor,
        output_scales: Tensor | None = None,
    ) -> Tensor | MasksBySize:
        """Mask logits of the predicted classes in the configured ``mask_resolution``.

        ``"fixed"``: :meth:`render`, ``R x 1 x M x M``; ``"box"``: :meth:`render_by_box_size`,
        a :class:`~pointrend.instance.paste.MasksBySize`.

        Args:
            features: ``N x C x H x W`` fine feature map, ``stride`` its stride in image pixels.
                It is read in channels-last layout (copied here once if it is not): point
                sampling reads all channels of a pixel together, several times faster on CPU,
                with the same values.
            boxes: ``N`` tensors ``R_i x 4`` in image pixels; ``classes`` ``R`` their classes.
            output_scales: ``N x 2`` output pixels per image pixel ``(x, y)`` of each image, the
                scale of the per-box grids (``None``: 1, the output is the image itself).
        """
        features = features.contiguous(memory_format=torch.channels_last)
        if self.config.mask_resolution == "box":
            if output_scales is None:
                output_scales = torch.ones(len(boxes), 2, dtype=torch.float64)
            return self.render_by_box_size(features, stride, boxes, classes, output_scales)
        return self.render(features, stride, boxes, classes)

    def render(
        self,
        features: Tensor,
        stride: float,
        boxes: Sequence[Tensor],
        classes: Tensor,
        return_steps: bool = False,
    ):
        """Mask logits of the predicted classes by adaptive subdivision: ``R x 1 x M x M``.

        The fixed mode: ``M = config.output_size`` for every box. The point head still sees all
        K coarse logits, but only the ``classes`` channel is carried through the steps
        (uncertainty of the predicted class). With ``return_steps`` also the coarse logits
        ``R x 1 x 7 x 7`` and the :class:`~pointrend.render.SubdivisionStep` list (figures).
        """
        cfg, settings = self.config, self.config.pointrend
        coarse = self.coarse_logits(features, stride, boxes)
        if _tracing.is_zero(coarse.shape[0]):
            return coarse.new_zeros(0, 1, cfg.output_size, cfg.output_size)
        sizes = subdivision_sizes(
            coarse.shape[-2:], settings.subdivision_steps, (cfg.output_size, cfg.output_size)
        )
        points = min(settings.subdivision_num_points, cfg.output_size**2) * len(sizes)
        head = self._inference_head(features, coarse.shape[0] * points)
        coarse_class = select_class(coarse, classes)
        out = subdivision_inference(
            coarse_class,
            partial(self._predict_points, *head, stride, boxes, coarse, classes),
            calculate_uncertainty,
            steps=settings.subdivision_steps,
            num_points=settings.subdivision_num_points,
            output_size=(cfg.output_size, cfg.output_size),
            return_steps=return_steps,
        )
        return (out[0], coarse_class, out[1]) if return_steps else out

    def render_by_box_size(
        self,
        features: Tensor,
        stride: float,
        boxes: Sequence[Tensor],
        classes: Tensor,
        output_scales: Tensor,
    ) -> MasksBySize:
        """Mask logits of the predicted classes, each box at its own grid (the per-box mode,
        :mod:`~pointrend.instance.box_resolution`): ``R`` boxes in groups of
        ``R_g x 1 x M_h x M_w`` logits, one batched subdivision per distinct grid.

        ``output_scales``: ``N x 2`` output pixels per image pixel ``(x, y)`` of each image.
        """
        coarse = self.coarse_logits(features, stride, boxes)  # R x K x 7 x 7
        if coarse.shape[0] == 0:
            return MasksBySize(0, [])
        device = coarse.device
        counts = torch.tensor([b.shape[0] for b in boxes], device=device)
        image_of = torch.repeat_interleave(torch.arange(len(boxes), device=device), counts)
        all_boxes = torch.cat([b.reshape(-1, 4) for b in boxes]).to(torch.float32)
        scales = torch.as_tensor(output_scales, dtype=torch.float64, device=device)[image_of]
        groups, total = group_by_grid(self.config, all_boxes, scales, coarse.shape[-2:])
        head = self._inference_head(features, total)
        coarse_class = select_class(coarse, classes)
        masks = []
        for index, grid, points in groups:
            per_image = torch.bincount(image_of[index], minlength=len(boxes)).tolist()
            group_boxes = all_boxes[index].split(per_image)
            predict = partial(
                self._predict_points, *head, stride, group_boxes, coarse[index], classes[index]
            )
            logits = subdivision_inference(
                coarse_class[index],
                predict,
                calculate_uncertainty,
                steps=self.config.pointrend.subdivision_steps,
                num_points=points,
                output_size=grid,
            )
            masks.append((index, logits))
        return MasksBySize(coarse.shape[0], masks)

    def _inference_head(self, features: Tensor, total_points) -> tuple:
        """``(head, fine_map, projected)``: the point head inference predicts with and the map it
        samples.

        Without autograd and tracing the head is a
        :class:`~pointrend._fused_head.FusedPointHead` (the predicted class's row only), and
        ``features`` (``N x C x H x W``) are projected by its first layer once when
        ``total_points`` (all boxes, all steps) outnumber their pixels; otherwise the point head
        itself on ``features``.
        """
        head = inference_point_head(self.point_head)
        if not isinstance(head, FusedPointHead):
            return head, features, False
        pixels = features.shape[0] * features.shape[-2] * features.shape[-1]
        projected = head.num_hidden > 0 and total_points > pixels
        return head, head.project_fine_features(features) if projected else features, projected

    def _predict_points(
        self,
        head: PointHead | FusedPointHead,
        fine_map: Tensor,
        projected: bool,
        stride: float,
        boxes: Sequence[Tensor],
        coarse: Tensor,
        classes: Tensor,
        points: Tensor,
    ) -> Tensor:
        """Logits ``R x 1 x P`` of ``classes`` at box-relative ``points`` (``R x P x 2``).

        With all but ``points`` bound (:func:`functools.partial`), the point predictor of
        :func:`~pointrend.render.subdivision_inference`. ``head``, ``fine_map``, ``projected``:
        from :meth:`_inference_head`; ``boxes``: ``N`` tensors ``R_i x 4`` (``R = sum(R_i)``),
        ``coarse`` their ``R x K x 7 x 7`` logits.
        """
        if not isinstance(head, FusedPointHead):
            logits, _ = self.point_logits(fine_map, stride, boxes, coarse, points)
            return select_class(logits, classes)
        fine, _ = point_sample_fine_grained_features([fine_map], [stride], boxes, points)
        return head(fine, point_sample(coarse, points), classes, fine_projected=projected)
