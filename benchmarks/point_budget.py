"""How many points per step a grid of side M needs: an oracle ablation of adaptive subdivision.
Not a test, and independent of any trained model.

Random synthetic shapes (:func:`pointrend.data.shapes.random_shape`), each stretched so that its
bounding box fills the square box ``[0, 1]^2``, are rendered by
:func:`pointrend.render.subdivision_inference` with an *oracle* instead of a point head:

* coverage: the fraction of each cell inside the shape (:func:`pointrend.data.shapes.coverage`),
  from ``4 x 4`` samples per cell at the largest grid side ``L`` of the run, averaged down to
  every smaller side ``s = 7 * 2**j``: the same as sampling ``4L/s x 4L/s`` points per cell at
  side ``s`` (every side sees the same samples; the figures at a side depend a little on ``L``);
* coarse logits: the logit of the 7 x 7 coverage, clamped to ``+-10`` (``R x 1 x 7 x 7``);
* oracle point predictor: for the cell centres of a step's ``s x s`` grid (``R x P x 2``,
  ``(x, y)`` in ``[0, 1]`` of the box), the clamped logit of the coverage of those cells at side
  ``s``. The side is read from the points themselves: the cell centres of grids whose sides
  differ by a factor of 2 never coincide;
* the result at side ``M`` is thresholded at 0 and compared with the exact mask (coverage > 0.5,
  the same cells as logit > 0): Boundary IoU (:mod:`pointrend.evaluation.boundary`, the published
  definition, dilation ratio 0.02 of the box's diagonal at side ``M``) and mask IoU, in points
  (percent), mean and standard error over shapes.

Point budget rules, for the points predicted at each step:

* ``final_side``: ``round(k * M)`` at every step (``M`` the final side);
* ``step_side``: ``round(k * s)`` at the step of side ``s``;
* ``per_box``: the per-box mode's rule
  (:func:`~pointrend.instance.box_resolution.step_points`, ``points_per_side = k``): ``k * M``
  at every step up to ``M = 224``; a larger grid gets ``k * 224`` at the steps up to 224, then
  ``k * s`` at each step of side ``s`` beyond;
* ``dense``: every cell of every step (exact by construction: checked);
* ``fixed224``: the fixed mode, the box rendered at 224 x 224 (784 points a step) and resampled
  bilinearly to ``M`` (as the paste reads it), the reference the per-box mode replaces;
* ``no_refinement``: the 7 x 7 coarse logits upsampled bilinearly to ``M`` (no points).

Each rule is one :func:`~pointrend.render.subdivision_inference` call with its points per step
(the shortcut included: the first steps whose every cell fits in their budget are predicted
densely, once). ``points_per_box`` is the number of point predictions a box costs (counted by the
oracle and checked against the rule).

Writes ``results.json``'s ``"point_budget"``: ``by_size[M]`` with ``no_refinement``, ``dense``,
``final_side[k]`` and ``step_side[k]`` (each ``boundary_iou`` / ``mask_iou`` as
``{"value", "se"}`` and ``points_per_box``), and ``smallest_k`` (:func:`smallest_k`): for each
rule, the smallest ``k`` whose mean Boundary IoU is within ``tolerance`` (0.5) points of the best
refined mean at that ``M`` (over both rules and every ``k``), of the rule's own best and of the
exact result (the dense reference, 100).

Run: ``python -m benchmarks.point_budget [--shapes 80] [--sizes 56 112 224 448 896]``.
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Sequence
from pathlib import Path

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

from .machine import command_line, machine_info
from .report import store_standalone

log = functools.partial(print, flush=True)
COARSE = 7
SIZES = (56, 112, 224, 448, 896)
K_VALUES = (0.875, 1.25, 1.75, 2.5, 3.5, 5.0)
RULES = ("final_side", "step_side", "per_box")
LOGIT_CLAMP = 10.0
SAMPLES_PER_SIDE = 4  # coverage samples per cell side at the largest grid side
SOURCE_IMAGE = 256  # the shapes are drawn in a square image of this side, then boxed
BAND_SAMPLES = 2**21  # coverage is sampled in bands of rows of about this many samples
TOLERANCE = 0.5  # Boundary IoU points
FIXED_SIDE, FIXED_POINTS = 224, 784  # the fixed mode: every box at 224 x 224, 784 points a step


def boxed_shape(shape: Shape, side: int) -> Shape:
    """``shape`` with its bounding box stretched onto ``[0, side]^2`` (``(0, 0, side, side)``)."""
    x0, y0, x1, y1 = shape.bbox
    sx, sy = side / max(x1 - x0, 1e-9), side / max(y1 - y0, 1e-9)

    def inside(x, y):
        return shape.inside(x / sx + x0, y / sy + y0)

    return Shape(shape.label, inside, (0.0, 0.0, float(side), float(side)))


def shape_coverage(shapes: Sequence[Shape], side: int, ss: int = SAMPLES_PER_SIDE) -> Tensor:
    """``R x side x side`` coverage of each shape boxed at ``side`` (``ss x ss`` samples a cell),
    sampled in bands of rows (memory); the loop is over shapes: each is its own function."""
    rows = max(1, BAND_SAMPLES // (side * ss * ss))
    maps = []
    for shape in shapes:
        boxed = boxed_shape(shape, side)
        total = np.zeros((side, side), dtype=np.float32)
        for top in range(0, side, rows):
            band = Shape(shape.label, boxed.inside, (0.0, top, float(side), min(top + rows, side)))
            total += coverage(band, side, side, ss)
        maps.append(torch.from_numpy(total))
    return torch.stack(maps)


def clamped_logit(coverage_map: Tensor) -> Tensor:
    """Logit of coverage, clamped to ``+-LOGIT_CLAMP`` (positive iff coverage > 0.5)."""
    return torch.logit(coverage_map.double()).clamp(-LOGIT_CLAMP, LOGIT_CLAMP).float()


def coverage_pyramid(fine: Tensor, sides: Sequence[int]) -> dict[int, Tensor]:
    """Coverage ``R x 1 x s x s`` at each side ``s`` dividing the side of ``fine`` (``R x F x F``):
    the mean of the fine cells each covers."""
    side = fine.shape[-1]
    return {s: F.avg_pool2d(fine[:, None], side // s) for s in sides}


def grid_side(coords: Tensor, sides: Sequence[int]) -> int:
    """The side ``s`` (among ``sides``) of the grid whose cell centres ``coords`` (``R x P x 2``)
    are: ``x * s - 0.5`` is a whole number (checked on the first 16 points of each box)."""
    scaled = coords[:, :16].double()[..., None] * torch.tensor(sides, dtype=torch.float64) - 0.5
    # a point of a grid of another side is at least 0.25 off a whole number
    on_grid = ((scaled - scaled.round()).abs() < 0.05).flatten(0, -2).all(0)
    matches = [s for s, ok in zip(sides, on_grid.tolist()) if ok]
    if len(matches) != 1:
        raise ValueError(
            f"points are cell centres of grid sides {matches}, expected one of {sides}"
        )
    return matches[0]


class Oracle:
    """Point predictor returning the exact (clamped) logit of each point's cell at its step's
    side, from ``logits[s]`` (``R x 1 x s x s``); counts the points it predicts per box."""

    def __init__(self, logits: dict[int, Tensor]):
        self.logits = logits
        self.sides = sorted(logits)
        self.points = 0

    def __call__(self, coords: Tensor) -> Tensor:
        """``R x P x 2`` cell centres -> ``R x 1 x P`` logits."""
        s = grid_side(coords, self.sides)
        # row-major cell index, built in int32 (a dense step has a point per cell: memory)
        column = coords[..., 0].mul(s).to(torch.int32).clamp_(0, s - 1)
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
    """Point predictions a box of final side ``final`` costs under ``rule`` (``"dense"``: every
    cell of every step; ``"no_refinement"``: none), with the renderer's shortcut (the first
    steps whose every cell fits in their budget are predicted densely, once)."""
    steps = subdivision_sizes((COARSE, COARSE), None, (final, final))
    cells = [h * w for h, w in steps]
    if rule == "no_refinement":
        return 0
    if rule == "dense":
        return sum(cells)
    if rule == "fixed224":
        return FIXED_POINTS * 4  # 28 x 28 dense, then 56, 112, 224
    points = schedule(rule, k, final)
    first = shortcut_steps(steps, points)
    return (cells[first - 1] if first else 0) + sum(points[first:])


def render(rule: str, k: float | None, coarse: Tensor, oracle: Oracle, final: int) -> Tensor:
    """``R x 1 x final x final`` logits of ``coarse`` (``R x 1 x 7 x 7``) under ``rule``."""
    if rule == "no_refinement":
        return F.interpolate(coarse, size=(final, final), mode="bilinear", align_corners=False)
    if rule == "dense":
        return subdivision_inference(
            coarse, oracle, calculate_uncertainty, None, final * final, (final, final), False
        )
    if rule == "fixed224":
        fixed = (FIXED_SIDE, FIXED_SIDE)
        logits = subdivision_inference(
            coarse, oracle, calculate_uncertainty, 5, FIXED_POINTS, fixed
        )
        return F.interpolate(logits, size=(final, final), mode="bilinear", align_corners=False)
    points = schedule(rule, k, final)
    return subdivision_inference(
        coarse, oracle, calculate_uncertainty, None, points, (final, final)
    )


def batched_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of each pair of ``R x H x W`` bool masks -> ``R`` float64 (1 where both are empty)."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def mean_se(values: Tensor) -> dict:
    """Mean and standard error over shapes, in points (percent)."""
    v = values.double() * 100
    se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else None
    return {"value": float(v.mean()), "se": se}


def configurations(k_values: Sequence[float]) -> list[tuple[str, float | None]]:
    """``(rule, k)`` pairs in the order they are run and printed."""
    fixed = [("no_refinement", None), ("dense", None), ("fixed224", None)]
    return fixed + [(rule, k) for rule in RULES for k in k_values]


def score_batch(
    logits: dict[int, Tensor], truth: tuple[Tensor, Tensor], final: int, config: tuple
) -> tuple[Tensor, Tensor]:
    """Boundary IoU and mask IoU (``R`` each) of boxes rendered at ``final`` under ``config``
    ``(rule, k)`` against ``truth``: the exact masks (``R x final x final`` bool) and their
    boundary regions. The oracle reads ``logits`` (``R x 1 x s x s`` by side ``s``). Checks the
    points the oracle predicted against the rule and that the dense rendering is exact."""
    rule, k = config
    truth_mask, truth_region = truth
    oracle = Oracle(logits)
    with torch.no_grad():
        pred = render(rule, k, logits[COARSE], oracle, final)[:, 0] > 0
    expected = points_per_box(rule, k, final)
    if oracle.points != expected:
        raise AssertionError(f"{rule} k={k} M={final}: {oracle.points} points, rule {expected}")
    if rule == "dense" and not torch.equal(pred, truth_mask):
        raise AssertionError(f"dense rendering at M={final} is not the exact mask")
    boundary = batched_iou(truth_region, boundary_region(pred))
    return boundary, batched_iou(truth_mask, pred)


def evaluate_size(
    coverage_maps: dict[int, Tensor], final: int, k_values: Sequence[float], batch: int = 20
) -> dict:
    """Every rule at final side ``final``: scores and points per box (``coverage_maps`` by side,
    ``R x 1 x s x s``, from 7 to at least ``final``), ``batch`` boxes rendered at once."""
    R = coverage_maps[COARSE].shape[0]
    scores: dict = {config: [] for config in configurations(k_values)}
    for i in range(0, R, batch):
        logits = {
            s: clamped_logit(c[i : i + batch])
            for s, c in coverage_maps.items()
            if s <= max(final, FIXED_SIDE)
        }
        mask = coverage_maps[final][i : i + batch, 0] > 0.5
        truth = (mask, boundary_region(mask))
        for config, batches in scores.items():
            batches.append(score_batch(logits, truth, final, config))
    row: dict = {rule: {} for rule in RULES}
    for (rule, k), batches in scores.items():
        cell = {
            "boundary_iou": mean_se(torch.cat([b for b, _ in batches])),
            "mask_iou": mean_se(torch.cat([m for _, m in batches])),
            "points_per_box": points_per_box(rule, k, final),
        }
        if k is None:
            row[rule] = cell
        else:
            row[rule][str(k)] = cell
    row["smallest_k"] = smallest_k(row, k_values)
    return row


def smallest_k(row: dict, k_values: Sequence[float], tolerance: float = TOLERANCE) -> dict:
    """The smallest ``k`` of each rule whose mean Boundary IoU is within ``tolerance`` points of
    the best refined mean of ``row`` (every rule, every ``k``: ``"of_best"``), of the best of the
    same rule (``"of_rule_best"``) and of the dense reference (exact: ``"of_exact"``), ``None``
    if none is; ``"rule_best"``: each rule's best mean. The first two depend on the ``k`` tried."""
    rules = [r for r in RULES if r in row]
    means = {(r, k): row[r][str(k)]["boundary_iou"]["value"] for r in rules for k in k_values}
    rule_best = {r: max(means[r, k] for k in k_values) for r in rules}
    best = max(rule_best.values())
    exact = row["dense"]["boundary_iou"]["value"]

    def smallest(rule: str, target: float) -> float | None:
        return next((k for k in sorted(k_values) if means[rule, k] >= target - tolerance), None)

    return {
        "of_best": {r: smallest(r, best) for r in rules},
        "of_rule_best": {r: smallest(r, rule_best[r]) for r in rules},
        "of_exact": {r: smallest(r, exact) for r in rules},
        "rule_best": rule_best,
    }


