"""PointRend for PyTorch: image segmentation as rendering.

The core (``points``, ``head``, ``render``) works on any coarse logits and any fine feature map;
the task packages put it on torchvision's models.
"""

import time as _time

IMPORTED_AT = _time.perf_counter()  # the demo reports its time from here (imports included)

from .head import PointHead  # noqa: E402 (after the clock)
from .points import (  # noqa: E402
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
from .render import (  # noqa: E402
    SubdivisionStep,
    dense_point_prediction,
    subdivision_inference,
    subdivision_sizes,
)

__version__ = "0.1.0"

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
