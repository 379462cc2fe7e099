"""Semantic segmentation at full resolution (the paper's 1024 x 2048 Cityscapes frame), CPU.

:func:`semantic_model_costs`: five whole models (random weights, the library's builders):
(a) Semantic FPN, stride-4 logits upsampled; (b) (a) + PointRend; (c) DeepLabV3 output stride
16, upsampled; (d) (c) + PointRend (4 steps); (e) DeepLabV3 at output stride 8. Each PointRend
model carries its plain model's weights; the refinement alone of (b) and (d) (``render`` on
precomputed coarse logits and fine features) is timed too. Targets: refinement at most 25% of
the coarse model's time; peak memory below DeepLabV3-OS-8's; about 32k points per 1024 x 2048
image (the paper). ``python -m benchmarks.semantic [--quick]`` writes
``benchmarks/results/semantic_models.json``; the bench's ``semantic`` section is the same.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from torch import Tensor

from pointrend.models import deeplabv3, pointrend_deeplabv3, pointrend_semantic_fpn, semantic_fpn
from pointrend.semantic import SemanticSegmenter

from . import common

LABELS = {
    "fpn": "(a) Semantic FPN, stride 4 upsampled",
    "fpn_pointrend": "(b) Semantic FPN + PointRend",
    "deeplab_os16": "(c) DeepLabV3-OS-16 upsampled",
    "deeplab_os16_pointrend": "(d) DeepLabV3-OS-16 + PointRend",
    "deeplab_os8": "(e) DeepLabV3-OS-8 upsampled",
}
PAIRS = {"fpn_pointrend": "fpn", "deeplab_os16_pointrend": "deeplab_os16"}  # ours: its coarse
PAPER_POINTS = 32 * 1024  # "about 32k" points for a 1024 x 2048 image


def build_models(backbone: str, num_classes: int, num_points: int) -> dict[str, SemanticSegmenter]:
    """The five contenders (:data:`LABELS`), eval mode, random weights shared where they can be."""
    torch.manual_seed(0)
    coarse = {"weights_backbone": None}
    refined = coarse | {"subdivision_num_points": num_points}
    models = {
        "fpn": semantic_fpn(backbone, num_classes, **coarse),
        "fpn_pointrend": pointrend_semantic_fpn(backbone, num_classes, **refined),
        "deeplab_os16": deeplabv3(backbone, num_classes, **coarse),
        "deeplab_os16_pointrend": pointrend_deeplabv3(backbone, num_classes, **refined),
        "deeplab_os8": deeplabv3(backbone, num_classes, output_stride=8, **coarse),
    }
    for ours, plain in PAIRS.items():
        keys = models[ours].load_state_dict(models[plain].state_dict(), strict=False)
        assert not keys.unexpected_keys, keys
        assert all(k.startswith("point_head.") for k in keys.missing_keys), keys
    models["deeplab_os8"].load_state_dict(models["deeplab_os16"].state_dict())
    return {name: model.eval() for name, model in models.items()}


def refinement_inputs(model: SemanticSegmenter, image: Tensor) -> tuple[Tensor, Tensor]:
    """What the renderer starts from: fine features ``1 x C x H/4 x W/4`` and coarse logits
    ``1 x K x H/s x W/s`` (``s`` the model's coarse stride), from the model's coarse part."""
    with torch.no_grad():
        features, coarse = model._features(image)
    return features[model.fine_index], coarse


def _measure(fn: Callable[[], object], model: SemanticSegmenter) -> tuple[dict, Tensor]:
    """One call (the timing's warm-up too): peak MB of live tensors and the points predicted."""
    meter, counter = common.PeakMemory(), common.PointCounter(model.point_head)
    with torch.no_grad(), counter, meter:
        out = fn()
    out = out["out"] if isinstance(out, dict) else out
    row = {"peak_mb": meter.peak / 2**20, "points_per_image": counter.points}
    return row | {"point_head_calls": counter.calls}, out


def semantic_model_costs(
    height: int = 1024,
    width: int = 2048,
    num_classes: int = 19,
    repeats: int = 3,
    backbone: str = "resnet50",
    num_points: int = 8192,
    log: Callable[[str], None] = print,
) -> dict:
    """Time, peak memory and points per image of the five contenders.

    See the module docstring. ``rows`` holds the five models; ``refinement`` the render step
    alone of (b) and (d) with its ratio to the coarse model; ``targets`` which targets hold.
    """
    models = build_models(backbone, num_classes, num_points)
    image = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    inputs = {ours: refinement_inputs(models[ours], image) for ours in PAIRS}
    contenders = {name: (lambda m=model: m(image)) for name, model in models.items()}
    for ours, (fine, coarse) in inputs.items():
        contenders[f"{ours}.refinement"] = lambda m=models[ours], f=fine, c=coarse: m.render(f, c)
    rows: dict[str, dict] = {}
    for name, fn in contenders.items():
        model = models[name.split(".")[0]]
        row, out = _measure(fn, model)
        assert out.shape == (1, num_classes, height, width), (name, tuple(out.shape))
        rows[name] = row | {"coarse_stride": model.coarse_stride}
    samples = common.alternate(contenders, repeats, warmup=False)
    for name, times in samples.items():
        rows[name].update(time_s=statistics.median(times), samples_s=times)
    refinement = {}
    for ours, plain in PAIRS.items():
        part = rows.pop(f"{ours}.refinement")
        part["over_coarse_model"] = part["time_s"] / rows[plain]["time_s"]
        part["coarse_shape"] = list(inputs[ours][1].shape)
        refinement[ours] = part
        rows[ours]["vs_coarse_model"] = rows[ours]["time_s"] / rows[plain]["time_s"]
    for name, row in rows.items():
        row["label"] = LABELS[name]
    for ours, part in refinement.items():
        part["label"] = f"refinement of {LABELS[ours][:3]}"
    for row in [*rows.values(), *refinement.values()]:
        row["peak_vs_deeplab_os8"] = row["peak_mb"] / rows["deeplab_os8"]["peak_mb"]
        log(f"  {row['label']:<36} {row['time_s']:8.3f} s {row['peak_mb']:8.1f} MB")
    targets = {ours: {} for ours in refinement}
    for ours, part in refinement.items():
        targets[ours]["refinement_at_most_25pct_of_coarse"] = part["over_coarse_model"] <= 0.25
        targets[ours]["peak_below_deeplab_os8"] = rows[ours]["peak_vs_deeplab_os8"] < 1
    result = {"image": [height, width], "num_classes": num_classes, "backbone": backbone}
    result |= {"subdivision_num_points": num_points, "repeats": repeats}
    result |= {"threads": torch.get_num_threads(), "paper_points_per_image": PAPER_POINTS}
    return result | {"rows": rows, "refinement": refinement, "targets": targets}


def main(argv: list[str] | None = None) -> None:
    out = "benchmarks/results/semantic_models.json"
    parser = common.arguments("semantic", __doc__.split("\n")[0], out, repeats=3, height=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--num-points", type=int, default=8192, help="points a subdivision step")
    parser.add_argument("--quick", action="store_true", help="64 x 128, ResNet-18, one round")
    args = common.parse(parser, argv)
    if args.quick:
        args.height, args.width, args.backbone, args.repeats = 64, 128, "resnet18", 1
    size, options = (args.height, args.width), (args.repeats, args.backbone, args.num_points)
    result = semantic_model_costs(*size, 19, *options, common.log)
    info = {"command": common.command_line("benchmarks.semantic", argv)}
    print(
        f"wrote {common.write_json(info | {'machine': common.machine_info()} | result, args.out)}"
    )


if __name__ == "__main__":
    main()