def run(
    num_shapes: int, sizes: Sequence[int], k_values: Sequence[float], seed: int = 0, batch: int = 20
) -> dict:
    """The ablation on ``num_shapes`` random shapes: ``{str(M): evaluate_size(...)}``."""
    valid = {COARSE * 2**s for s in range(1, 12)}
    bad = [m for m in sizes if m not in valid]
    if bad:
        raise ValueError(f"--sizes must be 7 * 2**s (14 to 14336), got {bad}")
    if num_shapes < 2 or batch < 1:
        raise ValueError(f"--shapes must be at least 2 and --batch 1, got {num_shapes}, {batch}")
    rng = np.random.default_rng(seed)
    shapes = [random_shape(rng, SOURCE_IMAGE, SOURCE_IMAGE) for _ in range(num_shapes)]
    largest = max(*sizes, FIXED_SIDE)  # the fixed mode's 224 grid is rendered at every M
    sides = [COARSE * 2**s for s in range(int(math.log2(largest // COARSE)) + 1)]
    maps = coverage_pyramid(shape_coverage(shapes, largest), sides)
    return {str(m): evaluate_size(maps, m, k_values, batch) for m in sorted(sizes)}


def print_table(by_size: dict, k_values: Sequence[float]) -> None:
    """One block per final side: every rule's points per box, Boundary IoU and mask IoU."""
    for final, row in by_size.items():
        log(f"\nM = {final}: rule, k, points/box, Boundary IoU, mask IoU (mean ± s.e., points)")
        for rule, k in configurations(k_values):
            cell = row[rule] if k is None else row[rule][str(k)]
            b, m = cell["boundary_iou"], cell["mask_iou"]
            log(
                f"  {rule:<14}{'' if k is None else k:>6} {cell['points_per_box']:>9} "
                f"{b['value']:7.2f} ± {b['se'] or 0:4.2f} {m['value']:7.2f} ± {m['se'] or 0:4.2f}"
            )
        best = row["smallest_k"]
        log(f"  smallest k within {TOLERANCE} Boundary IoU points of the best: {best['of_best']}")
        log(f"  ... of the rule's own best: {best['of_rule_best']}")
        log(f"  ... of the exact (dense) result: {best['of_exact']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.point_budget", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--shapes", type=int, default=80)
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--k", type=float, nargs="+", default=list(K_VALUES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=20, help="boxes rendered in one call")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results/results.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    log(f"point budget oracle: {args.shapes} shapes, final sides {args.sizes}, k {args.k}")
    start = time.perf_counter()
    by_size = run(args.shapes, args.sizes, args.k, args.seed, args.batch)
    seconds = time.perf_counter() - start
    print_table(by_size, args.k)
    section = {
        "by_size": by_size,
        "shapes": args.shapes,
        "seed": args.seed,
        "batch": args.batch,
        "k_values": args.k,
        "tolerance_boundary_iou_points": TOLERANCE,
        "coarse_side": COARSE,
        "logit_clamp": LOGIT_CLAMP,
        "coverage_samples_per_cell_at_largest_side": SAMPLES_PER_SIDE**2,
        "seconds": seconds,
        "threads": args.threads,
        "command": command_line("benchmarks.point_budget", argv),
        "machine": machine_info(),
    }
    path = Path(args.out)
    log(f"\n{seconds:.0f} s; wrote {store_standalone(path, 'point_budget', section)}")


if __name__ == "__main__":
    main()
