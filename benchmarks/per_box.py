"""Per-box mask resolution (``mask_resolution="box"``): three studies, each writing one key of
``results.json`` (and the report's per-box section); one thread, contenders alternated.

``cost`` (key ``per_box_resolution``): 100 boxes with sides log-uniform from 16 to 600 pixels
on an 800 x 1333 image (random P2, K = 80, untrained heads: the cost depends on the points).
Mask branch time and peak memory: per-box, fixed 224, torchvision's 28 x 28 head; end to end,
ResNet-50-FPN with the boxes forced through three mask branches. (The accuracy of the two modes:
``python -m benchmarks --sections accuracy``, rows ``pointrend224`` and ``pointrend_box``.)

``budget`` (key ``point_budget``): the points per step a grid of side M needs, an oracle (the
clamped logit of each cell's coverage by a random shape filling the box) in place of the point
head. Rules: ``final_side`` ``k * M`` a step; ``step_side`` ``k * s`` at a step of side ``s``;
``per_box`` the per-box mode's; ``dense`` every cell (exact: checked); ``fixed224`` rendered at
224, resampled to M; ``no_refinement``. Boundary IoU and mask IoU against the exact mask.

``scale`` (key ``per_box_scale``, ``per_box_scale.png``): the shipped model (160 px input) on a
160 x 120 scene (the first of seed 7000 with an object 60-65 % of the width across), detections
pasted at 4000 x 3000 in both modes against exact ground truth: the object's grid, mask and
Boundary IoU, time (detector / render / paste), peak memory, all detections and those scoring
above 0.5; the ground truth through a grid of each side; a 100 % crop of the object's boundary.
"""

from __future__ import annotations

import functools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import box_iou, masks_to_boxes

from pointrend.data.shapes import CATEGORIES, Shape, coverage, random_shape
from pointrend.data.synthetic import render_sample
from pointrend.engine.evaluate import predict_pasted
from pointrend.evaluation.boundary import boundary_iou, boundary_region
from pointrend.instance import PointRendMaskConfig
from pointrend.instance.box_resolution import step_points
from pointrend.models import pointrend_maskrcnn_resnet50_fpn
from pointrend.points import calculate_uncertainty
from pointrend.render import shortcut_steps, subdivision_inference, subdivision_sizes

from . import common, cost, scoring
from .accuracy import INSTANCE, shipped_model
from .plots import plot_boundary_crop

log = functools.partial(print, flush=True)

# --- cost -------------------------------------------------------------------------------------

IMAGE = (800, 1333)


def peak_bytes(run: Callable[[], object]) -> int:
    """Peak bytes of live intermediate tensors during ``run()`` (no autograd)."""
    meter = common.PeakMemory()
    with torch.no_grad(), meter:
        run()
    return meter.peak


