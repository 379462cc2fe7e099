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

Measured, one thread, the two modes alternating (median of ``--rounds``):

* ``end_to_end_s``: the model on the small image, masks rendered and pasted at the output size;
  ``detector_s``: the part of it inside the backbone, RPN and box head (forward hooks);
  ``mask_s``: the rest, per round (mask rendering and pasting; with the transform and the box
  post-processing, both small);
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
import functools
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, masks_to_boxes

from pointrend.data.shapes import CATEGORIES
from pointrend.data.synthetic import render_sample
from pointrend.demo import WEIGHTS_DIR
from pointrend.engine.evaluate import predict_pasted
from pointrend.evaluation.boundary import boundary_distance, boundary_iou, boundary_region

from .accuracy import INSTANCE, ModelSource, obtain_model
from .machine import command_line, machine_info, write_json
from .meters import alternate, peak_bytes
from .scoring import VAL_SEED, mask_settings

log = functools.partial(print, flush=True)
INPUT = (120, 160)  # H x W of the scene the model sees (4:3, its own size: not resized)
OUTPUT = (3000, 4000)  # H x W the masks are pasted at
OBJECT_FRACTION = (0.60, 0.65)  # the big object's box longer side / image width
MODES = {
    "fixed224": {"mask_resolution": "fixed", "output_size": 224},
    "box": {"mask_resolution": "box"},
}
CROP = 300  # side of the picture's crop, output pixels
MIN_SCORE, MIN_IOU = 0.5, 0.5  # the big object counts as detected above both


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


