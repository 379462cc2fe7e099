"""The ``pointrend`` command: ``pointrend COMMAND --help`` for each command.

Handlers stay thin: they parse arguments and call library functions. Expected failures (bad
config, missing file, corrupt checkpoint, non-finite loss) print one clear line and exit 1.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__


def _add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model from a YAML config (torchrun for many processes)"
    )
    p.add_argument("config", help="YAML config, e.g. configs/synthetic_instance_pointrend_r18.yaml")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set solver.max_iter=100 (repeatable)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest checkpoint in the output dir",
    )
    p.add_argument("--out", help="output directory (overrides output_dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from .engine import load_config, train
    from .engine.distributed import is_main_process

    overrides = list(args.set) + ([f"output_dir={args.out}"] if args.out else [])
    cfg = load_config(args.config, overrides)
    result = train(cfg, resume=args.resume, progress=not args.no_progress)
    if is_main_process():
        print(f"trained {result.iteration} iterations; weights: {result.final_weights}")
        if result.last_losses:
            print(
                "last losses: " + ", ".join(f"{k} {v:.4f}" for k, v in result.last_losses.items())
            )
        if result.metrics:
            from .engine.evaluate import format_metrics

            print(format_metrics(result.metrics))
    return 0


def _add_data_parser(sub) -> None:
    p = sub.add_parser("data", help="datasets: generate the synthetic benchmarks")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    s = data_sub.add_parser("synth", help="write a synthetic high-resolution dataset to disk")
    s.add_argument("--task", choices=["instance", "semantic"], required=True)
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--num-images", type=int, default=100)
    s.add_argument("--size", type=int, default=256, help="image side in pixels")
    s.add_argument("--seed", type=int, default=0)
    s.set_defaults(func=_run_data_synth)


def _run_data_synth(args) -> int:
    from .data.write import write_synthetic_dataset

    path = write_synthetic_dataset(
        args.task, args.out, args.num_images, args.size, args.seed, progress=True
    )
    print(
        f"wrote {args.num_images} {args.task} images of {args.size}x{args.size} to {args.out} ({path.name})"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pointrend", description="PointRend: image segmentation as rendering."
    )
    parser.add_argument("--version", action="version", version=f"pointrend {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_add_train_parser, _add_data_parser):
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    from .engine import CheckpointError, ConfigError, NonFiniteLossError

    try:
        return int(args.func(args) or 0)
    except (
        ConfigError,
        CheckpointError,
        NonFiniteLossError,
        FileExistsError,
        FileNotFoundError,
        ValueError,
    ) as err:
        print(f"pointrend {args.command}: error: {err}", file=sys.stderr)
        return 1