def batched_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of each pair of ``R x H x W`` bool masks -> ``R`` float64 (1 where both are empty)."""
    inter = (a & b).flatten(1).sum(1).double()
    union = (a | b).flatten(1).sum(1).double()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def log_uniform_boxes(n: int, height: int, width: int, low=16.0, high=600.0, seed=0) -> Tensor:
    """``n x 4`` boxes, each side log-uniform in ``[low, high]`` pixels, inside the image."""
    g = torch.Generator().manual_seed(seed)
    logs = math.log(low) + torch.rand(n, 2, generator=g) * (math.log(high) - math.log(low))
    size = logs.exp()
    origin = torch.rand(n, 2, generator=g) * (torch.tensor([width, height]) - size)
    return torch.cat([origin, origin + size], dim=1)


def mask_branch(rounds: int, boxes: Tensor, labels: Tensor) -> dict:
    """Time and peak memory of the mask branches on ``boxes`` (box-relative masks)."""
    torch.manual_seed(0)
    features = torch.randn(1, cost.CHANNELS, 200, 336)  # P2 of the padded 800 x 1344 image
    fixed = cost.pointrend_branch(224).eval()
    box = cost.pointrend_branch(224, mask_resolution="box").eval()
    box.load_state_dict(fixed.state_dict())
    dense = cost.DenseMaskHead(28).eval()
    fine = cost.last(features)
    runs = {
        "box": lambda: box.render_by_box_size(fine, 4.0, [boxes], labels, torch.ones(1, 2)),
        "fixed224": lambda: fixed.render(cost.last(features), 4.0, [boxes], labels),
        "torchvision28": lambda: dense({"0": features}, [boxes], [IMAGE], labels),
    }
    samples = common.alternate(runs, rounds)
    with torch.no_grad():
        grids = [f"{h}x{w}" for h, w in runs["box"]().sizes().tolist()]
    return {
        "mask_branch_s": common.medians(samples),
        "peak_mb": {k: peak_bytes(run) / 2**20 for k, run in runs.items()},
        "mask_branch_samples_s": samples,
        "box_grids": {g: grids.count(g) for g in sorted(set(grids), key=grids.index)},
    }


def end_to_end(rounds: int, boxes: Tensor) -> dict:
    """R50-FPN on one 800 x 1333 image, ``boxes`` forced through each mask branch."""
    models = cost.r50_models()
    box = pointrend_maskrcnn_resnet50_fpn(num_classes=91, mask_resolution="box").eval()
    box.load_state_dict(models["pointrend"].state_dict())
    models = {"box": box, "fixed224": models["pointrend"], "torchvision28": models["torchvision"]}
    image = torch.rand(3, *IMAGE)
    labels = torch.randint(1, 91, (len(boxes),), generator=torch.Generator().manual_seed(2))
    samples = cost.forced_times(models, image, boxes, labels, rounds)
    return {"end_to_end_s": common.medians(samples), "end_to_end_samples_s": samples}


def cost_study(args) -> dict:
    boxes = log_uniform_boxes(args.boxes, *IMAGE)
    labels = torch.randint(1, cost.K, (args.boxes,), generator=torch.Generator().manual_seed(1))
    section = mask_branch(args.rounds, boxes, labels) | end_to_end(args.rounds, boxes)
    return section | {"boxes": args.boxes, "image": list(IMAGE), "rounds": args.rounds}


# --- points per step: an oracle study ----------------------------------------------------------

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


# --- one 4000 x 3000 output --------------------------------------------------------------------

INPUT = (120, 160)  # H x W of the scene the model sees (4:3, its own size: not resized)
OBJECT_FRACTION = (0.60, 0.65)  # the big object's box longer side / image width
MODES = {
    "fixed224": {"mask_resolution": "fixed", "output_size": 224},
    "box": {"mask_resolution": "box"},
}
CROP, SHOWN_SCORE = 300, 0.5  # the picture's side; the second timing keeps scores above 0.5


def find_scene(seed: int, limit: int = 1000) -> tuple[int, int]:
    """``(index, instance)``: the first image of the synthetic data with ``seed`` holding an
    object whose visible box's longer side is in :data:`OBJECT_FRACTION` of the width."""
    low, high = (f * INPUT[1] for f in OBJECT_FRACTION)
    for index in range(limit):
        masks = torch.from_numpy(render_sample(index, *INPUT, seed=seed).masks)
        if len(masks):
            boxes = masks_to_boxes(masks)  # inclusive pixel indices: + 1 for the extent
            sides = (boxes[:, 2:] - boxes[:, :2] + 1).amax(dim=1)
            hits = torch.nonzero((sides >= low) & (sides <= high))[:, 0]
            if len(hits):
                return index, int(hits[0])
    raise RuntimeError(f"no object of {OBJECT_FRACTION} of the width in {limit} images")


