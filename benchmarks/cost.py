"""Cost of PointRend's instance mask branch vs torchvision's dense 4x conv mask head (CPU).

* :func:`head_costs`: multiply-adds and activations per box of the paper's cost table (K = 80):
  elements written by the heads' conv / linear layers; PointRend's peak is its largest step.
* :func:`branch_times`: both mask branches on 100 boxes, alternated, median; the dense head at
  224 / 448 is timed on fewer boxes and scaled (its cost is exactly per box).
* :func:`end_to_end`: ResNet-50-FPN Mask R-CNN vs PointRend Mask R-CNN on one 800 x 1333 image,
  the same 100 boxes forced through both mask branches, masks pasted at image size.

The dense head's counts are taken on the ``meta`` device. ``python -m benchmarks.cost`` writes
:func:`measure` to ``benchmarks/results/instance_cost.json``; the bench's ``cost`` section too.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode
from torchvision.models.detection import maskrcnn_resnet50_fpn
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from pointrend.instance import PointRendMaskBranch, PointRendMaskConfig
from pointrend.models import pointrend_maskrcnn_resnet50_fpn
from pointrend.pretrained import load_torchvision_weights
from pointrend.settings import replace_options

from . import common

PAPER = {"4x conv 28": (0.5e9, 0.5e6), "4x conv 224": (34e9, 33e6), "PointRend 224": (0.9e9, 0.7e6)}
K = 80
CHANNELS = 256
Log = Callable[[str], None]


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
    """PointRend's mask branch rendering ``output_size`` masks with the paper's defaults (7 x 7
    coarse mask, 28 x 28 points a step); ``options``: flat config options."""
    config = replace_options(PointRendMaskConfig(output_size=output_size), **options)
    return PointRendMaskBranch(CHANNELS, num_classes, config)


def random_boxes(n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
    """``n`` boxes of 32 to 400 pixels a side inside an ``height x width`` image."""
    g = torch.Generator().manual_seed(seed)
    size = 32 + torch.rand(n, 2, generator=g) * 368
    origin = torch.rand(n, 2, generator=g) * (torch.tensor([width, height]) - size)
    return torch.cat([origin, origin + size], dim=1)


def count_call(run: Callable[[], object], counter: common.ActivationCounter) -> float:
    """Run ``run()`` twice (FLOP counter, then ``counter``); return the multiply-adds
    (``FlopCounterMode`` counts 2 FLOPs per multiply-add)."""
    with torch.no_grad():
        flops = FlopCounterMode(display=False)
        with flops:
            run()
        with counter:
            run()
    return flops.get_total_flops() / 2


def head_costs(features: torch.Tensor, image_size, n: int = 4) -> dict:
    """Multiply-adds and activations per box of the three heads of the paper's table; the
    dense head's on the ``meta`` device (shapes only). Activations: the largest phase (PointRend:
    the coarse head or a step), alone and with the features sampled for it."""
    boxes = [random_boxes(n, *image_size)]
    labels = torch.randint(1, K, (n,))
    rows = {}
    for name, output in (("4x conv 28", 28), ("4x conv 224", 224), ("PointRend 224", 224)):
        torch.manual_seed(0)
        if name.startswith("PointRend"):
            branch = pointrend_branch(output).eval()
            counter = common.PointCounter(branch.point_head)
            run = functools.partial(branch.render, features, 4.0, boxes, labels)
        else:
            counter, dense = common.ActivationCounter(), DenseMaskHead(output).to("meta").eval()
            meta = {"0": features.to("meta")}, [b.to("meta") for b in boxes], [image_size]
            run = functools.partial(dense, *meta, labels.to("meta"))
        macs = count_call(run, counter) / n
        inputs = [v + counter.inputs.get(k, 0) for k, v in counter.counts.items()]
        rows[name] = {"multiply_adds_per_box": macs, "paper_multiply_adds": PAPER[name][0]}
        rows[name]["activations_peak_per_box"] = max(counter.counts.values()) / n
        rows[name]["activations_peak_with_sampled_inputs_per_box"] = max(inputs) / n
        rows[name]["paper_activations"] = PAPER[name][1]
    return rows


DENSE_BOXES = {224: 4, 448: 1}


def last(features: torch.Tensor) -> torch.Tensor:
    """``features`` channels-last: how the RoI heads give P2 to the mask branch."""
    return features.contiguous(memory_format=torch.channels_last)


def branch_times(
    features, image_size, sizes, repeats: int, boxes_total=100, dense_boxes=None, log: Log = print
) -> dict:
    """Mask branch time on ``boxes_total`` boxes: PointRend vs dense 4x conv, alternating. The
    dense head's cost is exactly per box: at the sizes in ``dense_boxes`` (default 224: 4,
    448: 1) it is timed on that many boxes and scaled to ``boxes_total``."""
    dense_boxes = DENSE_BOXES if dense_boxes is None else dense_boxes
    rows = {}
    all_boxes = random_boxes(boxes_total, *image_size)
    labels = torch.randint(1, K, (boxes_total,))
    for size in sizes:
        torch.manual_seed(0)
        branch = pointrend_branch(size).eval()
        dense = DenseMaskHead(size).eval()
        n = min(dense_boxes.get(size, boxes_total), boxes_total)
        runs = {
            # P2 made channels-last in the timed call, as PointRendRoIHeads does per image
            "pointrend": lambda b=branch: b.render(last(features), 4.0, [all_boxes], labels),
            "dense": lambda d=dense, n=n: d(
                {"0": features}, [all_boxes[:n]], [image_size], labels[:n]
            ),
        }
        samples = common.alternate(runs, repeats)
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
        log(f"  output {size}: PointRend {pointrend:.3f} s, dense 4x conv {dense_t:.3f} s")
    return rows


def r50_models() -> dict[str, torch.nn.Module]:
    """torchvision's ResNet-50-FPN Mask R-CNN and PointRend's (91 classes) with the same backbone, RPN and box head weights (random, seed 0), eval mode."""
    torch.manual_seed(0)
    baseline = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None).eval()
    ours = pointrend_maskrcnn_resnet50_fpn(num_classes=91).eval()
    load_torchvision_weights(ours, baseline.state_dict(), "maskrcnn")
    return {"torchvision": baseline, "pointrend": ours}


def forced_times(models: dict, image, boxes, labels, repeats: int) -> dict[str, list[float]]:
    """Seconds of each model on ``image`` (alternated) with its detections replaced by ``boxes``
    / ``labels``, so that every model renders and pastes the same masks."""
    scores = torch.linspace(1.0, 0.5, len(boxes))
    for model in models.values():
        model.roi_heads.postprocess_detections = lambda *args: ([boxes], [scores], [labels])
    with torch.no_grad():
        for model in models.values():  # the boxes went through
            assert model([image])[0]["masks"].shape == (len(boxes), 1, *image.shape[-2:])
    return common.alternate({k: lambda m=m: m([image]) for k, m in models.items()}, repeats)


def end_to_end(repeats: int, boxes_total: int = 100, log: Log = print) -> dict:
    """ResNet-50-FPN on one 800 x 1333 image, the same boxes forced through both mask branches."""
    models = r50_models()
    image = torch.rand(3, 800, 1333)
    boxes = random_boxes(boxes_total, 800, 1333, seed=1)
    samples = forced_times(models, image, boxes, torch.randint(1, 91, (boxes_total,)), repeats)
    tv, pr = statistics.median(samples["torchvision"]), statistics.median(samples["pointrend"])
    log(f"  end to end: torchvision {tv:.2f} s, PointRend {pr:.2f} s, ratio {pr / tv:.2f}")
    result = {"torchvision_s": tv, "pointrend_s": pr, "ratio": pr / tv, "samples": samples}
    return result | {"boxes": boxes_total, "image": [800, 1333]}


def measure(
    image_size,
    sizes,
    repeats: int,
    boxes=100,
    dense_boxes=None,
    per_box_boxes=4,
    end_to_end_repeats: int | None = None,
    log: Log = print,
) -> dict:
    """The whole cost section: :func:`head_costs`, :func:`branch_times` (``sweep``) on a random P2
    of an ``image_size`` image and, with ``end_to_end_repeats``, :func:`end_to_end`."""
    (h, w) = image_size
    torch.manual_seed(0)
    features = torch.randn(1, CHANNELS, -(-h // 32) * 8, -(-w // 32) * 8)  # P2, padded
    log(f"cost: per box, then the mask branch on {boxes} boxes at {sizes}")
    result = {"image": [h, w], "num_classes": K, "boxes": boxes, "repeats": repeats}
    result["per_box"] = head_costs(features, (h, w), per_box_boxes)
    result["sweep"] = branch_times(features, (h, w), sizes, repeats, boxes, dense_boxes, log)
    if end_to_end_repeats:
        result["end_to_end"] = end_to_end(end_to_end_repeats, log=log)
    return result


def main(argv: list[str] | None = None) -> None:
    out = "benchmarks/results/instance_cost.json"
    parser = common.arguments("cost", __doc__.split("\n")[0], out, repeats=5)
    parser.add_argument("--quick", action="store_true", help="one repeat, outputs 28 and 56")
    args = common.parse(parser, argv)
    repeats = 1 if args.quick else args.repeats
    sizes = [28, 56] if args.quick else [28, 56, 112, 224, 448]
    result = {"command": common.command_line("benchmarks.cost", argv)}
    result |= {"machine": common.machine_info(), "threads": args.threads}
    result |= measure((800, 1333), sizes, repeats, end_to_end_repeats=repeats)
    print(f"wrote {common.write_json(result, args.out)}")


if __name__ == "__main__":
    main()
