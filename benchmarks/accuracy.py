"""Instance accuracy at equal training budget on the synthetic data (the CPU recipes).

torchvision's Mask R-CNN (28x28 masks) vs the SAME PointRend weights rendered at each of
:data:`MASK_SIZES` and per box, with oracle rows (the ground truth resampled to M x M in its box
and pasted back: what a resolution alone can hold), the same detections pasted at 1x, 2x and 4x
the input size and scored against ground truth rendered exactly there (rows :data:`ROWS`).

Models come from ``<weights_dir>/<config>.pt`` (or ``<weights_dir>/<config>/model_final.pt``,
else its latest checkpoint); a missing one is trained here from ``configs/<config>.yaml``.
Evaluation is on fresh synthetic images (their own seed), in folds for standard errors.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from pointrend.demo import WEIGHTS_DIR
from pointrend.engine.checkpoint import latest_checkpoint
from pointrend.engine.config import load_config
from pointrend.engine.inference import load_trained_model
from pointrend.engine.train import train

from . import scoring

INSTANCE = {
    "pointrend": "synthetic_instance_pointrend_r18",
    "maskrcnn": "synthetic_instance_maskrcnn_r18",
}
QUICK_SIZE = 64  # image side of the models trained in --quick mode
FACTORS = (1, 2, 4)  # evaluation size / model input size
MASK_SIZES = (28, 56, 112, 224)
ROWS = [*(f"oracle{m}" for m in MASK_SIZES), "maskrcnn", *(f"pointrend{m}" for m in MASK_SIZES)]
ROWS.append("pointrend_box")
ROW_NAMES = {  # the rows of the accuracy table at the models' input size
    "Mask R-CNN 4x conv, 28x28": "maskrcnn",
    "PointRend, 28x28": "pointrend28",
    "PointRend, 224x224": "pointrend224",
    "oracle: ground truth at 28x28": "oracle28",
    "oracle: ground truth at 224x224": "oracle224",
}


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
    model: nn.Module
    image_size: int  # of its training images
    facts: dict  # weights, iteration, trained_in_this_run, train_image_size


def find_config(name: str) -> Path:
    """``configs/<name>.yaml`` of the working directory or of the source checkout."""
    for root in [Path.cwd(), *Path(__file__).resolve().parents]:
        if (root / "configs" / f"{name}.yaml").is_file():
            return root / "configs" / f"{name}.yaml"
    raise FileNotFoundError(f"no checkpoint for {name} and no configs/{name}.yaml to train it from")


def train_model(
    name: str, source: ModelSource, run: str, overrides: list[str] | None = None
) -> Path:
    """Train ``configs/<name>.yaml`` for ``source.train_iters`` iterations (the recipe's schedule
    stretched: warm-up and LR steps move in proportion) into ``<work_dir>/<run>``; the final
    weights. Reuses a finished run and resumes an interrupted one."""
    out = source.work_dir / run
    if (out / "model_final.pt").is_file():
        return out / "model_final.pt"
    path = find_config(name)
    recipe = load_config(path)
    solver = recipe.solver
    iters = source.train_iters or solver.max_iter
    scale = iters / solver.max_iter
    steps = ", ".join(str(max(1, round(s * scale))) for s in solver.steps)
    extra = [f"solver.max_iter={iters}", f"solver.steps=[{steps}]"]
    extra += [f"solver.warmup_iters={max(1, round(solver.warmup_iters * scale))}"]
    if source.quick:
        extra += [f"train_data.image_size={QUICK_SIZE}", "train_data.num_images=8", "log_period=1"]
        extra += [f"model.options.{k}={QUICK_SIZE}" for k in ("min_size", "max_size")]
        extra += ["model.options.box_detections_per_img=5"]  # the quick evaluations stay short
    extra += ["val_data=null", "checkpoint_period=100", f"output_dir={out}", *(overrides or [])]
    source.log(f"  training {run} for {iters} iterations ({path})")
    started = time.perf_counter()
    resume = latest_checkpoint(out) is not None  # continue a run the bench left
    train(load_config(path, extra), resume=resume, overwrite=not resume, progress=False)
    source.log(f"  trained {run} in {time.perf_counter() - started:.0f} s")
    return out / "model_final.pt"


def obtain_model(name: str, source: ModelSource) -> TrainedModel:
    """The checkpoint of config ``name`` from ``source.weights_dir``, or one trained here."""
    folder = Path(source.weights_dir)
    found = [p for p in (folder / f"{name}.pt", folder / name / "model_final.pt") if p.is_file()]
    path = found[0] if found else latest_checkpoint(folder / name)
    trained_here = path is None
    path = (train_model(name, source, name) if trained_here else path).resolve()
    loaded = load_trained_model(path)
    size = loaded.config.train_data.image_size
    facts = {"weights": str(path), "iteration": loaded.iteration}
    facts |= {"trained_in_this_run": trained_here, "train_image_size": size}
    return TrainedModel(loaded.model.eval(), size, facts)


def shipped_model(name: str, log=print) -> TrainedModel:
    """Config ``name``'s shipped checkpoint, or one trained in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="pointrend-bench-") as work:
        return obtain_model(name, ModelSource(WEIGHTS_DIR, Path(work), None, log=log))


