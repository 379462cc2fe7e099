"""Which model builder a config names (``model.task``, ``model.name``, ``model.arch``).

The builders are those of :mod:`pointrend.models`, taken from the task packages that define them
(loaded on first use, so that reading a config loads no model code).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

__all__ = ["INSTANCE_MODELS", "SEMANTIC_ARCHS", "SEMANTIC_MODELS", "check_task", "model_builder"]

INSTANCE_MODELS = {"pointrend": "pointrend_maskrcnn", "maskrcnn": "maskrcnn"}  # name -> builder
SEMANTIC_MODELS = ("pointrend", "coarse")
SEMANTIC_ARCHS = {"fpn": "semantic_fpn", "semantic_fpn": "semantic_fpn", "deeplabv3": "deeplabv3"}


def check_task(task: str) -> str:
    if task not in ("instance", "semantic"):
        raise ValueError(f"model.task must be 'instance' or 'semantic', got {task!r}")
    return task


def model_builder(cfg) -> Callable[..., nn.Module]:
    """The builder a :class:`~pointrend.engine.config.ModelConfig` names (a function of
    :mod:`pointrend.models`)."""
    if check_task(cfg.task) == "instance":
        from .. import instance

        if cfg.name not in INSTANCE_MODELS:
            raise ValueError(
                f"model.name must be one of {tuple(INSTANCE_MODELS)} for instances, "
                f"got {cfg.name!r}"
            )
        return getattr(instance, INSTANCE_MODELS[cfg.name])
    from .. import semantic

    if cfg.name not in SEMANTIC_MODELS:
        raise ValueError(
            f"model.name must be one of {SEMANTIC_MODELS} for semantic, got {cfg.name!r}"
        )
    if cfg.arch not in SEMANTIC_ARCHS:
        raise ValueError(
            f"model.arch must be one of {sorted(SEMANTIC_ARCHS)} for semantic models, "
            f"got {cfg.arch!r}"
        )
    baseline = SEMANTIC_ARCHS[cfg.arch]
    return getattr(semantic, baseline if cfg.name == "coarse" else f"pointrend_{baseline}")
