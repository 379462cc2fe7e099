"""``python -m benchmarks.per_box budget`` (key ``point_budget``): the points per step a mask
grid of side M needs, an oracle (the clamped logit of each cell's coverage by a random shape
filling the box) in place of the point head. Rules: ``final_side`` ``k * M`` a step;
``step_side`` ``k * s`` at a step of side ``s``; ``per_box`` the per-box mode's; ``dense`` every
cell (exact: checked); ``fixed224`` rendered at 224, resampled to M; ``no_refinement``.
Boundary IoU and mask IoU against the exact mask.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pointrend.data.shapes import Shape, coverage, random_shape
from pointrend.evaluation.boundary import boundary_region
from pointrend.instance import PointRendMaskConfig
from pointrend.instance.box_resolution import step_points
from pointrend.points import calculate_uncertainty
from pointrend.render import shortcut_steps, subdivision_inference, subdivision_sizes


def batched_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of each pair of ``R x H x W`` bool masks -> ``R`` float64 (1 where both are empty)."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


COARSE = 7
RULES = ("final_side", "step_side", "per_box")
LOGIT_CLAMP = 10.0
SAMPLES_PER_SIDE = 4  # coverage samples per cell side at the largest grid side
BAND_SAMPLES = 2**21  # coverage is sampled in bands of rows of about this many samples
FIXED_SIDE, FIXED_POINTS = 224, 784  # the fixed mode: every box at 224 x 224, 784 points a step


def shape_coverage(shapes: Sequence[Shape], side: int, ss: int = SAMPLES_PER_SIDE) -> Tensor:
    """``R x side x side`` coverage of each shape stretched onto ``[0, side]^2`` (``ss x ss``
    samples a cell), in bands of rows; the loop is over shapes: each is its own function."""
    rows = max(1, BAND_SAMPLES // (side * ss * ss))
    maps = []
    for shape in shapes:
        x0, y0, x1, y1 = shape.bbox
        sx, sy = side / max(x1 - x0, 1e-9), side / max(y1 - y0, 1e-9)

        def inside(x, y, shape=shape, sx=sx, sy=sy, x0=x0, y0=y0):
            return shape.inside(x / sx + x0, y / sy + y0)

        total = np.zeros((side, side), dtype=np.float32)
        for top in range(0, side, rows):
            band = Shape(shape.label, inside, (0.0, top, float(side), min(top + rows, side)))
            total += coverage(band, side, side, ss)
        maps.append(torch.from_numpy(total))
    return torch.stack(maps)


def clamped_logit(coverage_map: Tensor) -> Tensor:
    """Logit of coverage, clamped to ``+-LOGIT_CLAMP`` (positive iff coverage > 0.5)."""
    return torch.logit(coverage_map.double()).clamp(-LOGIT_CLAMP, LOGIT_CLAMP).float()


def coverage_pyramid(fine: Tensor, sides: Sequence[int]) -> dict[int, Tensor]:
    """Coverage ``R x 1 x s x s`` at each side ``s`` dividing the side of ``fine`` (``R x F x F``)."""
    return {s: F.avg_pool2d(fine[:, None], fine.shape[-1] // s) for s in sides}


def grid_side(coords: Tensor, sides: Sequence[int]) -> int:
    """The side ``s`` among ``sides`` of the grid whose cell centres ``coords`` (``R x P x 2``)
    are (checked on the first 16 points of each box: centres of other sides are 0.25 off)."""
    scaled = coords[:, :16].double()[..., None] * torch.tensor(sides, dtype=torch.float64) - 0.5
    on_grid = ((scaled - scaled.round()).abs() < 0.05).flatten(0, -2).all(0)
    matches = [s for s, ok in zip(sides, on_grid.tolist()) if ok]
    if len(matches) != 1:
        raise ValueError(
            f"points are cell centres of grid sides {matches}, expected one of {sides}"
        )
    return matches[0]


class Oracle:
    """Point predictor: the exact logit of each point's cell at its step's side, from
    ``logits[s]`` (``R x 1 x s x s``); counts the points it predicts per box."""

    def __init__(self, logits: dict[int, Tensor]):
        self.logits, self.sides, self.points = logits, sorted(logits), 0

    def __call__(self, coords: Tensor) -> Tensor:
        """``R x P x 2`` cell centres -> ``R x 1 x P`` logits."""
        s = grid_side(coords, self.sides)
        column = coords[..., 0].mul(s).to(torch.int32).clamp_(0, s - 1)  # int32: dense steps
        index = coords[..., 1].mul(s).to(torch.int32).clamp_(0, s - 1).mul_(s).add_(column)
        self.points += coords.shape[1]
        return self.logits[s].flatten(2).gather(2, index[:, None, :].long())


def schedule(rule: str, k: float, final: int) -> list[int]:
    """Points a rule predicts at each step of a box of final side ``final``."""
    steps = subdivision_sizes((COARSE, COARSE), None, (final, final))
    if rule == "final_side":
        return [int(round(k * final))] * len(steps)
    if rule == "step_side":
        return [int(round(k * s)) for s, _ in steps]
    if rule == "per_box":
        return step_points(PointRendMaskConfig(points_per_side=k), steps)
    raise ValueError(f"point budget rule must be one of {RULES}, got {rule!r}")


def points_per_box(rule: str, k: float | None, final: int) -> int:
    """Point predictions a box of final side ``final`` costs under ``rule``, with the renderer's
    shortcut (the first steps whose every cell fits in their budget predicted densely, once)."""
    cells = [h * w for h, w in subdivision_sizes((COARSE, COARSE), None, (final, final))]
    if rule in ("no_refinement", "dense", "fixed224"):
        return {"no_refinement": 0, "dense": sum(cells), "fixed224": FIXED_POINTS * 4}[rule]
    points = schedule(rule, k, final)
    first = shortcut_steps([(c, 1) for c in cells], points)
    return (cells[first - 1] if first else 0) + sum(points[first:])


def render_rule(rule: str, k: float | None, coarse: Tensor, oracle: Oracle, final: int) -> Tensor:
    """``R x 1 x final x final`` logits of ``coarse`` (``R x 1 x 7 x 7``) under ``rule``."""
    size, up = (final, final), functools.partial(F.interpolate, mode="bilinear")
    if rule == "no_refinement":
        return up(coarse, size=size, align_corners=False)
    render = functools.partial(subdivision_inference, coarse, oracle, calculate_uncertainty)
    if rule == "dense":
        return render(None, final * final, size, False)
    if rule == "fixed224":
        return up(render(5, FIXED_POINTS, (FIXED_SIDE, FIXED_SIDE)), size=size, align_corners=False)
    return render(None, schedule(rule, k, final), size)


def mean_se(values: Tensor) -> dict:
    """Mean and standard error over shapes, in points (percent)."""
    v = values.double() * 100
    return {"value": float(v.mean()), "se": float(v.std() / math.sqrt(len(v)))}


def evaluate_size(maps: dict[int, Tensor], final: int, k_values, batch: int = 20) -> dict:
    """Every rule at final side ``final`` (``maps``: coverage by side, ``R x 1 x s x s``),
    ``batch`` boxes rendered at once: Boundary IoU, mask IoU and points per box of each."""
    configs = [("no_refinement", None), ("dense", None), ("fixed224", None)]
    configs += [(rule, k) for rule in RULES for k in k_values]
    scores: dict = {config: [] for config in configs}
    for i in range(0, len(maps[COARSE]), batch):
        largest = max(final, FIXED_SIDE)
        logits = {s: clamped_logit(c[i : i + batch]) for s, c in maps.items() if s <= largest}
        truth = maps[final][i : i + batch, 0] > 0.5
        region = boundary_region(truth)
        for rule, k in configs:
            oracle = Oracle(logits)
            with torch.no_grad():
                pred = render_rule(rule, k, logits[COARSE], oracle, final)[:, 0] > 0
            if oracle.points != points_per_box(rule, k, final):
                raise AssertionError(f"{rule} k={k} M={final}: {oracle.points} points")
            if rule == "dense" and not torch.equal(pred, truth):
                raise AssertionError(f"dense rendering at M={final} is not the exact mask")
            scores[rule, k].append(
                (batched_iou(region, boundary_region(pred)), batched_iou(truth, pred))
            )
    row: dict = {rule: {} for rule in RULES}
    for (rule, k), parts in scores.items():
        cell = {
            "boundary_iou": mean_se(torch.cat([b for b, _ in parts])),
            "mask_iou": mean_se(torch.cat([m for _, m in parts])),
            "points_per_box": points_per_box(rule, k, final),
        }
        row[rule] = cell if k is None else {**row[rule], str(k): cell}
    return row


def budget_study(args) -> dict:
    """The oracle study on ``args.shapes`` random shapes: ``{"by_size": {str(M): row}}``."""
    bad = [m for m in args.sizes if m not in {COARSE * 2**s for s in range(1, 12)}]
    if bad or args.shapes < 2:
        raise SystemExit(f"--sizes must be 7 * 2**s and --shapes at least 2: {bad}, {args.shapes}")
    rng = np.random.default_rng(args.seed)
    shapes = [random_shape(rng, 256, 256) for _ in range(args.shapes)]
    largest = max(*args.sizes, FIXED_SIDE)  # the fixed mode's 224 grid is rendered at every M
    sides = [COARSE * 2**s for s in range(int(math.log2(largest // COARSE)) + 1)]
    maps = coverage_pyramid(shape_coverage(shapes, largest), sides)
    by_size = {str(m): evaluate_size(maps, m, args.k) for m in sorted(args.sizes)}
    return {"by_size": by_size, "shapes": args.shapes, "seed": args.seed, "k_values": args.k}
