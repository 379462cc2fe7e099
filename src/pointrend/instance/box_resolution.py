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

:meth:`~pointrend.instance.mask_head.PointRendMaskBranch.render_by_box_size` renders this mode;
its result is a :class:`~pointrend.instance.paste.MasksBySize`, which the transform pastes one
size at a time.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ..render import subdivision_sizes

__all__ = ["box_output_size", "box_grid_sides", "step_points", "group_by_grid"]


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


def group_by_grid(
    config, boxes: Tensor, scales: Tensor, coarse_size: Sequence[int]
) -> tuple[list[tuple[Tensor, tuple[int, int], list[int]]], int]:
    """The boxes grouped by their grid, and the points all groups predict in all steps.

    Args:
        config: a ``PointRendMaskConfig``.
        boxes: ``R x 4`` in image pixels; ``scales`` ``R x 2`` output pixels per image pixel
            ``(x, y)`` of each box's image.
        coarse_size: ``(h, w)`` of the coarse masks.

    Returns:
        ``(groups, total)``: per distinct grid ``(index, (M_h, M_w), points)``, ``index`` the
        ``R_g`` int64 positions of its boxes and ``points`` its points per step.
    """
    grids = box_grid_sides(box_output_size(boxes, scales), coarse_size[-1], config.max_mask_size)
    groups, total = [], 0
    for grid in torch.unique(grids, dim=0).tolist():
        index = torch.nonzero((grids == torch.tensor(grid, device=grids.device)).all(dim=1))[:, 0]
        steps = subdivision_sizes(coarse_size, config.pointrend.subdivision_steps, grid)
        points = step_points(config, steps)
        total += len(index) * sum(map(min, points, (h * w for h, w in steps)))
        groups.append((index, tuple(grid), points))
    return groups, total
