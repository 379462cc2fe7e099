"""The ``pointrend`` command: ``pointrend COMMAND --help`` for each command.

Handlers stay thin: they parse arguments and call library functions. Expected failures (bad
config, missing file, corrupt checkpoint, non-finite loss) print one clear line and exit 1.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from ._version import __version__
from .cli_options import add_device_options, autocast, device_and_amp, say_where
from .cli_options import add_overwrite_option as _add_overwrite_option
from .cli_options import add_set_option as _add_set_option

STARTED_AT = time.perf_counter()  # the demo reports its time from here (the package imported)
MASKS = "PointRend's instance masks at 224x224 (fixed) or at about each box's size (box)"


def _add_threads_option(
    p: argparse.ArgumentParser, default: int | None = None, why: str = ""
) -> None:
    what = "torch's choice, one per core" if default is None else f"{default}{why}"
    p.add_argument(
        "--threads", type=int, default=default, help=f"torch CPU threads (default: {what})"
    )


def _set_threads(args) -> None:
    """Apply ``--threads`` (a clear error for a count below 1)."""
    if args.threads is None:
        return
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads)


def _add_train_parser(sub) -> None:
    p = sub.add_parser(
        "train", help="train a model from a YAML config (torchrun for many processes)"
    )
    p.add_argument("config", help="YAML config, e.g. configs/synthetic_instance_pointrend_r18.yaml")
    _add_set_option(p, "solver.max_iter=100 (repeatable)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the latest model_NNNNNNN.pt in the output dir",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run found in the output dir and start again (default: an error)",
    )
    p.add_argument("--out", help="output directory (overrides output_dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides the config's device)")
    _add_threads_option(p)
    p.set_defaults(func=_run_train)


def _run_train(args) -> int:
    from .engine import load_config, train
    from .engine.config import require_train_data

    _set_threads(args)
    overrides = list(args.set) + ([f"output_dir={args.out}"] if args.out else [])
    overrides += [f"device={args.device}"] if args.device else []
    cfg = load_config(args.config, overrides)
    require_train_data(cfg, args.config)
    result = train(cfg, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if result.is_main_process:
        for note in result.notes:
            print(f"pointrend train: {note}")
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


def _add_eval_parser(sub) -> None:
    p = sub.add_parser(
        "eval", help="evaluate trained weights on the config's val_data (torchrun for many)"
    )
    p.add_argument("config", help="YAML config; its val_data is the evaluation set")
    p.add_argument("--weights", required=True, help="checkpoint written by 'pointrend train'")
    _add_set_option(p, "val_data.num_images=20")
    p.add_argument(
        "--out",
        help="also write the metrics to this JSON file (null where nothing is scored); on "
        "Cityscapes instances, the predictions in that evaluation's format go to OUT_cityscapes/",
    )
    _add_overwrite_option(p, "an existing --out file and OUT_cityscapes/")
    p.add_argument(
        "--eval-size",
        type=int,
        metavar="N",
        help="score against ground truth rendered exactly at N x N (synthetic instance data; the "
        "model still sees val_data.image_size and pastes its masks at N x N; sets val_data.gt_size)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_options(p)
    _add_threads_option(p)
    p.set_defaults(func=_run_eval)


def _run_eval(args) -> int:
    from .engine.outputs import check_eval_outputs, hold_file

    _set_threads(args)
    with hold_file(args.out, main_only=True) if args.out else contextlib.nullcontext():
        check_eval_outputs(args.out, [args.config, args.weights], args.overwrite)
        return _evaluate(args)


def _evaluate(args) -> int:
    """``eval`` once its output is checked and held."""
    from .engine.build import build_dataset
    from .engine.checkpoint import atomic_write
    from .engine.classes import check_classes_match
    from .engine.distributed import is_main_process
    from .engine.evaluate import (
        evaluate_instances,
        evaluate_semantic,
        format_metrics,
        metrics_json,
    )
    from .engine.inference import load_trained_model

    overrides = list(args.set or [])
    if args.eval_size is not None:
        overrides.append(f"val_data.gt_size={args.eval_size}")
    trained = load_trained_model(args.weights, args.config, overrides, device=args.device)
    device, amp = device_and_amp(args, trained.device)
    _report_model_config(trained, args)
    cfg = trained.config
    if cfg.val_data is None:
        raise ValueError(f"{args.config}: val_data is not set, nothing to evaluate on")
    dataset = build_dataset(cfg.val_data, trained.task, train=False, field="val_data")
    check_classes_match(trained.class_names, trained.num_classes, dataset, args.weights)
    evaluate = evaluate_instances if trained.task == "instance" else evaluate_semantic
    # eval --out metrics.json keeps Cityscapes predictions in metrics_cityscapes/
    predictions = (
        Path(args.out).with_name(f"{Path(args.out).stem}_cityscapes") if args.out else None
    )
    extra = {"cityscapes_dir": predictions} if trained.task == "instance" else {}
    say_where(args, device, amp)
    with autocast(device, amp):
        metrics = evaluate(trained.model, dataset, progress=not args.no_progress, **extra)
    if is_main_process():
        print(f"{trained.task} model {args.weights} on {len(dataset)} images")
        print(format_metrics(metrics))
        if args.out:
            text = metrics_json(metrics)
            atomic_write(args.out, lambda f: f.write(text), binary=False)
            print(f"metrics written to {args.out}")
            if "cityscapes" in metrics:
                print(f"Cityscapes predictions written to {predictions}")
    return 0


def _report_model_config(trained, args) -> None:
    """Say when the config given sets a model key to another value than the model config the
    weights hold (which wins); keys the YAML leaves out (a data-only YAML) are not differences.
    A YAML whose ``model.task`` is not the checkpoint's is an error."""
    from .engine.config import ConfigError, model_keys_written
    from .engine.distributed import is_main_process

    if args.config is None:
        return
    written = model_keys_written(args.config)
    task = written.get("model.task", trained.task)
    if task != trained.task:
        raise ConfigError(
            f"{args.config} sets model.task: {task}, but {args.weights} holds a {trained.task} "
            f"model: give a {trained.task} config (its data is what the model is run on)"
        )
    notes = [n for n in trained.config_notes if _is_written(n.split(":", 1)[0], written)]
    if notes and is_main_process():
        print(
            f"pointrend {args.command}: the model is built from the config stored in "
            f"{args.weights}; {args.config} differs in {'; '.join(notes)}",
            file=sys.stderr,
        )


