"""Full semantic models at full resolution (the paper's 1024 x 2048 Cityscapes frame), CPU.

One random image ``1 x 3 x H x W``, K classes, the library's builders (random weights, no
downloads), eval mode, ``torch.no_grad()``. Five ways to ``1 x K x H x W`` logits:

* **(a)** Semantic FPN (P2-P5), stride-4 logits bilinearly upsampled;
* **(b)** (a) + PointRend, subdivided to full resolution (2 steps);
* **(c)** DeepLabV3, output stride 16, logits upsampled;
* **(d)** (c) + PointRend (4 steps, fine features from res2);
* **(e)** DeepLabV3 at output stride 8, logits upsampled (the costly way to finer logits).

Each PointRend model carries its plain model's weights (it only adds the point head); (e) has
(c)'s weights too. Also timed: the **refinement alone** of (b) and (d), i.e. the model's
:meth:`~pointrend.semantic.SemanticSegmenter.render` on its precomputed coarse logits and fine
features, so that "refinement / coarse model" is a measured ratio (the plain model (a) / (c),
upsampling included, is the coarse model). All contenders alternate in every round (median of
the rounds). Peak memory: bytes of live tensors allocated during one call
(:class:`~benchmarks.meters.PeakMemory`; weights and the image not counted). Points per image:
the point head's inputs counted during that call. Multiply-adds: ``FlopCounterMode`` / 2 on the
``meta`` device (shapes only; interpolation and point sampling count 0).

Targets (issue 4): the refinement costs at most 25% of the coarse model's time; PointRend's peak
memory below DeepLabV3-OS-8's; the paper predicts about 32k points for 1024 x 2048 (4 steps of
8192, DeepLabV3-OS-16).
"""

from __future__ import annotations

import argparse
import copy
import functools
import statistics
from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.modules.module import register_module_forward_pre_hook

from pointrend._fused_head import FusedPointHead
from pointrend.models import deeplabv3, pointrend_deeplabv3, pointrend_semantic_fpn, semantic_fpn
from pointrend.semantic import SemanticSegmenter

from .machine import command_line, machine_info, write_json
from .meters import ActivationCounter, PeakMemory, alternate, count_call

__all__ = ["LABELS", "PAIRS", "build_models", "semantic_model_costs", "format_table"]

Log = Callable[[str], None]
LABELS = {
    "fpn": "(a) Semantic FPN, stride 4 upsampled",
    "fpn_pointrend": "(b) Semantic FPN + PointRend",
    "deeplab_os16": "(c) DeepLabV3-OS-16 upsampled",
    "deeplab_os16_pointrend": "(d) DeepLabV3-OS-16 + PointRend",
    "deeplab_os8": "(e) DeepLabV3-OS-8 upsampled",
}
PAIRS = {"fpn_pointrend": "fpn", "deeplab_os16_pointrend": "deeplab_os16"}  # ours: its coarse
PAPER_POINTS = 32 * 1024  # "about 32k" points for a 1024 x 2048 image
MAX_REFINEMENT_SHARE = 0.25


