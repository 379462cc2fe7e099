"""Cost of PointRend's instance mask branch vs torchvision's dense 4x conv mask head (CPU).

Measuring functions of ``python -m benchmarks`` (section ``cost``) and of
``python -m benchmarks.instance_cost``:

* :func:`head_costs`: multiply-adds and activations per box of the three heads of the paper's
  cost table (``FlopCounterMode`` counts 2 FLOPs per multiply-add; halved here, as the paper
  reports multiply-adds). Activations are the elements written by the heads' conv / linear
  layers; PointRend runs its steps one after another, so its peak is the largest step.
* :func:`sweep_costs`: the same per box at every output size, and the peak memory a call
  allocates (:class:`PeakMemory`), for PointRend vs the dense head.
* :func:`branch_times`: CPU time of both mask branches on the same boxes, alternating the two,
  several repeats, median.
* :func:`end_to_end`: ResNet-50-FPN Mask R-CNN vs PointRend Mask R-CNN on one 800 x 1333 image.

The dense head's counts are taken on the ``meta`` device (shapes only: the same operators and
the same counts without the arithmetic, which at 448 x 448 costs ~120 G multiply-adds a box).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from torch.nn.modules.module import register_module_forward_pre_hook
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from pointrend._fused_head import FusedPointHead
from pointrend.instance import PointRendMaskBranch, PointRendMaskConfig
from pointrend.models import pointrend_maskrcnn_resnet50_fpn
from pointrend.pretrained import load_torchvision_weights
from pointrend.settings import replace_options

from .meters import ActivationCounter, alternate, count_call, peak_bytes

__all__ = [
    "PAPER",
    "K",
    "CHANNELS",
    "StepCounter",
    "DenseMaskHead",
    "pointrend_branch",
    "random_boxes",
    "head_costs",
    "sweep_costs",
    "render_as_the_model_does",
    "branch_times",
    "end_to_end",
]

PAPER = {"4x conv 28": (0.5e9, 0.5e6), "4x conv 224": (34e9, 33e6), "PointRend 224": (0.9e9, 0.7e6)}
K = 80
CHANNELS = 256
Log = Callable[[str], None]


class StepCounter(ActivationCounter):
    """Activations of PointRend split by phase: the coarse head, then one phase per point-head call."""

    def __init__(self, branch: PointRendMaskBranch):
        super().__init__()
        self.branch = branch
        self.calls = 0
        self.points = 0

    def _step(self, module, args):
        if module is not self.branch.point_head and not isinstance(module, FusedPointHead):
            return
        self.calls += 1
        self.points += args[0].shape[-1]  # point predictions per box in this call
        self.phase = f"step {self.calls}"

    def __enter__(self):
        self.phase, self.calls, self.points = "coarse", 0, 0
        # Every point-head call: the head itself, or its fused copy when rendering without grad.
        self._hook = register_module_forward_pre_hook(self._step)
        return super().__enter__()

    def __exit__(self, *exc):
        self._hook.remove()
        return super().__exit__(*exc)


class DenseMaskHead(torch.nn.Module):
    """torchvision's mask branch at any output size: RoIAlign (output / 2) -> 4 conv -> x2."""

    def __init__(self, output_size: int, num_classes: int = K):
        super().__init__()
        self.pool = MultiScaleRoIAlign(["0"], output_size // 2, sampling_ratio=2)
        self.head = MaskRCNNHeads(CHANNELS, [CHANNELS] * 4, 1)
        self.predictor = MaskRCNNPredictor(CHANNELS, CHANNELS, num_classes)

    def forward(self, features, boxes, image_sizes, labels):
        logits = self.predictor(self.head(self.pool(features, boxes, image_sizes)))
        return logits[torch.arange(len(labels), device=logits.device), labels][:, None].sigmoid()


def pointrend_branch(output_size: int, num_classes: int = K, **options) -> PointRendMaskBranch:
    """PointRend's mask branch rendering ``output_size`` masks, with the paper's defaults
    (:class:`~pointrend.instance.PointRendMaskConfig`: a 7 x 7 coarse mask, 28 x 28 points a
    subdivision step, as many steps as ``output_size`` needs); ``options`` are flat config
    options (:func:`~pointrend.settings.replace_options`)."""
    config = replace_options(PointRendMaskConfig(output_size=output_size), **options)
    return PointRendMaskBranch(CHANNELS, num_classes, config)


def random_boxes(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """``n`` boxes of 32 to 400 pixels a side inside an ``height x width`` image."""
    g = torch.Generator().manual_seed(seed)
    size = 32 + torch.rand(n, 2, generator=g) * 368
    origin = torch.rand(n, 2, generator=g) * (torch.tensor([width, height]) - size)
    return torch.cat([origin, origin + size], dim=1)


def _dense_runner(output: int, features, boxes, image_size, labels, device="cpu"):
    dense = DenseMaskHead(output).to(device).eval()
    feats = {"0": features.to(device)}
    boxes, labels = [b.to(device) for b in boxes], labels.to(device)
    return lambda: dense(feats, boxes, [image_size], labels)


def head_costs(features: torch.Tensor, image_size, n: int = 4) -> dict:
    """Multiply-adds and activations per box of the three heads of the paper's table."""
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
            counter = ActivationCounter()
            run = _dense_runner(output, features, boxes, image_size, labels, device="meta")
        macs = count_call(run, counter) / n
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


def sweep_costs(features, image_size, sizes, memory_boxes: int = 4) -> dict:
    """Per box, at every output size: multiply-adds, activations (total / peak) and peak memory.

    Memory is what one call on ``memory_boxes`` boxes allocates at its peak, divided by the
    boxes (both heads run on the same boxes; the fine features are not counted, nor PointRend's
    channels-last copy of them, made once per image whatever the number of boxes).
    """
    n = memory_boxes
    fine = features.contiguous(memory_format=torch.channels_last)
    boxes = [random_boxes(n, *image_size, seed=2)]
    labels = torch.randint(1, K, (n,), generator=torch.Generator().manual_seed(2))
    rows = {}
    for size in sizes:
        torch.manual_seed(0)
        branch = pointrend_branch(size).eval()
        counter = StepCounter(branch)

        def render(branch=branch):
            return branch.render(fine, 4.0, boxes, labels)

        pr_macs = count_call(render, counter) / n
        pr_total, pr_peak = sum(counter.counts.values()) / n, max(counter.counts.values()) / n
        dense_counter = ActivationCounter()
        meta = _dense_runner(size, features, boxes, image_size, labels, device="meta")
        dense_macs = count_call(meta, dense_counter) / n
        dense = _dense_runner(size, features, boxes, image_size, labels)
        rows[str(size)] = {
            "pointrend_multiply_adds_per_box": pr_macs,
            "dense_multiply_adds_per_box": dense_macs,
            "pointrend_activations_total_per_box": pr_total,
            "pointrend_activations_peak_per_box": pr_peak,
            "dense_activations_per_box": sum(dense_counter.counts.values()) / n,
            "pointrend_point_predictions_per_box": counter.points,
            "pointrend_peak_mb_per_box": peak_bytes(render) / n / 2**20,
            "dense_peak_mb_per_box": peak_bytes(dense) / n / 2**20,
            "memory_boxes": n,
        }
    return rows


def render_as_the_model_does(branch, features, boxes, labels):
    """PointRendRoIHeads: P2 to channels-last (faster point sampling), then subdivision."""
    fine = features.contiguous(memory_format=torch.channels_last)
    return branch.render(fine, 4.0, boxes, labels)


DENSE_BOXES = {224: 4, 448: 1}


def branch_times(
    features,
    image_size,
    sizes,
    repeats: int,
    boxes_total: int = 100,
    dense_boxes: dict[int, int] | None = None,
    log: Log | None = print,
) -> dict:
    """Mask branch time on ``boxes_total`` boxes: PointRend vs dense 4x conv, alternating.

    The dense head's cost is exactly per box: at the sizes in ``dense_boxes`` (default 224: 4,
    448: 1) it is timed on that many boxes and scaled to ``boxes_total``.
    """
    dense_boxes = DENSE_BOXES if dense_boxes is None else dense_boxes
    rows = {}
    all_boxes = random_boxes(boxes_total, *image_size)
    labels = torch.randint(1, K, (boxes_total,))
    for size in sizes:
        torch.manual_seed(0)
        branch = pointrend_branch(size).eval()
        dense = DenseMaskHead(size).eval()
        n = min(dense_boxes.get(size, boxes_total), boxes_total)
        samples = alternate(
            {
                "pointrend": lambda b=branch: render_as_the_model_does(
                    b, features, [all_boxes], labels
                ),
                "dense": lambda d=dense, n=n: d(
                    {"0": features}, [all_boxes[:n]], [image_size], labels[:n]
                ),
            },
            repeats,
        )
        pointrend = statistics.median(samples["pointrend"])
        dense_t = statistics.median(samples["dense"]) * boxes_total / n
        rows[str(size)] = {
            "pointrend_s": pointrend,
            "dense_4xconv_s": dense_t,
            "dense_timed_on_boxes": n,
            "speedup_pointrend": dense_t / pointrend,
            "pointrend_samples_s": samples["pointrend"],
            "dense_samples_s": samples["dense"],
        }
        if log:
            scaled = "" if n == boxes_total else f" (timed on {n} boxes, x{boxes_total // n})"
            log(
                f"  output {size:>3}: PointRend {pointrend:7.3f} s, dense 4x conv {dense_t:8.3f} s"
                f"{scaled}, dense / PointRend = {dense_t / pointrend:.1f}"
            )
    return rows


def end_to_end(repeats: int, boxes_total: int = 100, log: Log | None = print) -> dict:
    """ResNet-50-FPN on one 800 x 1333 image, the same boxes forced through both mask branches."""
    torch.manual_seed(0)
    baseline = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    ours = pointrend_maskrcnn_resnet50_fpn(num_classes=91).eval()
    load_torchvision_weights(ours, baseline.state_dict(), "maskrcnn")
    image = torch.rand(3, 800, 1333)
    boxes = random_boxes(boxes_total, 800, 1333, seed=1)
    labels = torch.randint(1, 91, (boxes_total,))
    scores = torch.linspace(1.0, 0.5, boxes_total)

    def forced(class_logits, box_regression, proposals, image_shapes):
        return [boxes], [scores], [labels]

    for model in (baseline, ours):
        model.roi_heads.postprocess_detections = forced
    with torch.no_grad():
        for model in (baseline, ours):  # check the boxes went through
            out = model([image])[0]
            assert out["masks"].shape == (boxes_total, 1, 800, 1333)
    samples = alternate(
        {"torchvision": lambda: baseline([image]), "pointrend": lambda: ours([image])}, repeats
    )
    tv, pr = statistics.median(samples["torchvision"]), statistics.median(samples["pointrend"])
    if log:
        log(
            f"  torchvision Mask R-CNN {tv:.2f} s, PointRend Mask R-CNN {pr:.2f} s, "
            f"ratio {pr / tv:.2f} (target <= 1.2)"
        )
    return {
        "torchvision_s": tv,
        "pointrend_s": pr,
        "ratio": pr / tv,
        "samples": samples,
        "boxes": boxes_total,
        "image": [800, 1333],
    }
