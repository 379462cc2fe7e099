"""Options of PointRend's mask branch (:class:`PointRendMaskConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

from ..settings import INSTANCE_SETTINGS, PointRendSettings

MASK_RESOLUTIONS = ("fixed", "box")

__all__ = ["MASK_RESOLUTIONS", "PointRendMaskConfig"]


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
