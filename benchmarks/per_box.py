"""Per-box mask resolution (``mask_resolution="box"``): three studies, each writing one key of
``results.json`` (and the report's per-box section); one thread, contenders alternated.

``cost`` (key ``per_box_resolution``): 100 boxes with sides log-uniform from 16 to 600 pixels
on an 800 x 1333 image (random P2, K = 80, untrained heads: the cost depends on the points).
Mask branch time and peak memory: per-box, fixed 224, torchvision's 28 x 28 head; end to end,
ResNet-50-FPN with the boxes forced through three mask branches. (The accuracy of the two modes:
``python -m benchmarks --sections accuracy``, rows ``pointrend224`` and ``pointrend_box``.)

``budget``: :mod:`benchmarks.point_budget`.

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
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor
from torchvision.ops import box_iou, masks_to_boxes

from pointrend.data.shapes import CATEGORIES
from pointrend.data.synthetic import render_sample
from pointrend.engine.evaluate import predict_pasted
from pointrend.evaluation.boundary import boundary_iou
from pointrend.models import pointrend_maskrcnn_resnet50_fpn

from . import common, cost, scoring
from .accuracy import INSTANCE, shipped_model
from .plots import plot_boundary_crop
from .point_budget import batched_iou, budget_study

IMAGE = (800, 1333)


def peak_bytes(run: Callable[[], object]) -> int:
    """Peak bytes of live intermediate tensors during ``run()`` (no autograd)."""
    meter = common.PeakMemory()
    with torch.no_grad(), meter:
        run()
    return meter.peak


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
    model = shipped_model(INSTANCE["pointrend"], common.log).model
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
    common.log(
        f"wrote {common.store_section(Path(args.out), key, section, 'benchmarks.per_box', argv)}"
    )
    return section


STUDIES = {
    "cost": (cost_study, "per_box_resolution"),
    "budget": (budget_study, "point_budget"),
    "scale": (scale_study, "per_box_scale"),
}


if __name__ == "__main__":
    main()
