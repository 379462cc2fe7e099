"""Per-box mask resolution (``mask_resolution="box"``, inference only).

Every detection is rendered at about its own size in the output image (the original image, after
the transform's resize back), instead of every box at the same ``output_size``:

* each side of a box's grid is the smallest ``coarse * 2**s`` (``s >= 0``, coarse = 7) at least
  that side of the box in output pixels (height and width each), capped at ``max_mask_size``.
  A 600 x 40 px box gets a 896 x 56 grid, not 896 x 896. Each step doubles both sides, a side
  stopping once it has reached its own (the last step then stops at the cap). A box of 7 pixels
  or less keeps its coarse 7 x 7 mask (no refinement step); a box of exactly ``7 * 2**s`` pixels
  gets that grid;
* the points per step follow the boundary, which grows with a grid's side (its area with the
  square): with ``k = points_per_side`` (default ``subdivision_num_points / output_size``,
  784 / 224 = 3.5) and mean sides ``(M_h + M_w) / 2`` of the final grid ``M`` and of a step's
  grid ``s``, a step predicts ``round(k * min(M, max(s, output_size)))`` points. A grid up to
  224 gets ``k * M`` points at every step (224 x 224: the fixed mode's 784 at every step, the
  same mask); a larger grid is rendered as a 224 one first, then
  each further doubling predicts ``k`` points per cell of that step's side (3584 at the last
  step of 1024 x 1024), the band of cells the paper refines at 224, at every scale;
* boxes with the same grid (the same steps) are rendered in one batched call: the loop runs
  over the few distinct grids, never over boxes.

The result is a :class:`~pointrend.instance.paste.MasksBySize`, which the transform pastes one
size at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..points import calculate_uncertainty, select_class
from ..render import subdivision_inference, subdivision_sizes
from .paste import MasksBySize

__all__ = ["box_output_size", "box_grid_sides", "step_points", "render_by_box_size"]


def box_output_size(boxes: Tensor, scales: Tensor) -> Tensor:
    """``R x 2`` float64 ``(height, width)`` of each box in output pixels.

    Args:
        boxes: ``R x 4`` ``(x0, y0, x1, y1)`` in the pixels the boxes are given in.
        scales: ``R x 2`` output pixels per box pixel, ``(x, y)``.
    """
    extent = (boxes[:, 2:4] - boxes[:, 0:2]).to(torch.float64) * scales.to(torch.float64)
    return extent.flip(1).clamp(min=0)


def box_grid_sides(sides: Tensor, coarse_side: int, max_size: int) -> Tensor:
    """Grid sides (int64, the shape of ``sides``): ``coarse_side * 2**s`` for the smallest
    ``s >= 0`` with a side at least ``sides`` (output pixels), capped at ``max_size``."""
    ratio = (sides.to(torch.float64) / coarse_side).clamp(min=1.0)
    steps = torch.ceil(torch.log2(ratio) - 1e-9).clamp(min=0, max=62).to(torch.int64)
    return (coarse_side * 2**steps).clamp(max=max(max_size, coarse_side))


def step_points(config, steps: Sequence[Sequence[int]]) -> list[int]:
    """Points predicted at each step of a box whose maps after each step are ``steps`` (the
    last one the final grid), for a ``PointRendMaskConfig`` (rule in the module docstring)."""
    per_side = config.points_per_side
    if per_side is None:
        per_side = config.pointrend.subdivision_num_points / config.output_size
    final = sum(steps[-1]) / 2 if steps else 0
    return [int(round(per_side * min(final, max(sum(s) / 2, config.output_size)))) for s in steps]


def render_by_box_size(
    branch, features: Tensor, stride: float, boxes: Sequence[Tensor], classes: Tensor, scales
) -> MasksBySize:
    """Mask logits of the predicted classes, each box at its own grid (module docstring).

    Args:
        branch: a :class:`~pointrend.instance.mask_head.PointRendMaskBranch`.
        features: ``N x C x H x W`` fine feature map; ``stride`` its stride in image pixels.
        boxes: ``N`` tensors ``R_i x 4`` in image pixels; ``classes`` ``R`` their classes.
        scales: ``N x 2`` output pixels per image pixel ``(x, y)`` of each image.

    Returns:
        :class:`MasksBySize` of ``R`` boxes, groups of ``R_g x 1 x M_h x M_w`` logits.
    """
    cfg, settings = branch.config, branch.config.pointrend
    features = features.contiguous(memory_format=torch.channels_last)
    coarse = branch.coarse_logits(features, stride, boxes)  # R x K x 7 x 7
    R = coarse.shape[0]
    if R == 0:
        return MasksBySize(0, [])
    device = coarse.device
    counts = torch.tensor([b.shape[0] for b in boxes], device=device)
    image_of = torch.repeat_interleave(torch.arange(len(boxes), device=device), counts)
    all_boxes = torch.cat([b.reshape(-1, 4) for b in boxes]).to(torch.float32)
    box_scales = torch.as_tensor(scales, dtype=torch.float64, device=device)[image_of]
    grids = box_grid_sides(
        box_output_size(all_boxes, box_scales), coarse.shape[-1], cfg.max_mask_size
    )  # R x 2
    plans = []
    for grid in torch.unique(grids, dim=0).tolist():
        index = torch.nonzero((grids == torch.tensor(grid, device=device)).all(dim=1))[:, 0]
        steps = subdivision_sizes(coarse.shape[-2:], settings.subdivision_steps, grid)
        plans.append((index, tuple(grid), steps, step_points(cfg, steps)))
    total = sum(len(i) * sum(map(min, pts, (h * w for h, w in st))) for i, _, st, pts in plans)
    predictor = branch.point_predictor(features, stride, coarse, total)
    coarse_class = select_class(coarse, classes)
    groups = []
    for index, grid, _, points in plans:
        per_image = torch.bincount(image_of[index], minlength=len(boxes)).tolist()
        group_boxes = all_boxes[index].split(per_image)
        logits = subdivision_inference(
            coarse_class[index],
            predictor(group_boxes, coarse[index], classes[index]),
            calculate_uncertainty,
            steps=settings.subdivision_steps,
            num_points=points,
            output_size=grid,
        )
        groups.append((index, logits))
    return MasksBySize(R, groups)
