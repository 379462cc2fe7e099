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

Run: ``python -m benchmarks.instance_cost`` (one thread; ``--threads N`` to change,
``--quick`` for a short smoke run). The measuring functions are :mod:`benchmarks.cost`'s, the
ones the report's ``cost`` section runs.
"""

from __future__ import annotations

import argparse
import functools

import torch

from .cost import CHANNELS, K, branch_times, end_to_end, head_costs
from .machine import command_line, machine_info, write_json

log = functools.partial(print, flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instance_cost", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="few repeats, small sizes only")
    parser.add_argument("--out", default="benchmarks/results/instance_cost.json")
    args = parser.parse_args(argv)
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
    times = branch_times(features, image_size, sizes, repeats, log=log)
    print("3. end to end, ResNet-50-FPN, 800 x 1333, 100 forced boxes (median)")
    e2e = end_to_end(max(1, repeats if not args.quick else 1), log=log)

    result = {
        "command": command_line("benchmarks.instance_cost", argv),
        "machine": machine_info(),
        "threads": args.threads,
        "repeats": repeats,
        "num_classes": K,
        "per_box": costs,
        "mask_branch_100_boxes": times,
        "end_to_end_r50_fpn_800x1333_100_boxes": e2e,
    }
    print(f"wrote {write_json(result, args.out)}")


if __name__ == "__main__":
    main()
