"""Cost of per-box mask resolution vs fixed 224 vs torchvision's 28 x 28 head (CPU). Not a test.

100 boxes, each side log-uniform from 16 to 600 pixels, inside an 800 x 1333 image (P2 of
random features, K = 80, untrained heads: the cost does not depend on the weights' values, only
on the number of points, which is fixed per step), one thread:

* mask branch: time (median over rounds, contenders alternating) and peak memory of live
  intermediate tensors (:func:`~benchmarks.meters.peak_bytes`) of PointRend's branch with
  ``mask_resolution="box"`` (each box at its own grid side), PointRend at a fixed 224 and
  torchvision's 4x conv head at 28 x 28; masks box-relative, not pasted;
* the mask branch also with ``mask_points_per_side`` 1.75 (half the default's points per step;
  its accuracy is not measured);
* end to end: ResNet-50-FPN Mask R-CNN on the image, the same 100 boxes forced through the three
  mask branches (box branch's detections replaced), masks pasted at image size.

With ``--accuracy N``: the shipped synthetic PointRend model (160 px input) on N fresh validation
images, masks fixed 224 vs per-box, scored at 160 / 320 / 640 px against exact ground truth
(as the bench's accuracy by resolution), Boundary AP and mask AP with standard errors over folds.

Writes ``results.json``'s ``"per_box_resolution"`` (``mask_branch_s``, ``peak_mb``,
``end_to_end_s``, each for ``"box"``, ``"fixed224"``, ``"torchvision28"``; with
``--accuracy``, ``boundary_ap`` / ``mask_ap`` by evaluation size for ``"box"`` and
``"fixed224"``, each ``{"value", "se"}``).

Run: ``python -m benchmarks.per_box --rounds 3 [--accuracy 100]``.
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
from pathlib import Path

import torch
from torchvision.models.detection import maskrcnn_resnet50_fpn

from pointrend.models import pointrend_maskrcnn_resnet50_fpn
from pointrend.pretrained import load_torchvision_weights

from .accuracy import INSTANCE, shipped_model
from .cost import CHANNELS, DenseMaskHead, K, pointrend_branch, render_as_the_model_does
from .machine import command_line, machine_info
from .meters import alternate, peak_bytes
from .report import store_standalone
from .resolution import FACTORS
from .scoring import mask_settings, predict_at_sizes, score_results, validation_set
from .summary import standard_error

log = functools.partial(print, flush=True)
IMAGE = (800, 1333)
CONTENDERS = ("box", "fixed224", "torchvision28")
SPARSE = 1.75  # half the default points per step (784 / 224 = 3.5 per grid side)


def log_uniform_boxes(n: int, height: int, width: int, low=16.0, high=600.0, seed=0):
    """``n x 4`` boxes, each side log-uniform in ``[low, high]`` pixels, inside the image."""
    g = torch.Generator().manual_seed(seed)
    logs = math.log(low) + torch.rand(n, 2, generator=g) * (math.log(high) - math.log(low))
    size = logs.exp()
    origin = torch.rand(n, 2, generator=g) * (torch.tensor([width, height]) - size)
    return torch.cat([origin, origin + size], dim=1)


def mask_branch(rounds: int, boxes: torch.Tensor, labels: torch.Tensor) -> dict:
    """Time and peak memory of the three mask branches on ``boxes`` (box-relative masks)."""
    torch.manual_seed(0)
    features = torch.randn(1, CHANNELS, 200, 336)  # P2 of the padded 800 x 1344 image
    fixed = pointrend_branch(224).eval()
    box = pointrend_branch(224, mask_resolution="box").eval()
    box.load_state_dict(fixed.state_dict())
    sparse = pointrend_branch(224, mask_resolution="box", points_per_side=SPARSE).eval()
    sparse.load_state_dict(fixed.state_dict())
    dense = DenseMaskHead(28).eval()
    fine = features.contiguous(memory_format=torch.channels_last)
    runs = {
        "box": lambda: box.render_by_box_size(fine, 4.0, [boxes], labels, torch.ones(1, 2)),
        f"box_points_per_side_{SPARSE}": lambda: sparse.render_by_box_size(
            fine, 4.0, [boxes], labels, torch.ones(1, 2)
        ),
        "fixed224": lambda: render_as_the_model_does(fixed, features, [boxes], labels),
        "torchvision28": lambda: dense({"0": features}, [boxes], [IMAGE], labels),
    }
    samples = alternate(runs, rounds)
    with torch.no_grad():
        grids = [f"{h}x{w}" for h, w in runs["box"]().sizes().tolist()]
    return {
        "mask_branch_s": {k: statistics.median(v) for k, v in samples.items()},
        "peak_mb": {k: peak_bytes(run) / 2**20 for k, run in runs.items()},
        "mask_branch_samples_s": samples,
        "box_grids": {g: grids.count(g) for g in sorted(set(grids), key=grids.index)},
    }


def end_to_end(rounds: int, boxes: torch.Tensor) -> dict:
    """R50-FPN on one 800 x 1333 image, ``boxes`` forced through each mask branch."""
    torch.manual_seed(0)
    baseline = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    fixed = pointrend_maskrcnn_resnet50_fpn(num_classes=91).eval()
    load_torchvision_weights(fixed, baseline.state_dict(), "maskrcnn")
    box = pointrend_maskrcnn_resnet50_fpn(num_classes=91, mask_resolution="box").eval()
    box.load_state_dict(fixed.state_dict())
    image = torch.rand(3, *IMAGE)
    n = boxes.shape[0]
    labels = torch.randint(1, 91, (n,), generator=torch.Generator().manual_seed(2))
    scores = torch.linspace(1.0, 0.5, n)
    models = {"box": box, "fixed224": fixed, "torchvision28": baseline}
    for model in models.values():
        model.roi_heads.postprocess_detections = lambda *args: ([boxes], [scores], [labels])
    with torch.no_grad():
        for model in models.values():  # the boxes went through
            assert model([image])[0]["masks"].shape == (n, 1, *IMAGE)
    samples = alternate({k: lambda m=m: m([image]) for k, m in models.items()}, rounds)
    return {
        "end_to_end_s": {k: statistics.median(v) for k, v in samples.items()},
        "end_to_end_samples_s": samples,
    }


def accuracy(num_images: int, folds: int = 4) -> dict:
    """Boundary AP and mask AP of fixed 224 vs per-box masks at 1x, 2x and 4x the input size."""
    pointrend = shipped_model(INSTANCE["pointrend"], log)
    base = pointrend.image_size
    vals = {
        base * f: validation_set("instance", num_images, base, folds, base * f if f > 1 else None)
        for f in FACTORS
    }
    table = {"boundary_ap": {}, "mask_ap": {}}
    for name, changes in (("fixed224", {"output_size": 224}), ("box", {"mask_resolution": "box"})):
        with mask_settings(pointrend.model, **changes):
            results = predict_at_sizes(pointrend.model, vals[base].dataset, sorted(vals))
        for size, val in vals.items():
            scores = score_results(val, results[size])
            for key, metric in (("boundary_ap", "boundary_AP"), ("mask_ap", "mask_AP")):
                cell = {"value": scores[metric], "se": standard_error(scores, metric)}
                table[key].setdefault(str(size), {})[name] = cell
            log(f"  {name:<9} at {size} px: Boundary AP {scores['boundary_AP']:5.1f}")
    return {**table, "accuracy_val_images": num_images, "accuracy_folds": folds}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.per_box", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--boxes", type=int, default=100)
    parser.add_argument("--accuracy", type=int, default=0, help="validation images (0: skip)")
    parser.add_argument("--out", default="benchmarks/results/results.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    boxes = log_uniform_boxes(args.boxes, *IMAGE)
    labels = torch.randint(1, K, (args.boxes,), generator=torch.Generator().manual_seed(1))
    log(f"per-box mask resolution: {args.boxes} boxes, sides log-uniform 16..600 px, {IMAGE}")
    section = mask_branch(args.rounds, boxes, labels)
    for k in section["mask_branch_s"]:
        log(
            f"  mask branch {k:<26} {section['mask_branch_s'][k]:7.3f} s, "
            f"peak {section['peak_mb'][k]:8.1f} MB"
        )
    log(f"  {len(section['box_grids'])} grids (H x W: boxes): {section['box_grids']}")
    section.update(end_to_end(args.rounds, boxes))
    for k in CONTENDERS:
        log(f"  end to end {k:<14} {section['end_to_end_s'][k]:7.2f} s")
    if args.accuracy:
        section.update(accuracy(args.accuracy))
    section.update(
        boxes=args.boxes,
        image=list(IMAGE),
        rounds=args.rounds,
        threads=args.threads,
        not_measured=[] if args.accuracy else ["boundary_ap"],
        command=command_line("benchmarks.per_box", argv),
        machine=machine_info(),
    )
    path = Path(args.out)
    log(f"wrote {store_standalone(path, 'per_box_resolution', section)}")


if __name__ == "__main__":
    main()
