"""PointRend for PyTorch: image segmentation as rendering.

The core (``points``, ``head``, ``render``) works on any coarse logits and any fine feature map;
the task packages put it on torchvision's models.
"""

from .head import PointHead
from .points import (
    box_to_image_coords,
    calculate_semantic_uncertainty,
    calculate_uncertainty,
    generate_regular_grid_point_coords,
    get_uncertain_point_coords_on_grid,
    get_uncertain_point_coords_with_randomness,
    grid_cell_centres,
    image_to_box_coords,
    image_to_feature_coords,
    point_sample,
    point_sample_fine_grained_features,
    sample_training_points,
    select_class,
)
from .render import (
    SubdivisionStep,
    dense_point_prediction,
    subdivision_inference,
    subdivision_sizes,
)

__version__ = "0.1.0"


def __getattr__(name: str):
    # pointrend.Predictor: loaded on first use, so that importing the core loads no engine
    if name == "Predictor":
        from .engine.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'pointrend' has no attribute {name!r}")


__all__ = [
    "PointHead",
    "SubdivisionStep",
    "box_to_image_coords",
    "calculate_semantic_uncertainty",
    "calculate_uncertainty",
    "dense_point_prediction",
    "generate_regular_grid_point_coords",
    "get_uncertain_point_coords_on_grid",
    "get_uncertain_point_coords_with_randomness",
    "grid_cell_centres",
    "image_to_box_coords",
    "image_to_feature_coords",
    "point_sample",
    "point_sample_fine_grained_features",
    "sample_training_points",
    "select_class",
    "subdivision_inference",
    "subdivision_sizes",
]
