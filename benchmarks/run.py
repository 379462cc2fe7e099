"""``python -m benchmarks``: run the sections, keep the figures of the others, write the report.

Sections: ``cost`` (instance mask branch per box and vs output resolution, end to end),
``semantic`` (full-resolution semantic cost: the refinement alone, then the full models with and
without PointRend), ``accuracy`` (instance and semantic accuracy at
equal training budget), ``ablation`` (inference settings on the same weights; training point
selection, trained here; its two parts can be asked for alone as ``ablation.inference`` and
``ablation.training``), ``learning`` (PointRend vs Mask R-CNN masks learned from scratch on a tiny
problem: Boundary IoU). Sections not asked for keep their figures from an earlier
``results.json`` in the output folder (of the same mode), so one section can be re-measured
without the others.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pointrend.demo import WEIGHTS_DIR

from . import cost, semantic
from .ablation import inference_ablation, training_ablation
from .accuracy import INSTANCE, ModelSource, instance_accuracy, obtain_model, semantic_accuracy
from .common import machine_info, read_json
from .learning import boundary_learning
from .report import write_report
from .resolution import resolution_table

__all__ = ["SECTIONS", "BenchOptions", "default_weights_dir", "run_bench"]

SECTIONS = ("cost", "semantic", "accuracy", "ablation", "learning")
PARTS = ("ablation.inference", "ablation.training")  # may be measured apart
# what Boundary AP / IoU meant when a section was measured (recorded with its figures)
BOUNDARY_DEFINITION = "published: zero-padded before the erosions, the image border is a contour"


def default_weights_dir() -> Path:
    """The weights shipped with the package (``pointrend/weights``)."""
    return WEIGHTS_DIR


@dataclass
class BenchOptions:
    """What to run and how big. ``None`` sizes take the mode's default (:meth:`sizes`)."""

    out: Path = Path("benchmarks/results")
    quick: bool = False
    weights_dir: Path = field(default_factory=default_weights_dir)
    work_dir: Path | None = None
    train_iters: int | None = None
    sections: tuple[str, ...] = SECTIONS
    val_images: int | None = None
    repeats: int | None = None
    command: str = "python -m benchmarks"

    def sizes(self) -> dict:
        quick = self.quick
        return {
            # None: the recipes' own iterations (the shipped models' training budget)
            "train_iters": self.train_iters or (2 if quick else None),
            "val_images": self.val_images or (2 if quick else 100),
            "repeats": self.repeats or (3 if quick else 5),
            "timing_images": 2 if quick else 8,
            "folds": 2 if quick else 4,
            "ablation_sizes": [28, 224] if quick else [28, 56, 112, 224],
            "ablation_points": [14, 56] if quick else [14, 28, 56, 112],
            "cost_image": [200, 336] if quick else [800, 1333],
            "cost_sizes": [28, 56, 112] if quick else [28, 56, 112, 224, 448],
            "cost_boxes": 8 if quick else 100,
            "dense_boxes": {56: 2, 112: 1} if quick else {224: 4, 448: 1},
            "memory_boxes": 2 if quick else 4,
            "table_boxes": 1 if quick else 4,
            "end_to_end": not quick,
            "semantic_image": [128, 256] if quick else [1024, 2048],
            "semantic_points": 2048 if quick else 8192,
            "semantic_models_image": [64, 96] if quick else [1024, 2048],
            "semantic_models_points": 1000 if quick else 8192,
            "semantic_models_backbone": "resnet18" if quick else "resnet50",
            "learning_steps": 2 if quick else 40,
            "learning_size": 64 if quick else 128,
        }


def _log(*parts) -> None:
    print(*parts, flush=True)