class ModuleSeconds:
    """Seconds spent inside the forward of some (not nested) modules, summed until reset."""

    def __init__(self, modules):
        self.seconds, self._start = 0.0, 0.0
        self.handles = [m.register_forward_pre_hook(self._enter) for m in modules]
        self.handles += [m.register_forward_hook(self._leave) for m in modules]

    def _enter(self, module, args) -> None:
        self._start = time.perf_counter()

    def _leave(self, module, args, output) -> None:
        self.seconds += time.perf_counter() - self._start

    def take(self) -> float:
        """The seconds so far, and start again from 0."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()


def detector_modules(model) -> list:
    """The modules of the detector before the masks: backbone, RPN and box head."""
    heads = model.roi_heads
    return [model.backbone, model.rpn, heads.box_roi_pool, heads.box_head, heads.box_predictor]


def grid_shapes(masks) -> torch.Tensor:
    """``R x 2`` int64 ``(height, width)`` of each detection's rendered grid, from the mask
    branch's output: an ``R x 1 x M x M`` tensor or masks grouped by size (``groups`` of
    ``(index, R_g x 1 x h x w)``)."""
    if isinstance(masks, torch.Tensor):
        return torch.tensor(masks.shape[-2:]).expand(masks.shape[0], 2).clone()
    out = torch.zeros(masks.count, 2, dtype=torch.int64)
    for index, group in masks.groups:
        out[index.cpu()] = torch.tensor(group.shape[-2:])
    return out


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


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """IoU of two ``H x W`` bool masks."""
    return float((a & b).sum() / (a | b).sum().clamp(min=1))


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
            "detections": len(result["boxes"]),
            "mask_iou": mask_iou(pred, scene.mask),
            "boundary_iou": boundary_iou(scene.mask, pred),
        }
        if table[mode]["score"] < MIN_SCORE or table[mode]["mask_iou"] < MIN_IOU:
            raise RuntimeError(f"the big object is not detected in mode {mode}: {table[mode]}")
    if not torch.equal(boxes["box"], boxes["fixed224"]):
        raise RuntimeError(
            "the two mask modes gave different boxes: they should share the detector"
        )
    return table, masks


def timing(model, scene: Scene, output: tuple[int, int], rounds: int) -> dict:
    """Medians of ``rounds`` alternated runs: end to end, detector, the rest (masks); peak MB."""
    meter = ModuleSeconds(detector_modules(model))
    inside = {mode: [] for mode in MODES}

    def run(mode: str) -> None:
        with mask_settings(model, **MODES[mode]):
            predict_pasted(model, [scene.image], [[output]])
        inside[mode].append(meter.take())

    runs = {mode: functools.partial(run, mode) for mode in MODES}
    try:
        total = alternate(runs, rounds)
    finally:
        meter.remove()
    detector = {mode: seconds[1:] for mode, seconds in inside.items()}  # not the warm-up
    masks = {m: [t - d for t, d in zip(total[m], detector[m])] for m in MODES}
    peak = {mode: peak_bytes(run) / 2**20 for mode, run in runs.items()}
    return {
        "mask_s": {m: statistics.median(v) for m, v in masks.items()},
        "end_to_end_s": {m: statistics.median(v) for m, v in total.items()},
        "detector_s": {m: statistics.median(v) for m, v in detector.items()},
        "peak_mb": peak,
        "samples_s": {"end_to_end": total, "detector": detector},
    }


def contour(mask: torch.Tensor) -> torch.Tensor:
    """``H x W`` bool: the mask's pixels next to a pixel outside it (the image border is not a
    contour)."""
    return boundary_region(mask, distance=1, border="replicate")


def crop_origin(mask: torch.Tensor, side: int) -> tuple[int, int]:
    """``(y, x)`` of the ``side x side`` window holding the most contour pixels of ``mask``
    (windows on a grid of ``side / 8`` pixels)."""
    step = max(1, side // 8)
    counts = F.avg_pool2d(contour(mask)[None, None].float(), side, stride=step)[0, 0]
    y, x = divmod(int(counts.argmax()), counts.shape[1])
    return y * step, x * step


def panel(mask: torch.Tensor, outline: torch.Tensor | None) -> torch.Tensor:
    """``h x w x 3`` uint8: the mask light on dark, ``outline`` (bool) in red."""
    grey = torch.where(mask, 225, 45).to(torch.uint8)
    rgb = grey[..., None].repeat(1, 1, 3)
    if outline is not None:
        rgb[outline] = torch.tensor([230, 20, 20], dtype=torch.uint8)
    return rgb


def draw_picture(masks: dict, scene: Scene, titles: dict, path: Path) -> list[int]:
    """Three panels at 100 % (fixed 224 | per-box | ground truth); returns the crop (y, x, side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = min(CROP, *scene.mask.shape)
    y, x = crop_origin(scene.mask, side)
    window = (slice(y, y + side), slice(x, x + side))
    truth = scene.mask[window]
    images = [panel(masks[mode][window], contour(truth)) for mode in MODES]
    images.append(panel(truth, None))
    names = [titles[mode] for mode in MODES] + ["ground truth (exact)"]
    gap, top, dpi = 12, 34, 100  # pixels
    width, height = 3 * side + 4 * gap, side + top + gap
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    for i, (image, name) in enumerate(zip(images, names)):
        left = gap + i * (side + gap)
        ax = fig.add_axes((left / width, gap / height, side / width, side / height))
        ax.imshow(image.numpy(), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(name, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return [y, x, side]


def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(H, W)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--output must be WIDTHxHEIGHT, got {text!r}") from None
    if w < INPUT[1] or h < INPUT[0]:
        raise argparse.ArgumentTypeError(f"--output must be at least {INPUT[1]}x{INPUT[0]}")
    return h, w


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
    source = ModelSource(WEIGHTS_DIR, Path(tempfile.mkdtemp(prefix="scale-")), None, log=log)
    model = obtain_model(INSTANCE["pointrend"], source).model
    scene = make_scene(args.seed, output)
    log(
        f"scene {scene.index} of seed {scene.seed}, object {scene.instance} "
        f"({CATEGORIES[scene.label - 1]}), masks pasted at {output[1]}x{output[0]}"
    )
    table, masks = accuracy(model, scene, output)
    section = timing(model, scene, output, args.rounds)
    titles = {m: f"{m}: grid {'x'.join(map(str, table[m]['grid']))}" for m in MODES}
    crop = draw_picture(masks, scene, titles, Path(args.picture))
    gt_box = masks_to_boxes(scene.mask[None])[0]
    for mode in MODES:
        row = table[mode]
        log(
            f"  {mode:<9} grid {row['grid']}, mask {section['mask_s'][mode]:.3f} s, end to end "
            f"{section['end_to_end_s'][mode]:.3f} s, peak {section['peak_mb'][mode]:.0f} MB, "
            f"mask IoU {row['mask_iou']:.4f}, Boundary IoU {row['boundary_iou']:.4f}"
        )
    section.update(
        grid={m: table[m]["grid"] for m in MODES},
        mask_iou={m: table[m]["mask_iou"] for m in MODES},
        boundary_iou={m: table[m]["boundary_iou"] for m in MODES},
        modes=table,
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
    path = Path(args.out)
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["per_box_scale"] = section
    write_json(results, path)
    log(f"wrote {path} ['per_box_scale'] and {args.picture}")
    return section


if __name__ == "__main__":
    main()