def _is_written(key: str, written: dict) -> bool:
    return key in written or any(key.startswith(f"{w}.") for w in written)


NO_EXIF_HELP = "use the pixels as stored, not turned upright as the EXIF orientation says"


def _add_predict_parser(sub) -> None:
    p = sub.add_parser(
        "predict", help="run trained weights on image files; write masks and overlays"
    )
    p.add_argument("images", nargs="+", help="image files or folders of images")
    p.add_argument("--weights", required=True, help="checkpoint written by 'pointrend train'")
    p.add_argument(
        "--config", help="YAML config of a checkpoint that holds none (else the checkpoint's wins)"
    )
    _add_set_option(p, "model.options.mask_output_size=112")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--score-thresh",
        type=float,
        default=0.5,
        help="instances: keep detections scoring at least this (default 0.5)",
    )
    p.add_argument("--no-exif-orientation", action="store_true", help=NO_EXIF_HELP)
    _add_overwrite_option(p, "the files of an earlier predict run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_device_options(p)
    _add_threads_option(p)
    p.set_defaults(func=_run_predict)


def _run_predict(args) -> int:
    from .engine.inference import list_images, load_trained_model, predict_images

    _set_threads(args)
    if not 0 <= args.score_thresh <= 1:  # nan fails both
        raise ValueError(f"--score-thresh must be in [0, 1], got {args.score_thresh}")
    trained = load_trained_model(args.weights, args.config, args.set, device=args.device)
    device, amp = device_and_amp(args, trained.device)
    _report_model_config(trained, args)
    paths = list_images(args.images)
    if not paths:
        raise FileNotFoundError(f"no images found in {' '.join(args.images)}")
    if trained.task == "instance" and not trained.label_to_category_id:
        print(
            f"pointrend predict: note: {args.weights} records no label -> category id map; "
            f"category_id in predictions.json is the model's label (1..{trained.num_classes - 1})",
            file=sys.stderr,
        )
    say_where(args, device, amp)
    with autocast(device, amp):
        exif = not args.no_exif_orientation
        rows, failures = predict_images(
            trained, paths, args.out, args.score_thresh, not args.no_progress, args.overwrite, exif
        )
    if rows:
        print(format_table(rows))
    for path, error in failures:
        print(f"pointrend predict: skipped {path}: {error}", file=sys.stderr)
    print(f"{len(rows)} of {len(paths)} images written to {args.out}")
    return 1 if failures else 0


def _add_demo_parser(sub) -> None:
    p = sub.add_parser(
        "demo", help="the shipped models on fresh synthetic images: pictures and metrics"
    )
    p.add_argument("--out", default="outputs/demo", help="output folder (default outputs/demo)")
    p.add_argument("--image", help="also run the instance models on this image of yours")
    p.add_argument("--instance-images", type=int, default=12, help="fresh instance images")
    p.add_argument("--semantic-images", type=int, default=8, help="fresh semantic images")
    p.add_argument("--seed", type=int, help="seed of the fresh images (never a training seed)")
    p.add_argument("--weights-dir", help="folder of the four checkpoints (default: shipped)")
    p.add_argument("--mask-resolution", choices=("fixed", "box"), default="fixed", help=MASKS)
    add_device_options(p, amp=False)
    _add_threads_option(p, 1, ": on a small shared CPU more threads wait on each other")
    p.set_defaults(func=_run_demo)


def _run_demo(args) -> int:
    import torch

    from . import demo

    _set_threads(args)
    options = demo.DemoOptions(
        out=args.out,
        instance_images=args.instance_images,
        semantic_images=args.semantic_images,
        image=args.image,
        seed=demo.DEMO_SEED if args.seed is None else args.seed,
        weights_dir=args.weights_dir or demo.WEIGHTS_DIR,
        mask_resolution=args.mask_resolution,
        device=args.device,
    )
    metrics = demo.run_demo(options)
    print(demo.format_demo_table(metrics))
    written = sorted(p.name for p in Path(args.out).iterdir() if p.suffix in (".png", ".json"))
    print(f"wrote {', '.join(written)} to {args.out}")
    seconds = time.perf_counter() - STARTED_AT
    threads = torch.get_num_threads()
    print(f"demo took {seconds:.1f} s on {threads} thread(s) (after importing pointrend and torch)")
    return 0


def format_table(rows: list[dict]) -> str:
    """Rows of equal keys as a plain text table (the summaries the commands print)."""
    if not rows:
        return ""
    keys = list(rows[0])
    cells = [[str(r.get(k, "")) for k in keys] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(keys)]
    line = "  ".join(k.ljust(w) for k, w in zip(keys, widths))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join([line, rule, *body])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pointrend", description="PointRend: image segmentation as rendering."
    )
    parser.add_argument("--version", action="version", version=f"pointrend {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from .cli_convert import add_export_parser, add_import_detectron2_parser

    for add in (
        _add_train_parser,
        _add_eval_parser,
        _add_predict_parser,
        _add_data_parser,
        _add_demo_parser,
        add_export_parser,
        add_import_detectron2_parser,
    ):
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
        ValueError,
        OSError,
        ImportError,  # an optional package missing: the message says which
    ) as err:
        print(f"pointrend {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"pointrend {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        from .engine.distributed import cleanup_distributed

        cleanup_distributed()  # the process group eval / predict joined under torchrun


def _one_line(err: Exception) -> str:
    """An error as one line: an operating-system error as its reason and the path it names."""
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        line = f"{err.strerror}: {err.filename}"
        return line + (f" -> {err.filename2}" if err.filename2 is not None else "")
    text = " ".join(str(err).split()) or type(err).__name__
    return text
