"""Per-box mask resolution at scale: one 4000 x 3000 output with a 2,500-pixel object. Not a test.

The shipped synthetic PointRend model (ResNet-18-FPN, trained on 160 px images) runs on one
synthetic 160 x 120 (4:3) scene; its detections are pasted into a 4000 x 3000 image (the boxes
scaled by 25, as :func:`~pointrend.engine.evaluate.predict_pasted` pastes at another size), once
with every mask rendered to a fixed 224 x 224 grid (``mask_resolution="fixed"``) and once with
each mask rendered at about its box's size in the output (``mask_resolution="box"``, grids capped
at ``max_mask_size``). The ground truth is the same scene rendered exactly at 4000 x 3000.

The scene is the first image of the synthetic data with seed :data:`~benchmarks.scoring.VAL_SEED`
(never used in training) holding an object whose visible box has its longer side between 60 %
and 65 % of the image width (2,400 to 2,600 px at 4000 x 3000); the object must be detected (the
detection of its class with the largest box IoU scores at least 0.5 and has mask IoU at least
0.5 at the output size), else the run stops with an error.

Measured, one thread, the two modes alternating (median of ``--rounds``), once with all the
model's detections (score above 0.05, at most 30, as it returns them) and once with those scoring
above 0.5 (``"score_above_0.5"``):

* ``end_to_end_s``: the model on the small image, masks rendered and pasted at the output size,
  split with forward hooks into ``detector_s`` (backbone, RPN, box head), ``render_s`` (the rest
  of the RoI heads: box post-processing and mask rendering) and ``paste_s`` (the rest: the paste,
  and the transform of the small image); ``mask_s = render_s + paste_s``;
* ``peak_mb``: peak of live intermediate tensors of one call (:func:`~benchmarks.meters.peak_bytes`:
  it includes the ``R x 1 x H x W`` float32 pasted masks of all ``R`` detections);
* the rendered grid of the big object and of every detection, the big object's mask IoU and
  Boundary IoU (published definition, ``d = 2 %`` of the output diagonal) against the exact
  ground truth;
* a picture: a crop of the big object's boundary at 100 % (one output pixel per screen pixel),
  fixed 224 | per-box | ground truth, the ground-truth outline in red over the predictions. The
  crop is the window holding the most ground-truth contour pixels (chosen from the ground truth
  alone).

Writes ``results.json``'s ``"per_box_scale"`` and ``per_box_scale.png``.

Run: ``python -m benchmarks.scale --rounds 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.ops import box_iou, masks_to_boxes

from pointrend.data.shapes import CATEGORIES
from pointrend.data.synthetic import render_sample
from pointrend.engine.evaluate import predict_pasted
from pointrend.evaluation.boundary import boundary_distance, boundary_iou

from .accuracy import INSTANCE, shipped_model
from .machine import command_line, machine_info
from .meters import ModuleSeconds, alternate, peak_bytes
from .plots import plot_boundary_crop
from .point_budget import batched_iou
from .report import store_standalone
from .scoring import VAL_SEED, mask_settings, oracle_outputs

log = functools.partial(print, flush=True)
INPUT = (120, 160)  # H x W of the scene the model sees (4:3, its own size: not resized)
OUTPUT = (3000, 4000)  # H x W the masks are pasted at
OBJECT_FRACTION = (0.60, 0.65)  # the big object's box longer side / image width
MODES = {
    "fixed224": {"mask_resolution": "fixed", "output_size": 224},
    "box": {"mask_resolution": "box"},
}
NAMES = {"fixed224": "fixed 224", "box": "per-box"}  # in the picture
CROP = 300  # side of the picture's crop, output pixels
MIN_SCORE, MIN_IOU = 0.5, 0.5  # the big object counts as detected above both
SHOWN_SCORE = 0.5  # the second timing keeps only the detections scoring above this


@dataclass
class Scene:
    """The synthetic scene: ``image`` ``3 x h x w`` float in ``[0, 1]``; the big object's
    ``label`` and exact ``mask`` (``H x W`` bool at the output size) and its place in the data."""

    seed: int
    index: int
    instance: int
    image: torch.Tensor
    label: int
    mask: torch.Tensor


def find_scene(seed: int, limit: int = 1000) -> tuple[int, int]:
    """``(index, instance)``: the first image of the synthetic data with ``seed`` (size
    :data:`INPUT`) holding an object whose visible box's longer side is in
    :data:`OBJECT_FRACTION` of the width, and that object's number among the image's masks."""
    low, high = (f * INPUT[1] for f in OBJECT_FRACTION)
    for index in range(limit):
        masks = torch.from_numpy(render_sample(index, *INPUT, seed=seed).masks)
        if not len(masks):
            continue
        boxes = masks_to_boxes(masks)  # inclusive pixel indices: + 1 for the extent
        sides = (boxes[:, 2:] - boxes[:, :2] + 1).amax(dim=1)
        hits = torch.nonzero((sides >= low) & (sides <= high))[:, 0]
        if len(hits):
            return index, int(hits[0])
    raise RuntimeError(
        f"no object of {OBJECT_FRACTION} of the width in {limit} images of seed {seed}"
    )


def make_scene(seed: int, output: tuple[int, int]) -> Scene:
    """The scene of :func:`find_scene`, its masks rendered exactly at ``output`` (H, W)."""
    index, instance = find_scene(seed)
    sample = render_sample(index, *INPUT, seed=seed, mask_size=output)
    image = torch.from_numpy(sample.image).permute(2, 0, 1).float().div(255)
    mask = torch.from_numpy(sample.masks[instance])
    return Scene(seed, index, instance, image, int(sample.labels[instance]), mask)


def stage_meters(model) -> dict[str, ModuleSeconds]:
    """Meters of the backbone + RPN (``features``), the box head (``boxes``) and the RoI heads
    (``heads``: the box head, the box post-processing and the mask rendering)."""
    heads = model.roi_heads
    return {
        "features": ModuleSeconds([model.backbone, model.rpn]),
        "boxes": ModuleSeconds([heads.box_roi_pool, heads.box_head, heads.box_predictor]),
        "heads": ModuleSeconds([heads]),
    }


@contextlib.contextmanager
def score_threshold(model, threshold: float | None) -> Iterator[None]:
    """Keep only detections scoring above ``threshold`` inside the block (``None``: unchanged)."""
    saved = model.roi_heads.score_thresh
    if threshold is not None:
        model.roi_heads.score_thresh = threshold
    try:
        yield
    finally:
        model.roi_heads.score_thresh = saved


def grid_shapes(masks) -> torch.Tensor:
    """``R x 2`` int64 ``(height, width)`` of each detection's rendered grid, from the mask
    branch's output: an ``R x 1 x M x M`` tensor or masks grouped by size (``groups`` of
    ``(index, R_g x 1 x h x w)``)."""
    if isinstance(masks, torch.Tensor):
        return torch.tensor(masks.shape[-2:]).expand(masks.shape[0], 2).clone()
    return masks.sizes()


def predict(model, scene: Scene, output: tuple[int, int], mode: str) -> tuple[dict, torch.Tensor]:
    """One run in ``mode``: the detections pasted at ``output`` and their grids (``R x 2``)."""
    caught = []
    hook = model.roi_heads.register_forward_hook(lambda m, a, out: caught.append(out[0][0]))
    try:
        with torch.no_grad(), mask_settings(model, **MODES[mode]):
            result = predict_pasted(model, [scene.image], [[output]])[0][0]
    finally:
        hook.remove()
    return result, grid_shapes(caught[0]["masks"])


def match(result: dict, scene: Scene) -> int:
    """The detection of the big object: of its class, the largest box IoU with its ground truth."""
    gt_box = masks_to_boxes(scene.mask[None]) + torch.tensor([0.0, 0.0, 1.0, 1.0])
    overlap = box_iou(result["boxes"], gt_box)[:, 0]
    overlap[result["labels"] != scene.label] = -1.0
    if not len(overlap) or overlap.max() <= 0:
        raise RuntimeError(f"the big object ({CATEGORIES[scene.label - 1]}) was not detected")
    return int(overlap.argmax())


def accuracy(model, scene: Scene, output: tuple[int, int]) -> tuple[dict, dict]:
    """Per mode: the big object's detection, grid, IoUs; and its binary mask (for the picture)."""
    table, masks, boxes = {}, {}, {}
    for mode in MODES:
        result, grids = predict(model, scene, output, mode)
        k = match(result, scene)
        pred = result["masks"][k, 0] > 0.5
        box = result["boxes"][k]
        masks[mode], boxes[mode] = pred, result["boxes"]
        sides = {f"{h}x{w}": int(n) for (h, w), n in zip(*grids.unique(dim=0, return_counts=True))}
        table[mode] = {
            "detection": k,
            "score": float(result["scores"][k]),
            "label": CATEGORIES[int(result["labels"][k]) - 1],
            "box_px": [float(box[2] - box[0]), float(box[3] - box[1])],
            "grid": grids[k].tolist(),
            "grids_all_detections": sides,
            "grid_and_score_by_detection": [
                [*g, round(float(v), 4)] for g, v in zip(grids.tolist(), result["scores"])
            ],
            "detections": len(result["boxes"]),
            f"detections_above_{SHOWN_SCORE}": int((result["scores"] > SHOWN_SCORE).sum()),
            "mask_iou": float(batched_iou(pred[None], scene.mask[None])),
            "boundary_iou": boundary_iou(scene.mask, pred),
        }
        if table[mode]["score"] < MIN_SCORE or table[mode]["mask_iou"] < MIN_IOU:
            raise RuntimeError(f"the big object is not detected in mode {mode}: {table[mode]}")
    if not torch.equal(boxes["box"], boxes["fixed224"]):
        raise RuntimeError(
            "the two mask modes gave different boxes: they should share the detector"
        )
    return table, masks


