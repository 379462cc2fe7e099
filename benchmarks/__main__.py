"""``python -m benchmarks``: measure the paper's claims, write ``REPORT.md``, ``results.json`` and
plots (``make bench``; ``make bench-quick`` for the minutes-long check of the pipeline)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .run import SECTIONS, BenchOptions, run_bench

RESULTS = "benchmarks/results"
QUICK_RESULTS = "outputs/bench-quick"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="measure the paper's claims (cost, accuracy, ablations): REPORT.md + plots",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: proves the pipeline (minutes)")
    p.add_argument(
        "--out",
        help=f"report folder (default {RESULTS}; with --quick {QUICK_RESULTS}, so that a quick "
        "run never replaces the stored figures)",
    )
    p.add_argument("--weights-dir", help="checkpoints to evaluate (default: the shipped weights)")
    p.add_argument("--work-dir", help="where models trained by the bench go (default: a temp dir)")
    p.add_argument("--train-iters", type=int, help="iterations of each model trained here")
    p.add_argument("--val-images", type=int, help="fresh validation images (default 100)")
    p.add_argument("--repeats", type=int, help="timing repeats (median; default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated subset of {','.join(SECTIONS)} (the others are kept)",
    )
    return p


def _command(args: argparse.Namespace) -> str:
    """The command line that reproduces this run (the report states it)."""
    flags = {"--quick": args.quick, "--sections": args.sections, "--out": args.out}
    for name in ("weights_dir", "work_dir", "train_iters", "val_images", "repeats", "threads"):
        flags["--" + name.replace("_", "-")] = getattr(args, name)
    return " ".join(
        ["python -m benchmarks"]
        + [k if v is True else f"{k} {v}" for k, v in flags.items() if v not in (None, False)]
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    torch.set_num_threads(args.threads)
    options = BenchOptions(
        out=Path(args.out),
        quick=args.quick,
        work_dir=Path(args.work_dir) if args.work_dir else None,
        train_iters=args.train_iters,
        sections=tuple(s.strip() for s in args.sections.split(",") if s.strip()),
        val_images=args.val_images,
        repeats=args.repeats,
        command=_command(args),
    )
    if args.weights_dir:
        options.weights_dir = Path(args.weights_dir)
    try:
        run_bench(options)
    except (FileNotFoundError, ValueError) as err:  # bad section, missing config (ConfigError)
        print(f"python -m benchmarks: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote REPORT.md, results.json and plots to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
