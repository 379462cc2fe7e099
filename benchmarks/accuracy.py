"""Accuracy at equal training budget on the synthetic high-resolution data (the CPU recipes).

* Instances (section 2 of the report): torchvision's Mask R-CNN (4x conv head, 28x28 masks) vs
  PointRend rendered at 28x28 vs PointRend at 224x224. The two PointRend rows are the SAME
  weights; only the rendering settings change at inference. An oracle row (the ground-truth
  masks resampled to M x M in their box and pasted back) shows how much a resolution alone can
  hold on this data. The same predictions are also scored against exact ground truth at 2x and
  4x the input size, with oracle rows for 28 .. 224 (:mod:`.resolution`).
* Semantic (section 4): the coarse Semantic FPN upsampled vs the same recipe + PointRend.

Models come from checkpoints (``<weights_dir>/<config name>.pt``, or a training output folder
``<weights_dir>/<config name>/model_final.pt``, else its latest ``model_*.pt``). A missing one is
trained here from its config (``configs/<config name>.yaml``) for the number of iterations
given, and the report says so. Evaluation is on a fresh synthetic validation set (its own seed,
never used for training or the recipes' validation).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from pointrend.demo import WEIGHTS_DIR
from pointrend.engine.checkpoint import latest_checkpoint
from pointrend.engine.config import SolverConfig, load_config
from pointrend.engine.inference import load_trained_model
from pointrend.engine.train import train

from .resolution import FACTORS, by_resolution
from .scoring import (
    VAL_SEED,
    instance_scores,
    mask_settings,
    oracle_scores,
    semantic_scores,
    validation_set,
)

__all__ = [
    "INSTANCE",
    "SEMANTIC",
    "ModelSource",
    "TrainedModel",
    "find_weights",
    "find_config",
    "schedule_overrides",
    "obtain_model",
    "instance_accuracy",
    "semantic_accuracy",
]

INSTANCE = {
    "pointrend": "synthetic_instance_pointrend_r18",
    "maskrcnn": "synthetic_instance_maskrcnn_r18",
}
SEMANTIC = {
    "pointrend": "synthetic_semantic_pointrend_fpn_r18",
    "coarse": "synthetic_semantic_coarse_fpn_r18",
}
QUICK_SIZE = 64  # image side of the models trained in --quick mode


@dataclass
class ModelSource:
    """Where the bench's models come from, and where it may train what is missing."""

    weights_dir: Path
    work_dir: Path
    train_iters: int | None  # None: each recipe's own number of iterations
    quick: bool = False
    log: object = print


@dataclass
class TrainedModel:
    name: str
    model: nn.Module
    image_size: int
    weights: str
    iteration: int | None
    trained_here: bool


def find_weights(weights_dir: Path, name: str) -> Path | None:
    """``<dir>/<name>.pt``, else ``<dir>/<name>/model_final.pt``, else its latest checkpoint."""
    weights_dir = Path(weights_dir)
    for path in (weights_dir / f"{name}.pt", weights_dir / name / "model_final.pt"):
        if path.is_file():
            return path
    return latest_checkpoint(weights_dir / name)


def find_config(name: str) -> Path:
    """``configs/<name>.yaml`` of the working directory or of the source checkout."""
    roots = [Path.cwd(), *Path(__file__).resolve().parents]
    for root in roots:
        path = root / "configs" / f"{name}.yaml"
        if path.is_file():
            return path
    raise FileNotFoundError(
        f"no checkpoint for {name} and no configs/{name}.yaml to train it from (run from the "
        "repository, or give --weights-dir)"
    )


def schedule_overrides(solver: SolverConfig, iters: int | None) -> list[str]:
    """The recipe's schedule stretched to ``iters`` iterations (``None``: the recipe's own).

    Warm-up and LR steps move in proportion, so ``iters = solver.max_iter`` is the recipe.
    """
    iters = iters or solver.max_iter
    scale = iters / solver.max_iter
    steps = ", ".join(str(max(1, round(s * scale))) for s in solver.steps)
    return [
        f"solver.max_iter={iters}",
        f"solver.warmup_iters={max(1, round(solver.warmup_iters * scale))}",
        f"solver.steps=[{steps}]",
    ]


def _quick_overrides(task: str) -> list[str]:
    size = QUICK_SIZE
    common = [f"train_data.image_size={size}", "train_data.num_images=8", "log_period=1"]
    if task == "instance":  # few detections: the quick evaluations stay short
        common += [f"model.options.min_size={size}", f"model.options.max_size={size}"]
        common += ["model.options.box_detections_per_img=5"]
    return common