def oracle(scene: Scene, sides: list[int]) -> dict:
    """The big object's ground truth resampled to ``side x side`` in its box and pasted back
    (:func:`~benchmarks.scoring.oracle_outputs`): the mask IoU and Boundary IoU a grid of that
    side can reach at most, by side."""
    truth = scene.mask[None].to(torch.uint8)
    target = {"masks": truth, "boxes": masks_to_boxes(truth), "labels": torch.tensor([scene.label])}
    table = {}
    for side in sides:
        output = oracle_outputs([(scene.image, {**target, "image_id": 0})], side)[0]
        mask = output["masks"][0, 0] > 0.5
        table[str(side)] = {
            "mask_iou": float(batched_iou(mask[None], scene.mask[None])),
            "boundary_iou": boundary_iou(scene.mask, mask),
        }
    return table


def timing(
    model, scene: Scene, output: tuple[int, int], rounds: int, threshold: float | None = None
) -> dict:
    """Medians of ``rounds`` alternated runs per mode (detections scoring above ``threshold``):
    end to end, detector, mask rendering, paste, and their sum ``mask_s``; peak MB."""
    meters = stage_meters(model)
    seconds = {mode: [] for mode in MODES}

    def run(mode: str) -> None:
        with mask_settings(model, **MODES[mode]), score_threshold(model, threshold):
            start = time.perf_counter()
            predict_pasted(model, [scene.image], [[output]])
            total = time.perf_counter() - start
        part = {name: meter.take() for name, meter in meters.items()}
        detector = part["features"] + part["boxes"]
        render = part["heads"] - part["boxes"]
        seconds[mode].append((total, detector, render, total - part["features"] - part["heads"]))

    runs = {mode: functools.partial(run, mode) for mode in MODES}
    try:
        alternate(runs, rounds)
    finally:
        for meter in meters.values():
            meter.remove()
    names = ("end_to_end_s", "detector_s", "render_s", "paste_s")
    samples = {m: [dict(zip(names, row)) for row in rows[1:]] for m, rows in seconds.items()}
    table = {
        name: {m: statistics.median(r[name] for r in rows) for m, rows in samples.items()}
        for name in names
    }
    table["mask_s"] = {
        m: statistics.median(r["render_s"] + r["paste_s"] for r in rows)
        for m, rows in samples.items()
    }
    table["peak_mb"] = {mode: peak_bytes(run) / 2**20 for mode, run in runs.items()}
    return {**table, "samples": samples}


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(H, W)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--output must be WIDTHxHEIGHT, got {text!r}") from None
    if w < INPUT[1] or h < INPUT[0]:
        raise argparse.ArgumentTypeError(f"--output must be at least {INPUT[1]}x{INPUT[0]}")
    return h, w


