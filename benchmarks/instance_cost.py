"""Cost of PointRend's mask branch vs torchvision's 4x conv mask head (CPU). Not a test.

Measures, and writes to ``benchmarks/results/instance_cost.json``:

1. Multiply-adds per box (``torch.utils.flop_counter.FlopCounterMode`` counts 2 FLOPs per
   multiply-add; the table reports multiply-adds like the paper) for the 4x conv head at 28x28,
   the 4x conv head at 224x224 (112x112 RoIAlign input) and PointRend at 224x224, with K = 80
   classes (COCO, as the paper). Activations: elements written by the heads' conv / linear
   layers per box, in total and at the peak (PointRend runs its steps one after another; the
   paper's "activations" column).
2. CPU time of the mask branch on 100 boxes at outputs 28, 56, 112, 224, 448: PointRend (coarse
   head + subdivision) vs the dense 4x conv head (RoIAlign at output / 2, 4 convs, deconv,
   predictor). Runs alternate, median of several repeats. The dense head at 224 / 448 is timed
   on fewer boxes and scaled to 100 (its cost is exactly per box; said so in the output).
3. End to end, ResNet-50-FPN, one 800 x 1333 image, the same 100 boxes forced through both mask
   branches (the box branch's output is replaced by them): PointRend Mask R-CNN vs torchvision's
   Mask R-CNN, identical backbone / RPN / box head weights, masks pasted at image size.

Run: ``.venv/bin/python benchmarks/instance_cost.py`` (one thread; ``--threads N`` to change,
``--quick`` for a short smoke run).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from pointrend.instance import PointRendMaskBranch, PointRendMaskConfig
from pointrend.instance.builders import load_torchvision_maskrcnn_weights
from pointrend.models import pointrend_maskrcnn_resnet50_fpn

PAPER = {"4x conv 28": (0.5e9, 0.5e6), "4x conv 224": (34e9, 33e6), "PointRend 224": (0.9e9, 0.7e6)}
K = 80
CHANNELS = 256
LAYER_OPS = {"convolution", "addmm", "mm", "bmm", "_convolution", "mkldnn_convolution"}
INPUT_OPS = {"grid_sampler_2d", "roi_align"}  # features sampled for the head (its input)


class ActivationCounter(TorchDispatchMode):
    """Elements written by conv / linear ops, per phase (``counter.phase = name``).

    ``inputs`` counts, per phase, the features sampled for the head (RoIAlign / grid_sample
    outputs) separately.
    """

    def __init__(self):
        super().__init__()
        self.phase = "all"
        self.counts: dict[str, int] = {}
        self.inputs: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if isinstance(out, torch.Tensor) and name in LAYER_OPS | INPUT_OPS:
            table = self.counts if name in LAYER_OPS else self.inputs
            table[self.phase] = table.get(self.phase, 0) + out.numel()
        return out


class DenseMaskHead(torch.nn.Module):
    """torchvision's mask branch at any output size: RoIAlign (output / 2) -> 4 conv -> x2."""

    def __init__(self, output_size: int, num_classes: int = K):
        super().__init__()
        self.pool = MultiScaleRoIAlign(["0"], output_size // 2, sampling_ratio=2)
        self.head = MaskRCNNHeads(CHANNELS, [CHANNELS] * 4, 1)
        self.predictor = MaskRCNNPredictor(CHANNELS, CHANNELS, num_classes)

    def forward(self, features, boxes, image_sizes, labels):
        logits = self.predictor(self.head(self.pool(features, boxes, image_sizes)))
        return logits[torch.arange(len(labels)), labels][:, None].sigmoid()


def pointrend_branch(output_size: int, num_classes: int = K) -> PointRendMaskBranch:
    return PointRendMaskBranch(CHANNELS, num_classes, PointRendMaskConfig(output_size=output_size))


def random_boxes(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """``n`` boxes of 32 to 400 pixels a side inside an ``height x width`` image."""
    g = torch.Generator().manual_seed(seed)
    size = 32 + torch.rand(n, 2, generator=g) * 368
    origin = torch.rand(n, 2, generator=g) * (torch.tensor([width, height]) - size)
    return torch.cat([origin, origin + size], dim=1)


def head_costs(features: torch.Tensor, image_size) -> dict:
    """Multiply-adds and activations per box of the three heads of the paper's table."""
    n = 4
    boxes = [random_boxes(n, *image_size)]
    labels = torch.randint(1, K, (n,))
    rows = {}
    for name, output in (("4x conv 28", 28), ("4x conv 224", 224), ("PointRend 224", 224)):
        torch.manual_seed(0)
        if name.startswith("PointRend"):
            branch = pointrend_branch(output).eval()
            counter = StepCounter(branch)

            def run(branch=branch):
                return branch.render(features, 4.0, boxes, labels)

        else:
            dense = DenseMaskHead(output).eval()
            counter = ActivationCounter()

            def run(dense=dense):
                return dense({"0": features}, boxes, [image_size], labels)

        with torch.no_grad():
            flops = FlopCounterMode(display=False)
            with flops:
                run()
            with counter:
                run()
        macs = flops.get_total_flops() / 2 / n
        peak = max(counter.counts.values())  # the largest phase (PointRend: coarse or a step)
        total = sum(counter.counts.values())
        with_inputs = {k: v + counter.inputs.get(k, 0) for k, v in counter.counts.items()}
        paper_macs, paper_acts = PAPER[name]
        rows[name] = {
            "multiply_adds_per_box": macs,
            "paper_multiply_adds": paper_macs,
            "ratio_to_paper": macs / paper_macs,
            "activations_total_per_box": total / n,
            "activations_peak_per_box": peak / n,
            "activations_peak_mb_per_box_fp32": peak / n * 4 / 2**20,
            "activations_peak_with_sampled_inputs_per_box": max(with_inputs.values()) / n,
            "paper_activations": paper_acts,
        }
    return rows


class StepCounter(ActivationCounter):
    """Activations of PointRend split by phase: the coarse head, then one phase per point-head call."""

    def __init__(self, branch: PointRendMaskBranch):
        super().__init__()
        self.branch = branch
        self.calls = 0

    def _step(self, module, args):
        self.calls += 1
        self.phase = f"step {self.calls}"

    def __enter__(self):
        self.phase, self.calls = "coarse", 0
        self._hook = self.branch.point_head.register_forward_pre_hook(self._step)
        return super().__enter__()

    def __exit__(self, *exc):
        self._hook.remove()
        return super().__exit__(*exc)


def timed(fn, *args) -> float:
    """Seconds of one call ``fn(*args)``."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def render_as_the_model_does(branch, features, boxes, labels):
    """PointRendRoIHeads: P2 to channels-last (faster point sampling), then subdivision."""
    fine = features.contiguous(memory_format=torch.channels_last)
    return branch.render(fine, 4.0, boxes, labels)


def branch_times(features, image_size, sizes, repeats: int, boxes_total: int = 100) -> dict:
    """Mask branch time on ``boxes_total`` boxes: PointRend vs dense 4x conv, alternating."""
    rows = {}
    all_boxes = random_boxes(boxes_total, *image_size)
    labels = torch.randint(1, K, (boxes_total,))
    for size in sizes:
        torch.manual_seed(0)
        branch = pointrend_branch(size).eval()
        dense = DenseMaskHead(size).eval()
        # the dense head's cost is per box: time it on fewer boxes when it is very slow
        dense_boxes = {224: 4, 448: 1}.get(size, boxes_total)
        samples = {"pointrend": [], "dense": []}
        with torch.no_grad():
            branch.render(features, 4.0, [all_boxes[:2]], labels[:2])  # warm up
            dense({"0": features}, [all_boxes[:1]], [image_size], labels[:1])
            for _ in range(repeats):
                samples["pointrend"].append(
                    timed(render_as_the_model_does, branch, features, [all_boxes], labels)
                )
                samples["dense"].append(
                    timed(
                        dense,
                        {"0": features},
                        [all_boxes[:dense_boxes]],
                        [image_size],
                        labels[:dense_boxes],
                    )
                )
        pointrend = statistics.median(samples["pointrend"])
        dense_t = statistics.median(samples["dense"]) * boxes_total / dense_boxes
        rows[str(size)] = {
            "pointrend_s": pointrend,
            "dense_4xconv_s": dense_t,
            "dense_timed_on_boxes": dense_boxes,
            "speedup_pointrend": dense_t / pointrend,
            "pointrend_samples_s": samples["pointrend"],
        }
        print(
            f"  output {size:>3}: PointRend {pointrend:7.3f} s, dense 4x conv {dense_t:8.3f} s"
            f"{'' if dense_boxes == boxes_total else f' (timed on {dense_boxes} boxes, x{boxes_total // dense_boxes})'}"
            f", dense / PointRend = {dense_t / pointrend:.1f}",
            flush=True,
        )
    return rows


def end_to_end(repeats: int, boxes_total: int = 100) -> dict:
    """ResNet-50-FPN on one 800 x 1333 image, the same boxes forced through both mask branches."""
    torch.manual_seed(0)
    baseline = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    ours = pointrend_maskrcnn_resnet50_fpn(num_classes=91).eval()
    load_torchvision_maskrcnn_weights(ours, baseline.state_dict())
    image = torch.rand(3, 800, 1333)
    boxes = random_boxes(boxes_total, 800, 1333, seed=1)
    labels = torch.randint(1, 91, (boxes_total,))
    scores = torch.linspace(1.0, 0.5, boxes_total)

    def forced(class_logits, box_regression, proposals, image_shapes):
        return [boxes], [scores], [labels]

    for model in (baseline, ours):
        model.roi_heads.postprocess_detections = forced
    samples = {"torchvision": [], "pointrend": []}
    with torch.no_grad():
        for model in (baseline, ours):  # warm up, and check the boxes went through
            out = model([image])[0]
            assert out["masks"].shape == (boxes_total, 1, 800, 1333)
        for _ in range(repeats):
            samples["torchvision"].append(timed(baseline, [image]))
            samples["pointrend"].append(timed(ours, [image]))
    tv, pr = statistics.median(samples["torchvision"]), statistics.median(samples["pointrend"])
    print(
        f"  torchvision Mask R-CNN {tv:.2f} s, PointRend Mask R-CNN {pr:.2f} s, "
        f"ratio {pr / tv:.2f} (target <= 1.2)",
        flush=True,
    )
    return {
        "torchvision_s": tv,
        "pointrend_s": pr,
        "ratio": pr / tv,
        "samples": samples,
        "boxes": boxes_total,
        "image": [800, 1333],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="few repeats, small sizes only")
    parser.add_argument("--out", default="benchmarks/results/instance_cost.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repeats = 1 if args.quick else args.repeats

    image_size = (800, 1333)
    torch.manual_seed(0)
    features = torch.randn(1, CHANNELS, 200, 336)  # P2 of a padded 800 x 1344 image

    print(f"PointRend instance mask branch cost (CPU, {args.threads} thread(s), K = {K})")
    print("1. per box, multiply-adds and activations (elements)")
    costs = head_costs(features, image_size)
    print(
        f"  {'head':<14} {'mult-adds':>10} {'paper':>7} {'ratio':>6} {'act. peak':>10} "
        f"{'+inputs':>8} {'act. total':>10} {'paper':>6}"
    )
    for name, row in costs.items():
        print(
            f"  {name:<14} {row['multiply_adds_per_box'] / 1e9:9.2f}B {row['paper_multiply_adds'] / 1e9:6.1f}B "
            f"{row['ratio_to_paper']:6.2f} {row['activations_peak_per_box'] / 1e6:9.2f}M "
            f"{row['activations_peak_with_sampled_inputs_per_box'] / 1e6:7.2f}M "
            f"{row['activations_total_per_box'] / 1e6:9.2f}M {row['paper_activations'] / 1e6:5.1f}M"
        )
    print("2. mask branch time on 100 boxes (median)")
    sizes = [28, 56] if args.quick else [28, 56, 112, 224, 448]
    times = branch_times(features, image_size, sizes, repeats)
    print("3. end to end, ResNet-50-FPN, 800 x 1333, 100 forced boxes (median)")
    e2e = end_to_end(max(1, repeats if not args.quick else 1))

    result = {
        "command": "python benchmarks/instance_cost.py"
        + (f" --threads {args.threads}" if args.threads != 1 else "")
        + (" --quick" if args.quick else ""),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "threads": args.threads,
        "repeats": repeats,
        "num_classes": K,
        "per_box": costs,
        "mask_branch_100_boxes": times,
        "end_to_end_r50_fpn_800x1333_100_boxes": e2e,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