def _cost(sizes: dict) -> dict:
    h, w = sizes["cost_image"]
    torch.manual_seed(0)
    # P2 of the padded image (a multiple of 32), stride 4
    features = torch.randn(1, cost.CHANNELS, -(-h // 32) * 8, -(-w // 32) * 8)
    _log(f"cost: per box (K = {cost.K}), on a {h} x {w} image")
    per_box = cost.head_costs(features, (h, w), n=sizes["table_boxes"])
    _log(f"cost: mask branch on {sizes['cost_boxes']} boxes, output {sizes['cost_sizes']}")
    times = cost.branch_times(
        features,
        (h, w),
        sizes["cost_sizes"],
        sizes["repeats"],
        boxes_total=sizes["cost_boxes"],
        dense_boxes=sizes["dense_boxes"],
        log=_log,
    )
    costs = cost.sweep_costs(features, (h, w), sizes["cost_sizes"], sizes["memory_boxes"])
    rows = {size: {**times[size], **costs[size]} for size in times}
    result = {
        "image": [h, w],
        "num_classes": cost.K,
        "boxes": sizes["cost_boxes"],
        "repeats": sizes["repeats"],
        "per_box": per_box,
        "sweep": rows,
    }
    if sizes["end_to_end"]:
        _log("cost: end to end, ResNet-50-FPN, 800 x 1333, 100 boxes")
        result["end_to_end"] = cost.end_to_end(max(3, sizes["repeats"] - 2), log=_log)
    return result


def _semantic_cost(sizes: dict) -> dict:
    h, w = sizes["semantic_image"]
    _log(f"semantic cost: {h} x {w}, K = 19, {sizes['semantic_points']} points a step")
    result = semantic.semantic_costs(
        h, w, 19, sizes["semantic_points"], repeats=max(2, sizes["repeats"] - 2), log=_log
    )
    h, w = sizes["semantic_models_image"]
    backbone = sizes["semantic_models_backbone"]
    _log(f"semantic cost: full models (a)-(e), {backbone}, {h} x {w}, K = 19")
    result["full_models"] = semantic.semantic_model_costs(
        h,
        w,
        19,
        repeats=max(2, sizes["repeats"] - 2),
        backbone=backbone,
        num_points=sizes["semantic_models_points"],
        log=_log,
    )
    return result


def _accuracy(source: ModelSource, sizes: dict) -> dict:
    _log("accuracy: instances (equal training budget)")
    instance, _ = instance_accuracy(source, sizes["val_images"], sizes["folds"])
    _log("accuracy: semantic (equal training budget)")
    semantic = semantic_accuracy(source, sizes["val_images"], sizes["folds"])
    return {"instance": instance, "semantic": semantic}


def _inference_ablation(source: ModelSource, sizes: dict) -> dict:
    _log("ablation: inference settings on the same PointRend weights")
    pointrend = obtain_model(INSTANCE["pointrend"], source)
    inference = inference_ablation(
        pointrend,
        sizes["val_images"],
        sizes["timing_images"],
        sizes["repeats"],
        sizes["ablation_sizes"],
        sizes["ablation_points"],
        sizes["folds"],
        log=_log,
    )
    inference["model"] = {"weights": pointrend.weights, "iteration": pointrend.iteration}
    return inference


def _training_ablation(source: ModelSource, sizes: dict) -> dict:
    iters = source.train_iters or "the recipe's"
    _log(f"ablation: training point selection, {iters} iterations each")
    return training_ablation(source, sizes["val_images"], None, sizes["folds"])


def _learning(sizes: dict) -> dict:
    steps, size = sizes["learning_steps"], sizes["learning_size"]
    _log(f"learning: PointRend vs Mask R-CNN from scratch, {steps} steps at {size} x {size}")
    return boundary_learning(steps, size, log=_log)


def _parts(sections) -> list[str]:
    """``--sections`` names -> the parts to measure (``ablation`` is both of its parts)."""
    parts = []
    for name in sections:
        if name not in SECTIONS + PARTS:
            known = ", ".join(SECTIONS + PARTS)
            raise ValueError(f"unknown bench section {name!r}; known: {known}")
        parts += [p for p in PARTS if p == name or p.startswith(name + ".")]
        parts += [name] if name in SECTIONS and name != "ablation" else []
    return [p for p in ("cost", "semantic", "accuracy", *PARTS, "learning") if p in parts]


def _merge_and_write(out: Path, options: BenchOptions, sizes: dict, measured: dict) -> dict:
    """Overlay this run's parts on the results already in ``out`` (same mode; the stand-alone
    modules' keys kept), write it all. Under a lock, reading the file just before writing:
    bench runs measuring different sections at the same time keep each other's."""
    with open(out / ".results.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        old = read_json(out / "results.json")
        same_mode = old.get("settings", {}).get("quick") == options.quick
        sections = old.get("sections", {}) if same_mode else {}
        for part, figures in measured.items():
            if "." in part:
                section, sub = part.split(".")
                sections.setdefault(section, {})[sub] = figures
            else:
                sections[part] = figures
        results = {
            **old,
            "machine": machine_info(),
            "settings": {"quick": options.quick, **sizes, "command": options.command},
            "sections": sections,
        }
        by_resolution = sections.get("accuracy", {}).get("instance", {}).get("by_resolution")
        if by_resolution:  # the table a script reads, at the top level
            results["accuracy_by_resolution"] = resolution_table(by_resolution)
        write_report(results, out)
    return results


def run_bench(options: BenchOptions) -> dict:
    """Run the asked sections, write ``results.json``, the plots and ``REPORT.md``."""
    parts = _parts(options.sections)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = options.sizes()
    with contextlib.ExitStack() as stack:
        work = options.work_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="pointrend-bench-"))
        )
        source = ModelSource(
            Path(options.weights_dir), Path(work), sizes["train_iters"], options.quick, _log
        )
        measured = _measure(options, sizes, parts, source)
    return _merge_and_write(out, options, sizes, measured)


def _measure(options: BenchOptions, sizes: dict, parts: list, source: ModelSource) -> dict:
    """Run each asked section; its figures with when, how long and under what load."""
    runners = {
        "cost": functools.partial(_cost, sizes),
        "semantic": functools.partial(_semantic_cost, sizes),
        "accuracy": functools.partial(_accuracy, source, sizes),
        "ablation.inference": functools.partial(_inference_ablation, source, sizes),
        "ablation.training": functools.partial(_training_ablation, source, sizes),
        "learning": functools.partial(_learning, sizes),
    }
    measured = {}
    for part in parts:
        started, load = time.perf_counter(), os.getloadavg()[0]
        figures = runners[part]()
        figures["measured"] = {
            "at": datetime.datetime.now().isoformat(timespec="seconds"),
            "seconds": round(time.perf_counter() - started, 1),
            "load_average_at_start": load,
            "load_average_at_end": os.getloadavg()[0],
            "command": options.command,
            "machine": machine_info(),
            "boundary_definition": BOUNDARY_DEFINITION,
        }
        measured[part] = figures
    return measured