def big_object(model, image, truth: Tensor, label: int, output, mode: str) -> tuple[dict, Tensor]:
    """One run in ``mode``: the figures of the big object's detection (of its class, the largest
    box IoU with ``truth``) and its binary mask at ``output``."""
    caught = []
    hook = model.roi_heads.register_forward_hook(lambda m, a, out: caught.append(out[0][0]))
    try:
        with torch.no_grad(), scoring.mask_settings(model, **MODES[mode]):
            result = predict_pasted(model, [image], [[output]])[0][0]
    finally:
        hook.remove()
    masks = caught[0]["masks"]  # R x 1 x M x M mask logits, or masks grouped by size
    fixed = isinstance(masks, Tensor)
    grids = torch.tensor(masks.shape[-2:]).repeat(len(masks), 1) if fixed else masks.sizes()
    gt_box = masks_to_boxes(truth[None]) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    overlap = box_iou(result["boxes"], gt_box)[:, 0]
    overlap[result["labels"] != label] = -1.0
    k = int(overlap.argmax()) if len(overlap) else -1
    pred = result["masks"][k, 0] > 0.5
    row = {
        "score": float(result["scores"][k]),
        "grid": grids[k].tolist(),
        "grids_all_detections": {
            f"{h}x{w}": int(n) for (h, w), n in zip(*grids.unique(dim=0, return_counts=True))
        },
        "detections": len(result["boxes"]),
        f"detections_above_{SHOWN_SCORE}": int((result["scores"] > SHOWN_SCORE).sum()),
        "boxes": result["boxes"].tolist(),
        "mask_iou": float(batched_iou(pred[None], truth[None])),
        "boundary_iou": boundary_iou(truth, pred),
    }
    if k < 0 or overlap[k] <= 0 or row["score"] < 0.5 or row["mask_iou"] < 0.5:
        raise RuntimeError(f"the big object is not detected in mode {mode}: {row}")
    return row, pred


class ModuleSeconds:
    """Seconds spent inside the forward of some (not nested) modules, summed until taken."""

    def __init__(self, modules):
        self.seconds, self.start = 0.0, 0.0
        self.handles = [m.register_forward_pre_hook(self._enter) for m in modules]
        self.handles += [m.register_forward_hook(self._leave) for m in modules]

    def _enter(self, *_) -> None:
        self.start = time.perf_counter()

    def _leave(self, *_) -> None:
        self.seconds += time.perf_counter() - self.start

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


def timing(model, image, output, rounds: int, threshold: float | None = None) -> dict:
    """Medians of alternated runs per mode: end to end, detector (backbone, RPN, box head),
    render (the rest of the RoI heads), paste (the rest), ``mask_s`` = render + paste; peak MB."""
    heads = model.roi_heads
    meters = {
        "features": ModuleSeconds([model.backbone, model.rpn]),
        "boxes": ModuleSeconds([heads.box_roi_pool, heads.box_head, heads.box_predictor]),
        "heads": ModuleSeconds([heads]),
    }
    seconds = {mode: [] for mode in MODES}

    def run(mode: str) -> None:
        with scoring.mask_settings(model, threshold, **MODES[mode]):
            start = time.perf_counter()
            predict_pasted(model, [image], [[output]])
            total = time.perf_counter() - start
        part = {name: meter.take() for name, meter in meters.items()}
        render = part["heads"] - part["boxes"]
        paste = total - part["features"] - part["heads"]
        row = (total, part["features"] + part["boxes"], render, paste, render + paste)
        seconds[mode].append(row)

    runs = {mode: functools.partial(run, mode) for mode in MODES}
    try:
        common.alternate(runs, rounds)
    finally:
        for handle in [h for meter in meters.values() for h in meter.handles]:
            handle.remove()
    names = ("end_to_end_s", "detector_s", "render_s", "paste_s", "mask_s")
    table = {
        name: {m: statistics.median(r[i] for r in rows[1:]) for m, rows in seconds.items()}
        for i, name in enumerate(names)  # rows[0]: the warm-up round
    }
    return table | {"peak_mb": {mode: peak_bytes(run) / 2**20 for mode, run in runs.items()}}


