"""CPU time of an imported detectron2 PointRend R50-FPN next to pointrend's own R50-FPN. Not a test.

All are :func:`pointrend.models.pointrend_maskrcnn` ResNet-50-FPN with 80 classes and the
background (81): "imported" with the options the importer sets for the zoo model
``pointrend_rcnn_R_50_FPN_1x_coco`` (stride in the 1x1 conv, frozen batch norm, unrounded
anchors at nominal strides, aligned adaptive RoIAlign, detectron2's resize rule and mask paste);
"pointrend (COCO)" with the builder's defaults as ``weights="COCO"`` builds it (frozen batch
norm, the model the imported one replaces); "pointrend (scratch)" with the defaults of a model
trained from scratch (``BatchNorm2d``, one fused pass at inference where the frozen norm takes
a multiply and an add). Weights are random (seed 0): the time does not depend on
their values once the number of detections is fixed, and the score threshold 0 gives both models
their full 100 detections (both normalise with torchvision's ImageNet mean / std: with random
weights detectron2's 0-255 scale makes the logits overflow). Input: one 800 x 1333 RGB image (neither model resizes it). One
thread; the two models alternate, one warm-up call each, then ``--rounds`` rounds; the median
of each is reported.

Run: ``python -m benchmarks.detectron2_speed [--rounds 3] [--out results.json]``.
"""

from __future__ import annotations

import argparse
import importlib
import statistics

import torch

from benchmarks.machine import command_line, machine_info, write_json
from benchmarks.meters import alternate

ZOO_NAME = "pointrend_rcnn_R_50_FPN_1x_coco"
HEIGHT, WIDTH, DETECTIONS = 800, 1333, 100


def imported_options(package: str = "pointrend") -> tuple[str, int, dict]:
    """``(backbone, num_classes, options)`` the importer of ``package`` (this checkout's, or a
    baseline tree imported under another name) gives :data:`ZOO_NAME`, with
    :data:`DETECTIONS` detections forced (score threshold 0)."""
    instance = importlib.import_module(f"{package}.interop.detectron2.instance")
    zoo = importlib.import_module(f"{package}.interop.detectron2.zoo")
    name, num_classes, options = instance.instance_options(zoo.zoo_config(ZOO_NAME))
    # Random weights with detectron2's 0-255 input scale overflow to non-finite logits (no
    # detections); torchvision's normaliser keeps them finite and costs the same.
    options.update(
        box_score_thresh=0.0,
        box_detections_per_img=DETECTIONS,
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )
    return name, num_classes, options


def build_models() -> dict[str, torch.nn.Module]:
    from pointrend.models import pointrend_maskrcnn

    name, num_classes, options = imported_options()
    torch.manual_seed(0)
    imported = pointrend_maskrcnn(name, num_classes, **options).eval()
    models = {"imported (detectron2 options)": imported}
    for label, norm in (("pointrend (COCO)", "frozen"), ("pointrend (scratch)", "batch")):
        torch.manual_seed(0)
        models[label] = pointrend_maskrcnn(
            "resnet50",
            num_classes,
            norm=norm,
            box_score_thresh=0.0,
            box_detections_per_img=DETECTIONS,
        ).eval()
    return models


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="timed calls of each model")
    parser.add_argument("--out", help="write the figures as JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    image = torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    models = build_models()
    with torch.no_grad():
        counts = {name: len(model([image])[0]["boxes"]) for name, model in models.items()}
    samples = alternate(
        {name: (lambda m=model: m([image])) for name, model in models.items()},
        args.rounds,
        warmup=False,  # the detection count above was the warm-up call
    )
    medians = {name: statistics.median(times) for name, times in samples.items()}
    imported, coco, scratch = medians.values()
    result = {
        "command": command_line("benchmarks.detectron2_speed", argv),
        "machine": machine_info(),
        "image": [HEIGHT, WIDTH],
        "detections": counts,
        "seconds": samples,
        "median_seconds": medians,
        "imported_over_pointrend_coco": imported / coco,
        "imported_over_pointrend_scratch": imported / scratch,
    }
    for name, seconds in medians.items():
        print(f"{name:32s} {seconds:7.2f} s  ({counts[name]} detections)")
    print(f"imported / pointrend (COCO): {imported / coco:.3f}")
    print(f"imported / pointrend (scratch): {imported / scratch:.3f}")
    if args.out:
        write_json(result, args.out)
    return result


if __name__ == "__main__":
    main()
