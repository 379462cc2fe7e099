"""Full semantic models at full resolution, with and without PointRend (CPU). Not a test.

Measures, and writes to ``benchmarks/results/semantic_models.json``, on one random 1024 x 2048
image (K = 19, ResNet-50, random weights: nothing is downloaded) the time (the contenders
alternated in every round, median), the peak memory of live tensors and the points the point
head predicts, of:

(a) Semantic FPN, stride-4 logits upsampled; (b) + PointRend to full resolution;
(c) DeepLabV3-OS-16 upsampled; (d) + PointRend; (e) DeepLabV3 at output stride 8.

and, in the same rounds, PointRend's refinement alone (the subdivision on the coarse logits and
fine features of (b) and (d)), as a share of the coarse model's time (target: at most 25%).
PointRend's peak memory is compared with (e)'s (target: below), its points per image with the
paper's ~32k.

Run: ``.venv/bin/python benchmarks/semantic_cost.py`` (one thread; ``--threads N`` to change,
``--quick`` for a small smoke run). The measuring function is
:func:`pointrend.bench.semantic_models.semantic_model_costs` (``pointrend bench`` runs it in its
``semantic`` section).
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
from pathlib import Path

import torch

from pointrend.bench.report import clean_json, machine_info
from pointrend.bench.semantic_models import semantic_model_costs

log = functools.partial(print, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="64 x 128, ResNet-18, one round")
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--backbone", default="resnet50")
    parser.add_argument("--num-points", type=int, default=8192, help="points a subdivision step")
    parser.add_argument("--out", default="benchmarks/results/semantic_models.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.height, args.width, args.backbone, args.repeats = 64, 128, "resnet18", 1

    log(
        f"Semantic models at {args.height} x {args.width} (CPU, {args.threads} thread(s), "
        f"{args.backbone}, K = 19)"
    )
    result = semantic_model_costs(
        args.height,
        args.width,
        19,
        repeats=args.repeats,
        backbone=args.backbone,
        num_points=args.num_points,
        log=log,
    )
    options = [f"--threads {args.threads}"] if args.threads != 1 else []
    options += ["--quick"] if args.quick else []
    result = {
        "command": " ".join(["python benchmarks/semantic_cost.py", *options]),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "machine_info": machine_info(),
        **result,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(clean_json(result), indent=2) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