def train_model(
    name: str, source: ModelSource, run_name: str, overrides: list[str] | None = None
) -> Path:
    """Train ``configs/<name>.yaml`` for ``source.train_iters`` iterations; the final weights.

    Reuses ``<work_dir>/<run_name>/model_final.pt`` when it exists (regenerating a report does
    not retrain) and resumes an interrupted run.
    """
    out = source.work_dir / run_name
    final = out / "model_final.pt"
    if final.is_file():
        source.log(f"  reusing {final}")
        return final
    path = find_config(name)
    recipe = load_config(path)
    extra = _quick_overrides(recipe.model.task) if source.quick else []
    cfg = load_config(
        path,
        [
            *extra,
            *schedule_overrides(recipe.solver, source.train_iters),
            "val_data=null",
            "checkpoint_period=100",
            f"output_dir={out}",
            *(overrides or []),
        ],
    )
    source.log(f"  training {run_name} for {cfg.solver.max_iter} iterations ({path})")
    started = time.perf_counter()
    # The bench's own work folder: continue a run it left, or clear one killed before its
    # first checkpoint (only config.yaml / metrics.jsonl there).
    resume = latest_checkpoint(out) is not None
    train(cfg, resume=resume, overwrite=not resume, progress=False)
    source.log(f"  trained {run_name} in {time.perf_counter() - started:.0f} s")
    return final


def obtain_model(name: str, source: ModelSource) -> TrainedModel:
    """The checkpoint of config ``name`` from ``source.weights_dir``, or one trained here."""
    path = find_weights(source.weights_dir, name)
    trained_here = path is None
    if path is None:
        path = train_model(name, source, name)
    path = path.resolve()  # name the file itself, not a link to it
    loaded = load_trained_model(path)
    data = loaded.config.train_data
    return TrainedModel(
        name, loaded.model.eval(), data.image_size, str(path), loaded.iteration, trained_here
    )


def shipped_model(name: str, log=print) -> TrainedModel:
    """Config ``name``'s shipped checkpoint, or one trained in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="pointrend-bench-") as work:
        return obtain_model(name, ModelSource(WEIGHTS_DIR, Path(work), None, log=log))


def _describe(m: TrainedModel) -> dict:
    return {
        "weights": m.weights,
        "iteration": m.iteration,
        "trained_in_this_run": m.trained_here,
        "train_image_size": m.image_size,
    }


def instance_accuracy(
    source: ModelSource, num_images: int, folds: int = 4
) -> tuple[dict, TrainedModel]:
    """Section 2. Returns the results and the PointRend model (the inference ablation's)."""
    pointrend = obtain_model(INSTANCE["pointrend"], source)
    baseline = obtain_model(INSTANCE["maskrcnn"], source)
    val = validation_set("instance", num_images, pointrend.image_size, folds)
    rows = {}
    source.log(f"  evaluating on {num_images} fresh images of {pointrend.image_size} px")
    rows["Mask R-CNN 4x conv, 28x28"] = instance_scores(baseline.model, val)
    for size in (28, 224):
        with mask_settings(pointrend.model, output_size=size):
            rows[f"PointRend, {size}x{size}"] = instance_scores(pointrend.model, val)
    for size in (28, 224):
        rows[f"oracle: ground truth at {size}x{size}"] = oracle_scores(val, size)
    for name, row in rows.items():
        source.log(
            f"  {name:<34} mask AP {row['mask_AP']:5.1f}  AP75 {row['mask_AP75']:5.1f}  "
            f"Boundary AP {row['boundary_AP']:5.1f}"
        )
    base = pointrend.image_size
    source.log(f"  evaluating at {[base * f for f in FACTORS]} px (exact ground truth)")
    vals = {
        base * f: validation_set("instance", num_images, base, folds, base * f) for f in FACTORS[1:]
    }
    vals[base] = val
    resolution = by_resolution(pointrend.model, baseline.model, vals, log=source.log)
    config = pointrend.model.roi_heads.mask_branch.config
    result = {
        "val_images": num_images,
        "val_seed": VAL_SEED,
        "folds": len(val.folds),
        "image_size": pointrend.image_size,
        "models": {"pointrend": _describe(pointrend), "maskrcnn": _describe(baseline)},
        "pointrend_settings": {"subdivision_num_points": config.pointrend.subdivision_num_points},
        "rows": rows,
        "by_resolution": resolution,
    }
    return result, pointrend


def semantic_accuracy(source: ModelSource, num_images: int, folds: int = 4) -> dict:
    """Section 4: coarse Semantic FPN upsampled vs + PointRend, mIoU and boundary F (percent)."""
    models = {key: obtain_model(name, source) for key, name in SEMANTIC.items()}
    size = models["pointrend"].image_size
    val = validation_set("semantic", num_images, size, folds)
    rows = {}
    labels = {"coarse": "Semantic FPN, coarse upsampled", "pointrend": "Semantic FPN + PointRend"}
    for key in ("coarse", "pointrend"):
        row = rows[labels[key]] = semantic_scores(models[key].model, val)
        source.log(
            f"  {labels[key]:<32} mIoU {row['mIoU']:5.1f}  boundary F {row['boundary_F']:5.1f}"
        )
    return {
        "val_images": num_images,
        "val_seed": VAL_SEED,
        "folds": len(val.folds),
        "image_size": size,
        "coarse_stride": getattr(models["pointrend"].model, "coarse_stride", None),
        "models": {key: _describe(m) for key, m in models.items()},
        "rows": rows,
    }
