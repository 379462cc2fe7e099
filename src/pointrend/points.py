"""Point coordinates and point sampling: the primitives every PointRend task shares.

Conventions (every function of the package follows them):

* A point is ``(x, y)`` in ``[0, 1] x [0, 1]``, x first, relative to a region (a box or a whole
  map). Pixel ``(i, j)`` of an ``H x W`` map has its centre at ``((i + 0.5) / W, (j + 0.5) / H)``:
  the half-pixel offset of ``align_corners=False``. Grid cells are numbered row-major.
* Bilinear sampling is ``grid_sample(map, 2 * points - 1, align_corners=False)`` with zero
  padding outside the map; the renderer upsamples with the same convention
  (``interpolate(..., mode="bilinear", align_corners=False)``).
* Feature maps are ``N x C x H x W``, point sets ``N x P x 2``, point features ``N x C x P``.
* Random points are drawn with ``torch.rand`` on the device of the logits they are chosen from;
  the order of the draws is part of each sampler's contract (stated in its docstring), so that a
  seed gives the same points.

Nothing here knows about datasets or models.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ._tracing import as_size, capped_count, is_zero, sizes_tensor

__all__ = [
    "point_sample",
    "generate_regular_grid_point_coords",
    "grid_cell_centres",
    "get_uncertain_point_coords_with_randomness",
    "TRAINING_SAMPLING_MODES",
    "sample_training_points",
    "get_uncertain_point_coords_on_grid",
    "select_class",
    "calculate_uncertainty",
    "calculate_semantic_uncertainty",
    "box_to_image_coords",
    "image_to_box_coords",
    "image_to_feature_coords",
    "point_sample_fine_grained_features",
]


def point_sample(input: Tensor, point_coords: Tensor, **kwargs) -> Tensor:
    """Bilinearly sample ``input`` at normalised points.

    Args:
        input: ``N x C x H x W`` map.
        point_coords: ``N x P x 2`` or ``N x Hg x Wg x 2`` points ``(x, y)`` in ``[0, 1]``,
            relative to the whole map (``(0.5 / W, 0.5 / H)`` is the centre of the top-left cell).
        **kwargs: passed to :func:`torch.nn.functional.grid_sample`; ``align_corners`` defaults
            to ``False`` (the project's one convention), ``padding_mode`` to zeros.

    Returns:
        ``N x C x P`` (or ``N x C x Hg x Wg``) sampled values, in ``input``'s dtype.

    The grid is cast to ``input``'s dtype, so that mixed precision (``float16`` / ``bfloat16``
    features with ``float32`` coordinates, as happens under autocast) works.
    """
    if point_coords.shape[-1] != 2:
        raise ValueError(
            f"point_coords must end in a dimension of 2 (x, y), got {tuple(point_coords.shape)}"
        )
    if input.dim() != 4:
        raise ValueError(f"input must be N x C x H x W, got shape {tuple(input.shape)}")
    if point_coords.shape[0] != input.shape[0]:
        raise ValueError(
            f"input has batch size {input.shape[0]} but point_coords has {point_coords.shape[0]}"
        )
    flat = point_coords.dim() == 3
    if flat:
        point_coords = point_coords.unsqueeze(2)
    kwargs.setdefault("align_corners", False)
    grid = (2.0 * point_coords - 1.0).to(input.dtype)
    output = F.grid_sample(input, grid, **kwargs)
    return output.squeeze(3) if flat else output


def grid_cell_centres(height: int, width: int, device=None, dtype=torch.float32) -> Tensor:
    """Centres of the cells of an ``height x width`` grid, row-major, as ``(H*W) x 2`` points.

    Point ``j * width + i`` is ``((i + 0.5) / width, (j + 0.5) / height)``.
    """
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).reshape(height * width, 2)


def generate_regular_grid_point_coords(R: int, side_size: int, device=None) -> Tensor:
    """Cell centres of a ``side_size x side_size`` grid, repeated for ``R`` regions.

    Returns:
        ``R x side_size**2 x 2`` points, row-major (x varies fastest), x first.
    """
    centres = grid_cell_centres(side_size, side_size, device=device)
    return centres.unsqueeze(0).expand(R, -1, -1).contiguous()


def flat_indices_to_cell_centres(indices: Tensor, height: int, width: int) -> Tensor:
    """Flat (row-major) cell indices ``R x P`` of an ``height x width`` grid -> ``R x P x 2``."""
    x = ((indices % width).to(torch.float32) + 0.5) / width
    y = (torch.div(indices, width, rounding_mode="floor").to(torch.float32) + 0.5) / height
    return torch.stack([x, y], dim=-1)


def get_uncertain_point_coords_with_randomness(
    coarse_logits: Tensor,
    uncertainty_func: Callable[[Tensor], Tensor],
    num_points: int,
    oversample_ratio: float,
    importance_sample_ratio: float,
) -> Tensor:
    """The training point sampler: biased random sampling towards uncertain regions.

    1. Draw ``int(k * N)`` candidates uniformly in ``[0, 1]^2`` (``k = oversample_ratio``) as one
       ``torch.rand(R, int(k * N), 2)``.
    2. Interpolate ``coarse_logits`` at the candidates, **then** measure their uncertainty with
       ``uncertainty_func`` (interpolating uncertainties instead would be wrong: uncertainty is
       not linear in the logits).
    3. Keep the ``int(beta * N)`` most uncertain candidates (``beta = importance_sample_ratio``).
    4. Append ``N - int(beta * N)`` fresh uniform points, drawn as one
       ``torch.rand(R, N - int(beta * N), 2)``.

    Args:
        coarse_logits: ``R x C x h x w`` coarse predictions (C = 1 for a class-specific mask
            whose channel has already been selected).
        uncertainty_func: maps point logits ``R x C x P`` to uncertainties ``R x 1 x P``
            (higher = more uncertain).
        num_points: N, the number of points to return per region.
        oversample_ratio: k >= 1.
        importance_sample_ratio: beta in ``[0, 1]``.

    Returns:
        ``R x N x 2`` float32 points: the importance points followed by the fresh ones. The
        sampler is not differentiable (call it under ``torch.no_grad()`` or not; it detaches).
    """
    if oversample_ratio < 1:
        raise ValueError(f"oversample_ratio must be >= 1, got {oversample_ratio}")
    if not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"importance_sample_ratio must be in [0, 1], got {importance_sample_ratio}"
        )
    R, device = coarse_logits.shape[0], coarse_logits.device
    num_sampled = int(num_points * oversample_ratio)
    num_uncertain = int(importance_sample_ratio * num_points)
    num_random = num_points - num_uncertain
    with torch.no_grad():
        candidates = torch.rand(R, num_sampled, 2, device=device)
        candidate_logits = point_sample(coarse_logits.detach(), candidates)
        uncertainties = uncertainty_func(candidate_logits)[:, 0, :]
        top = torch.topk(uncertainties, k=num_uncertain, dim=1).indices
        chosen = torch.gather(candidates, 1, top.unsqueeze(-1).expand(-1, -1, 2))
        if num_random > 0:
            fresh = torch.rand(R, num_random, 2, device=device)
            chosen = torch.cat([chosen, fresh], dim=1)
    return chosen


TRAINING_SAMPLING_MODES = ("uncertain", "grid", "uniform")


def sample_training_points(
    coarse_logits: Tensor,
    uncertainty_func: Callable[[Tensor], Tensor],
    num_points: int,
    mode: str = "uncertain",
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
) -> Tensor:
    """Training points for the point head, ``R x P x 2`` in ``[0, 1]`` of each region.

    Modes (:data:`TRAINING_SAMPLING_MODES`):

    * ``"uncertain"``: :func:`get_uncertain_point_coords_with_randomness` with k
      (``oversample_ratio``) and beta (``importance_sample_ratio``), ``P = num_points``.
    * ``"grid"``: the cell centres of a regular ``s x s`` grid, ``s = isqrt(num_points)``
      (``P = s * s``); no randomness.
    * ``"uniform"``: ``P = num_points`` points drawn as one ``torch.rand(R, P, 2)``.

    Only ``"uncertain"`` reads ``coarse_logits`` (``R x C x h x w``) and ``uncertainty_func``
    (point logits ``R x C x P`` -> uncertainties ``R x 1 x P``).
    """
    if mode not in TRAINING_SAMPLING_MODES:
        raise ValueError(
            f"training point sampling mode must be one of {TRAINING_SAMPLING_MODES}, got {mode!r}"
        )
    R, device = coarse_logits.shape[0], coarse_logits.device
    if mode == "grid":
        return generate_regular_grid_point_coords(R, math.isqrt(num_points), device=device)
    if mode == "uniform":
        return torch.rand(R, num_points, 2, device=device)
    return get_uncertain_point_coords_with_randomness(
        coarse_logits, uncertainty_func, num_points, oversample_ratio, importance_sample_ratio
    )


def get_uncertain_point_coords_on_grid(
    uncertainty_map: Tensor, num_points: int
) -> tuple[Tensor, Tensor]:
    """The ``num_points`` most uncertain cells of a map (inference point selection).

    Args:
        uncertainty_map: ``R x 1 x H x W``, higher = more uncertain.
        num_points: how many cells to pick; capped at ``H * W``.

    Returns:
        ``(indices, coords)``: flat row-major cell indices ``R x P`` (int64) and the cells'
        centres ``R x P x 2`` (float32), ``P = min(H * W, num_points)``, in ``torch.topk`` order.
    """
    H, W = uncertainty_map.shape[-2:]
    P = capped_count(H * W, num_points)
    indices = torch.topk(uncertainty_map.flatten(1), k=P, dim=1).indices
    return indices, flat_indices_to_cell_centres(indices, H, W)


def select_class(logits: Tensor, classes: Tensor) -> Tensor:
    """Channel ``classes[r]`` of each region ``r``: ``R x K x ...`` -> ``R x 1 x ...``.

    ``classes`` holds ``R`` class indices (any integer dtype).
    """
    index = classes.to(torch.long).view(-1, *([1] * (logits.dim() - 1)))
    return torch.gather(logits, 1, index.expand(-1, 1, *logits.shape[2:]))


def calculate_uncertainty(logits: Tensor, classes: Tensor | None = None) -> Tensor:
    """Uncertainty of binary (per-instance) mask logits: ``-|logit|`` of the relevant class.

    Args:
        logits: ``R x C x ...`` (points ``R x C x P`` or maps ``R x C x H x W``).
        classes: ``R`` class indices selecting the relevant channel of each region (the
            ground-truth class in training, the predicted class at inference). May be omitted
            when ``C == 1``.

    Returns:
        ``R x 1 x ...``; 0 (the maximum) where the probability is 0.5.
    """
    if classes is not None:
        return -select_class(logits, classes).abs()
    if logits.shape[1] != 1:
        raise ValueError(
            f"logits have {logits.shape[1]} channels: pass `classes` to select one per region"
        )
    return -logits.abs()


def calculate_semantic_uncertainty(logits: Tensor) -> Tensor:
    """Multi-class uncertainty: ``logit_2nd - logit_1st`` (<= 0, 0 = most uncertain).

    Args:
        logits: ``N x K x ...`` class logits (K >= 2; with K == 1, ``-|logit|``).

    Returns:
        ``N x 1 x ...``.
    """
    if logits.shape[1] == 1:
        return -logits.abs()
    top2 = torch.topk(logits, k=2, dim=1).values
    return top2[:, 1:2] - top2[:, 0:1]


# --- boxes, images and feature maps ------------------------------------------------------------


def box_to_image_coords(boxes: Tensor, point_coords: Tensor) -> Tensor:
    """Points relative to boxes -> image coordinates (pixels).

    Args:
        boxes: ``R x 4`` boxes ``(x0, y0, x1, y1)`` in image pixels.
        point_coords: ``R x P x 2`` points in ``[0, 1]`` relative to each box.

    Returns:
        ``R x P x 2``: ``(x0 + u * (x1 - x0), y0 + v * (y1 - y0))``.
    """
    origin = boxes[:, None, 0:2]
    size = boxes[:, None, 2:4] - boxes[:, None, 0:2]
    return origin + point_coords.to(boxes.dtype) * size


def image_to_box_coords(boxes: Tensor, image_coords: Tensor) -> Tensor:
    """Inverse of :func:`box_to_image_coords` (boxes of zero width/height map to 0.5)."""
    origin = boxes[:, None, 0:2]
    size = boxes[:, None, 2:4] - boxes[:, None, 0:2]
    safe = torch.where(size > 0, size, torch.ones_like(size))
    return torch.where(size > 0, (image_coords - origin) / safe, torch.full_like(image_coords, 0.5))


def image_to_feature_coords(
    image_coords: Tensor, feature_size: Sequence[int], stride: float
) -> Tensor:
    """Image pixels -> points in ``[0, 1]`` of a feature map of ``stride`` and padded ``H x W``.

    The map covers ``W * stride`` by ``H * stride`` image pixels (torchvision pads a batch to a
    multiple of the largest stride, so all images of a batch share one padded size).
    """
    H, W = as_size(feature_size[0]), as_size(feature_size[1])
    one = image_coords.new_ones(())  # tensor arithmetic (traced sizes stay symbolic)
    scale = torch.stack([one * W * stride, one * H * stride])
    return image_coords / scale


def point_sample_fine_grained_features(
    features_list: Sequence[Tensor],
    feature_strides: Sequence[float],
    boxes: Sequence[Tensor],
    point_coords: Tensor,
) -> tuple[Tensor, Tensor]:
    """Sample features at box-relative points for a whole batch of images at once.

    Args:
        features_list: feature maps, each ``N x C_l x H_l x W_l`` (one per level, same batch).
        feature_strides: the stride of each map relative to the (padded) image.
        boxes: ``N`` tensors ``R_i x 4`` of boxes ``(x0, y0, x1, y1)`` in image pixels, one per
            image, as torchvision passes proposals.
        point_coords: ``R x P x 2`` points relative to each box, ``R = sum(R_i)``, boxes in the
            order of ``torch.cat(boxes)``.

    Returns:
        ``(point_features, image_coords)``: ``R x sum(C_l) x P`` features (levels concatenated
        in order) and the points in image pixels ``R x P x 2``.

    All images are sampled in one ``grid_sample`` per level: each image's points are laid out in
    a padded ``N x max(R_i) x P`` grid and the results gathered back, with no loop over images.
    """
    if len(features_list) != len(feature_strides):
        raise ValueError(
            f"got {len(features_list)} feature maps but {len(feature_strides)} strides"
        )
    num_images = len(boxes)
    if any(f.shape[0] != num_images for f in features_list):
        raise ValueError(
            f"feature maps have batch sizes {[f.shape[0] for f in features_list]} "
            f"but boxes are given for {num_images} images"
        )
    all_boxes = (
        torch.cat([b.reshape(-1, 4) for b in boxes]) if num_images else point_coords.new_zeros(0, 4)
    )
    R, P = point_coords.shape[0], point_coords.shape[1]
    if all_boxes.shape[0] != R:
        raise ValueError(f"{all_boxes.shape[0]} boxes given but point_coords has {R} regions")
    image_coords = box_to_image_coords(all_boxes.to(torch.float32), point_coords.to(torch.float32))
    channels = sum(f.shape[1] for f in features_list)
    ref = features_list[0]
    if is_zero(R):
        return ref.new_zeros(0, channels, P), image_coords

    device = point_coords.device
    sizes = [b.shape[0] for b in boxes]
    counts = sizes_tensor(sizes, device)
    ends = torch.cumsum(counts, 0)
    # Each box's image is the number of images whose boxes end before it.
    box_index = torch.arange(R, device=device)
    image_index = (box_index[:, None] >= ends[None, :]).sum(1)
    slot = box_index - (ends - counts)[image_index]
    # The padded N x max(R_i) layout is gathered (not scattered: an in-place index_put would not
    # trace); slots past an image's boxes read box 0, and their samples are never read back.
    slots = torch.arange(as_size(counts.max()), device=device)
    source = (ends - counts)[:, None] + slots[None, :]
    source = torch.where(slots[None, :] < counts[:, None], source, torch.zeros_like(source))
    padded = image_coords[source]  # N x max(R_i) x P x 2

    sampled = []
    for features, stride in zip(features_list, feature_strides):
        grid = image_to_feature_coords(padded, features.shape[-2:], stride)
        per_image = point_sample(features, grid).transpose(0, 1)  # C x N x max(R_i) x P
        # One image: its map already holds every box, in order (no gather, no copy).
        sampled.append(per_image[:, 0] if num_images == 1 else per_image[:, image_index, slot])
    # C x R x P in memory, returned as an R x C x P view: the point head multiplies channels x
    # points matrices, which this layout gives without a copy.
    merged = sampled[0] if len(sampled) == 1 else torch.cat(sampled, dim=0)
    return merged.transpose(0, 1), image_coords