def _model_rows(model, vals: dict[int, scoring.ValSet]) -> dict[int, dict]:
    """``{size: scores}`` of one model's predictions, made once, pasted at every size."""
    results = scoring.predict_at_sizes(model, vals[min(vals)].dataset, sorted(vals))
    return {size: scoring.score_results(vals[size], results[size]) for size in vals}


def by_resolution(pointrend, baseline, vals: dict[int, scoring.ValSet], log=print) -> dict:
    """Every row of :data:`ROWS` at every evaluation size (``vals``: the validation set with
    its ground truth rendered at each size): ``{"sizes", "rows": {size: {row: scores}}, ...}``."""
    rows: dict[int, dict] = {size: {} for size in vals}
    for size in vals:
        rows[size] |= {f"oracle{m}": scoring.oracle_scores(vals[size], m) for m in MASK_SIZES}
    for size, scores in _model_rows(baseline, vals).items():
        rows[size]["maskrcnn"] = scores
    settings = {f"pointrend{m}": {"output_size": m} for m in MASK_SIZES}
    for name, changes in (settings | {"pointrend_box": {"mask_resolution": "box"}}).items():
        with scoring.mask_settings(pointrend, **changes):
            for size, scores in _model_rows(pointrend, vals).items():
                rows[size][name] = scores
    for size in sorted(vals):
        log(
            f"  Boundary AP at {size} px: "
            + ", ".join(f"{k} {rows[size][k]['boundary_AP']:.1f}" for k in ROWS)
        )
    base = vals[min(vals)]
    return {
        "sizes": sorted(vals),
        "model_input_size": base.image_size,
        "val_images": len(base.dataset),
        "folds": len(base.folds),
        "rows": {str(size): {k: rows[size][k] for k in ROWS} for size in sorted(vals)},
    }


def instance_accuracy(source: ModelSource, num_images: int, folds: int = 4) -> dict:
    """Mask R-CNN vs the same PointRend weights at 28 and 224, the oracles, and all by
    evaluation resolution."""
    pointrend = obtain_model(INSTANCE["pointrend"], source)
    baseline = obtain_model(INSTANCE["maskrcnn"], source)
    base = pointrend.image_size
    vals = {
        base * f: scoring.validation_set(num_images, base, folds, base * f) for f in FACTORS[1:]
    }
    val = scoring.validation_set(num_images, base, folds)
    table = by_resolution(pointrend.model, baseline.model, {base: val} | vals, source.log)
    rows = {label: table["rows"][str(base)][row] for label, row in ROW_NAMES.items()}
    config = pointrend.model.roi_heads.mask_branch.config
    return {
        "val_images": num_images,
        "val_seed": scoring.VAL_SEED,
        "folds": len(val.folds),
        "image_size": base,
        "models": {"pointrend": pointrend.facts, "maskrcnn": baseline.facts},
        "pointrend_settings": {"subdivision_num_points": config.pointrend.subdivision_num_points},
        "rows": rows,
        "by_resolution": table,
    }
