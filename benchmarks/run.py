"""``python -m benchmarks``: measure the asked sections, keep the others' figures, write the report.

Sections: ``cost`` (instance mask branch per box and against output size, end to end),
``semantic`` (whole models at full resolution, and their refinement alone), ``accuracy``
(instances at equal training budget, and by evaluation resolution) and ``ablation``
(its part ``ablation.training``: training point selection, trained here). Sections not asked for
keep their figures from ``results.json`` in the output folder (of the same mode), and so do the
stand-alone modules' keys.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from pointrend.demo import WEIGHTS_DIR

from . import accuracy, cost, semantic
from .ablation import training_ablation
from .common import log, machine_info, read_json
from .report import write_report

SECTIONS = ("cost", "semantic", "accuracy", "ablation")
PARTS = ("cost", "semantic", "accuracy", "ablation.training")
RESULTS, QUICK_RESULTS = "benchmarks/results", "outputs/bench-quick"
# what Boundary AP / IoU meant when a section was measured (recorded with its figures)
BOUNDARY_DEFINITION = "published: zero-padded before the erosions, the image border is a contour"


def bench_sizes(args: argparse.Namespace) -> dict:
    """How big each measurement is: the paper's sizes, or tiny ones with ``--quick``."""
    q = args.quick
    return {
        "train_iters": args.train_iters or (2 if q else None),  # None: the recipes' own
        "val_images": args.val_images or (2 if q else 100),
        "repeats": args.repeats or (3 if q else 5),
        "folds": 2 if q else 4,
        "cost_image": [200, 336] if q else [800, 1333],
        "cost_sizes": [28, 56, 112] if q else [28, 56, 112, 224, 448],
        "cost_boxes": 8 if q else 100,
        "dense_boxes": {56: 2, 112: 1} if q else {224: 4, 448: 1},
        "table_boxes": 1 if q else 4,
        "end_to_end": not q,
        "semantic_image": [64, 96] if q else [1024, 2048],
        "semantic_points": 1000 if q else 8192,
        "semantic_backbone": "resnet18" if q else "resnet50",
    }


def _cost(s: dict, source: accuracy.ModelSource) -> dict:
    e2e = max(3, s["repeats"] - 2) if s["end_to_end"] else None
    sizes, boxes = s["cost_sizes"], s["cost_boxes"]
    return cost.measure(
        s["cost_image"], sizes, s["repeats"], boxes, s["dense_boxes"], s["table_boxes"], e2e, log
    )


def _semantic(s: dict, source: accuracy.ModelSource) -> dict:
    (h, w), repeats = s["semantic_image"], max(2, s["repeats"] - 2)
    log(f"semantic: whole models at {h} x {w}")
    points, backbone = s["semantic_points"], s["semantic_backbone"]
    return {"full_models": semantic.semantic_model_costs(h, w, 19, repeats, backbone, points, log)}


def _accuracy(s: dict, source: accuracy.ModelSource) -> dict:
    log("accuracy: instances at equal training budget, and by evaluation resolution")
    return {"instance": accuracy.instance_accuracy(source, s["val_images"], s["folds"])}


def _training_ablation(s: dict, source: accuracy.ModelSource) -> dict:
    log(f"ablation: training point selection, {source.train_iters or 'the recipe'} iterations")
    return training_ablation(source, s["val_images"], None, s["folds"])


RUNNERS = {"cost": _cost, "semantic": _semantic, "accuracy": _accuracy}
RUNNERS["ablation.training"] = _training_ablation


def _parts(sections) -> list[str]:
    """``--sections`` names -> the parts to measure (``ablation``: all its parts)."""
    known, unknown = SECTIONS + PARTS, [n for n in sections if n not in SECTIONS + PARTS]
    if unknown:
        raise ValueError(f"unknown bench section {unknown[0]!r}; known: {', '.join(known)}")
    return [p for p in PARTS if p in sections or p.split(".")[0] in sections]


def _merge_and_write(out: Path, quick: bool, settings: dict, measured: dict) -> dict:
    """Overlay this run's parts on the results already in ``out`` (same mode), write it all.
    Under a lock, reading the file just before writing: bench runs measuring different
    sections at the same time keep each other's."""
    with open(out / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = read_json(out / "results.json")
        same_mode = old.get("settings", {}).get("quick") == quick
        sections = old.get("sections", {}) if same_mode else {}
        for part, figures in measured.items():
            section, _, sub = part.partition(".")
            sections[section] = sections.get(section, {}) | {sub: figures} if sub else figures
        results = {**old, "machine": machine_info(), "settings": settings, "sections": sections}
        write_report(results, out)
    return results


def run_bench(args: argparse.Namespace, parts: list[str], command: str) -> dict:
    """Measure ``parts``; write ``results.json``, the plot and ``REPORT.md`` into ``args.out``."""
    sizes, out = bench_sizes(args), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    measured = {}
    with contextlib.ExitStack() as stack:
        work = args.work_dir or stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-"))
        weights = Path(args.weights_dir or WEIGHTS_DIR)
        source = accuracy.ModelSource(weights, Path(work), sizes["train_iters"], args.quick, log)
        for part in parts:
            started, load = time.perf_counter(), os.getloadavg()[0]
            figures = RUNNERS[part](sizes, source)
            figures["measured"] = {
                "at": datetime.datetime.now().isoformat(timespec="seconds"),
                "seconds": round(time.perf_counter() - started, 1),
                "load_average_at_start": load,
                "load_average_at_end": os.getloadavg()[0],
                "command": command,
                "machine": machine_info(),
                "boundary_definition": BOUNDARY_DEFINITION,
            }
            measured[part] = figures
    settings = {"quick": args.quick, **sizes, "command": command}
    return _merge_and_write(out, args.quick, settings, measured)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes: proves the pipeline (minutes)")
    p.add_argument("--out", help=f"report folder (default {RESULTS}; with --quick {QUICK_RESULTS})")
    p.add_argument("--weights-dir", help="checkpoints to evaluate (default: the shipped weights)")
    p.add_argument("--work-dir", help="where models trained by the bench go (default: a temp dir)")
    p.add_argument("--train-iters", type=int, help="iterations of each model trained here")
    p.add_argument("--val-images", type=int, help="fresh validation images (default 100)")
    p.add_argument("--repeats", type=int, help="timing repeats (median; default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated subset")
    args = p.parse_args(argv)
    args.out = args.out or (QUICK_RESULTS if args.quick else RESULTS)
    argv = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m benchmarks", *argv])
    torch.set_num_threads(args.threads)
    try:
        run_bench(args, _parts([s.strip() for s in args.sections.split(",") if s.strip()]), command)
    except (FileNotFoundError, ValueError) as err:  # bad section, missing config (ConfigError)
        print(f"python -m benchmarks: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote REPORT.md, results.json and the plot to {args.out}")
    return 0