def build_models(backbone: str, num_classes: int, num_points: int) -> dict[str, SemanticSegmenter]:
    """The five contenders (:data:`LABELS`), eval mode, random weights shared where they can be."""
    torch.manual_seed(0)
    options = {"weights_backbone": None}
    models = {
        "fpn": semantic_fpn(backbone, num_classes, **options),
        "fpn_pointrend": pointrend_semantic_fpn(
            backbone, num_classes, subdivision_num_points=num_points, **options
        ),
        "deeplab_os16": deeplabv3(backbone, num_classes, **options),
        "deeplab_os16_pointrend": pointrend_deeplabv3(
            backbone, num_classes, subdivision_num_points=num_points, **options
        ),
        "deeplab_os8": deeplabv3(backbone, num_classes, output_stride=8, **options),
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


class PointCounter:
    """Points the point head predicts while active: the ``P`` of its ``N x C x P`` inputs, summed
    over calls (per image when ``N = 1``); ``calls`` is the number of point-head calls."""

    def __init__(self, model: SemanticSegmenter):
        self.head = model.point_head
        self.points = self.calls = 0

    def _count(self, module, args) -> None:
        if module is not self.head and not isinstance(module, FusedPointHead):
            return
        self.calls += 1
        self.points += args[0].shape[-1]

    def __enter__(self):
        self.points = self.calls = 0
        # Every point-head call: the head itself, or its fused copy when rendering without grad.
        self._hook = register_module_forward_pre_hook(self._count) if self.head else None
        return self

    def __exit__(self, *exc):
        if self._hook is not None:
            self._hook.remove()


def _output(out) -> Tensor:
    return out["out"] if isinstance(out, dict) else out


def _measure(fn: Callable[[], object], model: SemanticSegmenter) -> tuple[dict, Tensor]:
    """One call (the timing's warm-up too): peak MB of live tensors and the points predicted."""
    meter, counter = PeakMemory(), PointCounter(model)
    with torch.no_grad(), counter, meter:
        out = _output(fn())
    row = {"peak_mb": meter.peak / 2**20, "points_per_image": counter.points}
    row["point_head_calls"] = counter.calls
    return row, out


def _multiply_adds(model: SemanticSegmenter, shape, refine: bool) -> dict:
    """Multiply-adds and activations (elements written by conv / linear layers), on ``meta``."""
    meta = copy.deepcopy(model).to("meta")
    image = torch.empty(shape, device="meta")
    if refine:
        fine, coarse = refinement_inputs(meta, image)
        run = lambda: meta.render(fine, coarse)  # noqa: E731
    else:
        run = lambda: meta(image)  # noqa: E731
    counter = ActivationCounter()
    try:
        macs = count_call(run, counter)
    except (NotImplementedError, RuntimeError):  # an operator without a meta kernel
        return {"multiply_adds": None, "activations": None}
    return {"multiply_adds": macs, "activations": sum(counter.counts.values())}


def _targets(rows: dict, refinement: dict) -> dict:
    os8 = rows["deeplab_os8"]["peak_mb"]
    out = {}
    for ours in PAIRS:
        share = refinement[ours]["over_coarse_model"]
        out[ours] = {
            "refinement_at_most_25pct_of_coarse": share <= MAX_REFINEMENT_SHARE,
            "peak_below_deeplab_os8": rows[ours]["peak_mb"] < os8,
        }
    return out


def semantic_model_costs(
    height: int = 1024,
    width: int = 2048,
    num_classes: int = 19,
    repeats: int = 3,
    backbone: str = "resnet50",
    num_points: int = 8192,
    log: Log | None = print,
) -> dict:
    """Time, peak memory, points per image (and multiply-adds) of the five contenders.

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
        if log:
            log(f"  measuring {name} (peak memory, points, multiply-adds)")
        row, out = _measure(fn, model)
        assert out.shape == (1, num_classes, height, width), (name, tuple(out.shape))
        rows[name] = {**row, **_multiply_adds(model, image.shape, name.endswith(".refinement"))}
        rows[name]["coarse_stride"] = model.coarse_stride
    if log:
        log(f"  timing {len(contenders)} contenders, {repeats} alternated rounds")
    samples = alternate(contenders, repeats, warmup=False)
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
    result = {
        "image": [height, width],
        "num_classes": num_classes,
        "backbone": backbone,
        "subdivision_num_points": num_points,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        "paper_points_per_image": PAPER_POINTS,
        "max_refinement_share": MAX_REFINEMENT_SHARE,
        "rows": rows,
        "refinement": refinement,
        "targets": _targets(rows, refinement),
    }
    if log:
        for line in format_table(result):
            log(line)
    return result


def _mb(value: float) -> str:
    return f"{value:8.1f}"


def format_table(result: dict) -> list[str]:
    """The figures as plain-text lines (the bench's log and the script's output)."""
    h, w = result["image"]
    out = [
        f"Full models at {h}x{w}, K = {result['num_classes']}, {result['backbone']}, "
        f"{result['subdivision_num_points']} points a step, median of {result['repeats']}:",
        f"  {'model':<36} {'time s':>8} {'x coarse':>8} {'peak MB':>8} {'x OS8':>6} "
        f"{'points':>7} {'mult-adds':>10}",
    ]
    for row in result["rows"].values():
        ratio = f"{row['vs_coarse_model']:8.2f}" if "vs_coarse_model" in row else " " * 8
        macs = "n/a" if row["multiply_adds"] is None else f"{row['multiply_adds'] / 1e9:.1f}G"
        out.append(
            f"  {row['label']:<36} {row['time_s']:8.3f} {ratio} {_mb(row['peak_mb'])} "
            f"{row['peak_vs_deeplab_os8']:6.2f} {row['points_per_image']:7d} {macs:>10}"
        )
    for ours, part in result["refinement"].items():
        met = result["targets"][ours]
        out.append(
            f"  {part['label']} alone: {part['time_s']:.3f} s = "
            f"{100 * part['over_coarse_model']:.1f}% of the coarse model "
            f"(target <= {100 * result['max_refinement_share']:.0f}%: "
            f"{'met' if met['refinement_at_most_25pct_of_coarse'] else 'NOT met'}), "
            f"peak {part['peak_mb']:.1f} MB; whole-model peak below OS-8's: "
            f"{'yes' if met['peak_below_deeplab_os8'] else 'NO'}"
        )
    return out


def main(argv: list[str] | None = None) -> None:
    """``python -m benchmarks.semantic_models``: the measurement alone, written to a JSON file."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.semantic_models",
        description="full semantic models with and without PointRend",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 x 128, ResNet-18, one round")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--num-points", type=int, default=8192, help="points a subdivision step")
    parser.add_argument("--out", default="benchmarks/results/semantic_models.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.height, args.width, args.backbone, args.repeats = 64, 128, "resnet18", 1
    log = functools.partial(print, flush=True)
    log(f"Semantic models at {args.height} x {args.width} ({args.threads} thread(s), K = 19)")
    result = semantic_model_costs(
        args.height,
        args.width,
        19,
        repeats=args.repeats,
        backbone=args.backbone,
        num_points=args.num_points,
        log=log,
    )
    info = {"command": command_line("benchmarks.semantic_models", argv), "machine": machine_info()}
    log(f"wrote {write_json({**info, **result}, args.out)}")


if __name__ == "__main__":
    main()
