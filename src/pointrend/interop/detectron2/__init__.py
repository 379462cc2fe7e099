"""detectron2 checkpoints (the PointRend model zoo, a detectron2 trainer's output) as pointrend
models."""

from .config import D2Config, D2ImportError

__all__ = ["D2Config", "D2ImportError"]
