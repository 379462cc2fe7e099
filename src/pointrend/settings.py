"""PointRend's own settings, shared by every task: one dataclass, one validation.

:class:`PointRendSettings` holds what PointRend adds to a segmentation model: how training
points are chosen, how many points each subdivision step predicts, and the point head's size.
The task configs (:class:`~pointrend.instance.PointRendMaskConfig`,
:class:`~pointrend.semantic.SemanticPointRendConfig`) embed it as their ``pointrend`` field,
each with its task's defaults: :data:`INSTANCE_SETTINGS` and :data:`SEMANTIC_SETTINGS`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

from .points import TRAINING_SAMPLING_MODES

__all__ = ["PointRendSettings", "INSTANCE_SETTINGS", "SEMANTIC_SETTINGS", "replace_options"]


@dataclass(frozen=True)
class PointRendSettings:
    """PointRend's settings (the defaults are the instance ones: Mask R-CNN on COCO).

    Attributes:
        train_num_points: N, points per region in training (a box: 14 x 14 = 196; an image in
            semantic segmentation: 2048).
        train_point_sampling: ``"uncertain"`` (the biased random sampler: ``k * N`` uniform
            candidates, the ``int(beta * N)`` most uncertain kept, the rest fresh uniform
            points), ``"grid"`` (the cell centres of a regular ``s x s`` grid,
            ``s = isqrt(N)``) or ``"uniform"`` (N uniform points); see
            :func:`pointrend.points.sample_training_points`.
        oversample_ratio: k >= 1 (3), used by ``"uncertain"``.
        importance_sample_ratio: beta in ``[0, 1]`` (0.75), used by ``"uncertain"``.
        subdivision_steps: at most this many 2x steps at inference; ``None``: as many as the
            output resolution needs.
        subdivision_num_points: points predicted per step (instances: 28 x 28 = 784; semantic:
            8192); 0 leaves the upsampled coarse logits as they are.
        point_head_fc_dim, point_head_num_fc: the point head's hidden layers (3 x 256).
        point_head_coarse_pred_each_layer: concatenate the coarse logits to the input of every
            point-head layer (instances), not only to the first (semantic).
    """

    train_num_points: int = 196
    train_point_sampling: str = "uncertain"
    oversample_ratio: float = 3.0
    importance_sample_ratio: float = 0.75
    subdivision_steps: int | None = None
    subdivision_num_points: int = 784
    point_head_fc_dim: int = 256
    point_head_num_fc: int = 3
    point_head_coarse_pred_each_layer: bool = True

    def __post_init__(self):
        steps = self.subdivision_steps
        checks = [  # (field, valid, rule)
            ("train_num_points", self.train_num_points >= 1, ">= 1"),
            (
                "train_point_sampling",
                self.train_point_sampling in TRAINING_SAMPLING_MODES,
                f"one of {TRAINING_SAMPLING_MODES}",
            ),
            ("oversample_ratio", self.oversample_ratio >= 1, ">= 1"),
            ("importance_sample_ratio", 0 <= self.importance_sample_ratio <= 1, "in [0, 1]"),
            ("subdivision_steps", steps is None or steps >= 0, "None or >= 0"),
            ("subdivision_num_points", self.subdivision_num_points >= 0, ">= 0"),
            ("point_head_fc_dim", self.point_head_fc_dim >= 1, ">= 1"),
            ("point_head_num_fc", self.point_head_num_fc >= 0, ">= 0"),
        ]
        for field, valid, rule in checks:
            if not valid:
                raise ValueError(
                    f"PointRend setting {field} must be {rule}, got {getattr(self, field)!r}"
                )


INSTANCE_SETTINGS = PointRendSettings()
SEMANTIC_SETTINGS = PointRendSettings(
    train_num_points=2048, subdivision_num_points=8192, point_head_coarse_pred_each_layer=False
)

Config = TypeVar("Config")


def replace_options(config: Config, **options: Any) -> Config:
    """A copy of a task config with flat options set (the names builders and YAML files use).

    A name that is a field of ``config`` itself sets that field; any other name sets the field
    of its embedded :class:`PointRendSettings` (``config.pointrend``); the two share no name
    (e.g. :class:`~pointrend.instance.PointRendMaskConfig`'s ``coarse_head_fc_dim`` and the
    settings' ``point_head_fc_dim``). An unknown name raises a ``ValueError`` naming it.
    """
    own_fields = {f.name for f in dataclasses.fields(config)}
    shared_fields = {f.name for f in dataclasses.fields(PointRendSettings)}
    unknown = sorted(set(options) - own_fields - shared_fields)
    if unknown:
        raise ValueError(
            f"unknown {type(config).__name__} option(s) {unknown}; known: "
            f"{sorted((own_fields | shared_fields) - {'pointrend'})}"
        )
    own = {k: v for k, v in options.items() if k in own_fields}
    shared = {k: v for k, v in options.items() if k not in own_fields}
    config = dataclasses.replace(config, **own)
    if shared:
        settings = dataclasses.replace(config.pointrend, **shared)
        config = dataclasses.replace(config, pointrend=settings)
    return config