def log_results(section: dict) -> None:
    """The figures of the big object, and one line per mode and timing."""
    table = section["modes"]
    shown = section[f"score_above_{SHOWN_SCORE}"]
    log(f"  the two modes' masks of the big object differ at {section['pixels_that_differ']} px")
    for side, row in section["oracle"].items():
        log(f"  ground truth through a {side} grid: Boundary IoU {row['boundary_iou']:.4f}")
    for mode in MODES:
        row = table[mode]
        log(
            f"  {mode:<9} grid {row['grid']}: mask IoU {row['mask_iou']:.4f}, Boundary IoU "
            f"{row['boundary_iou']:.4f}; grids of all detections {row['grids_all_detections']}"
        )
        for name, part in ((f"{row['detections']} detections", section), ("score > 0.5", shown)):
            log(
                f"    {name:<14} masks {part['mask_s'][mode]:6.3f} s (render "
                f"{part['render_s'][mode]:6.3f}, paste {part['paste_s'][mode]:6.3f}), end to end "
                f"{part['end_to_end_s'][mode]:6.3f} s, peak {part['peak_mb'][mode]:6.0f} MB"
            )


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=parse_size, default=OUTPUT, help="WxH (4000x3000)")
    parser.add_argument("--seed", type=int, default=VAL_SEED)
    parser.add_argument("--out", default="benchmarks/results/results.json")
    parser.add_argument("--picture", default="benchmarks/results/per_box_scale.png")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    output = args.output
    model = shipped_model(INSTANCE["pointrend"], log).model
    scene = make_scene(args.seed, output)
    log(
        f"scene {scene.index} of seed {scene.seed}, object {scene.instance} "
        f"({CATEGORIES[scene.label - 1]}), masks pasted at {output[1]}x{output[0]}"
    )
    table, masks = accuracy(model, scene, output)
    ceiling = oracle(scene, sorted({max(table[m]["grid"]) for m in MODES}))
    section = timing(model, scene, output, args.rounds)
    section[f"score_above_{SHOWN_SCORE}"] = timing(model, scene, output, args.rounds, SHOWN_SCORE)
    titles = {
        m: f"{NAMES[m]}: grid {'x'.join(map(str, table[m]['grid']))}, "
        f"Boundary IoU {table[m]['boundary_iou']:.3f}"
        for m in MODES
    }
    panels = {titles[m]: masks[m] for m in MODES}
    crop = plot_boundary_crop(panels, scene.mask, Path(args.picture), CROP)
    gt_box = masks_to_boxes(scene.mask[None])[0]
    section.update(
        grid={m: table[m]["grid"] for m in MODES},
        mask_iou={m: table[m]["mask_iou"] for m in MODES},
        boundary_iou={m: table[m]["boundary_iou"] for m in MODES},
        modes=table,
        pixels_that_differ=int((masks["box"] ^ masks["fixed224"]).sum()),
        oracle=ceiling,
        input_image=list(INPUT),
        output_image=list(output),
        object_box_px=(gt_box[2:] - gt_box[:2] + 1).tolist(),
        object_size_px=float((gt_box[2:] - gt_box[:2] + 1).max()),
        scene={
            "seed": scene.seed,
            "index": scene.index,
            "instance": scene.instance,
            "category": CATEGORIES[scene.label - 1],
        },
        boundary_distance_px=boundary_distance(*output),
        picture={"file": Path(args.picture).name, "crop_y_x_side": crop},
        rounds=args.rounds,
        threads=args.threads,
        command=command_line("benchmarks.scale", argv),
        machine=machine_info(),
    )
    log_results(section)
    path = Path(args.out)
    log(f"wrote {args.picture} and {store_standalone(path, 'per_box_scale', section)}")
    return section


if __name__ == "__main__":
    main()