def scale_study(args) -> dict:
    model = shipped_model(INSTANCE["pointrend"], log).model
    output = (args.output[1], args.output[0])  # H, W
    index, instance = find_scene(args.seed)
    sample = render_sample(index, *INPUT, seed=args.seed, mask_size=output)
    image = torch.from_numpy(sample.image).permute(2, 0, 1).float().div(255)
    truth, label = torch.from_numpy(sample.masks[instance]), int(sample.labels[instance])
    modes, masks = {}, {}
    for mode in MODES:
        modes[mode], masks[mode] = big_object(model, image, truth, label, output, mode)
    if modes["box"].pop("boxes") != modes["fixed224"].pop("boxes"):
        raise RuntimeError("the two mask modes gave different boxes: they share the detector")
    target = {"masks": truth[None].to(torch.uint8), "labels": torch.tensor([label])}
    target |= {"boxes": masks_to_boxes(target["masks"]), "image_id": 0}
    ceiling = {}
    for side in sorted({max(modes[m]["grid"]) for m in MODES}):
        mask = scoring.oracle_outputs([(image, target)], side)[0]["masks"][0, 0] > 0.5
        ceiling[str(side)] = {"boundary_iou": boundary_iou(truth, mask)}
    section = timing(model, image, output, args.rounds)
    section[f"score_above_{SHOWN_SCORE}"] = timing(model, image, output, args.rounds, SHOWN_SCORE)
    titles = {"fixed224": "fixed 224", "box": "per-box"}
    panels = {
        f"{titles[m]}: grid {'x'.join(map(str, modes[m]['grid']))}, Boundary IoU "
        f"{modes[m]['boundary_iou']:.3f}": masks[m]
        for m in MODES
    }
    crop = plot_boundary_crop(panels, truth, Path(args.picture), CROP)
    gt_box = masks_to_boxes(truth[None])[0]
    return section | {
        "grid": {m: modes[m]["grid"] for m in MODES},
        "mask_iou": {m: modes[m]["mask_iou"] for m in MODES},
        "boundary_iou": {m: modes[m]["boundary_iou"] for m in MODES},
        "modes": modes,
        "pixels_that_differ": int((masks["box"] ^ masks["fixed224"]).sum()),
        "oracle": ceiling,
        "output_image": list(output),
        "object_box_px": (gt_box[2:] - gt_box[:2] + 1).tolist(),
        "scene": {"seed": args.seed, "index": index, "instance": instance},
        "category": CATEGORIES[label - 1],
        "picture": {"file": Path(args.picture).name, "crop_y_x_side": crop},
        "rounds": args.rounds,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = common.arguments("per_box", __doc__)
    sub = parser.add_subparsers(dest="study", required=True)
    p = sub.add_parser("cost", help="mask branch and end to end")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--boxes", type=int, default=100)
    p = sub.add_parser("budget", help="points per step, an oracle study")
    p.add_argument("--shapes", type=int, default=80)
    p.add_argument("--sizes", type=int, nargs="+", default=[56, 112, 224, 448, 896])
    p.add_argument("--k", type=float, nargs="+", default=[0.875, 1.25, 1.75, 2.5, 3.5, 5.0])
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("scale", help="one 4000 x 3000 output")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--output", type=int, nargs=2, default=[4000, 3000], metavar=("W", "H"))
    p.add_argument("--seed", type=int, default=scoring.VAL_SEED)
    p.add_argument("--picture", default="benchmarks/results/per_box_scale.png")
    args = common.parse(parser, argv)
    study, key = STUDIES[args.study]
    section = study(args) | {"threads": args.threads}
    log(f"wrote {common.store_section(Path(args.out), key, section, 'benchmarks.per_box', argv)}")
    return section


STUDIES = {
    "cost": (cost_study, "per_box_resolution"),
    "budget": (budget_study, "point_budget"),
    "scale": (scale_study, "per_box_scale"),
}


if __name__ == "__main__":
    main()
