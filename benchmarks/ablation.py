"""The paper's ablation of training point selection on the synthetic instance data: each
variant trained from the PointRend recipe for the same number of iterations: regular grid;
uniform (k = 1, beta = 0); mildly biased (k = 3, beta = 0.75, the default); heavily biased
(k = 10, beta = 1.0)."""

from __future__ import annotations

from pointrend.engine.inference import load_trained_model

from .accuracy import INSTANCE, ModelSource, train_model
from .scoring import instance_scores, validation_set

TRAINING_VARIANTS = {  # name: the model options it trains with
    "regular grid": {"train_point_sampling": "grid"},
    "uniform (k=1, beta=0)": {"oversample_ratio": 1, "importance_sample_ratio": 0.0},
    "mildly biased (k=3, beta=0.75)": {"oversample_ratio": 3, "importance_sample_ratio": 0.75},
    "heavily biased (k=10, beta=1.0)": {"oversample_ratio": 10, "importance_sample_ratio": 1.0},
}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.split(" (")[0]).strip("_")


def training_ablation(
    source: ModelSource, num_images: int, image_size: int | None = None, folds: int = 4
) -> dict:
    """Train every point-selection variant for ``source.train_iters`` iterations (``None``: the
    recipe's own schedule); evaluate each at 224 x 224."""
    rows = {}
    val = size = solver = None
    for name, options in TRAINING_VARIANTS.items():
        overrides = [f"model.options.{k}={v}" for k, v in options.items()]
        path = train_model(INSTANCE["pointrend"], source, f"ablation_{_slug(name)}", overrides)
        loaded = load_trained_model(path)
        solver = loaded.config.solver
        if val is None:
            size = image_size or loaded.config.train_data.image_size
            val = validation_set(num_images, size, folds)
        row = rows[name] = instance_scores(loaded.model.eval(), val)
        row |= {"options": options, "iteration": loaded.iteration, "weights": str(path)}
        source.log(f"  {name:<32} mask AP {row['mask_AP']:5.1f}")
    schedule = {"max_iter": solver.max_iter, "warmup_iters": solver.warmup_iters}
    schedule.update({"steps": list(solver.steps), "lr": solver.lr, "schedule": solver.schedule})
    result = {"train_iters": solver.max_iter, "schedule": schedule, "val_images": num_images}
    return result | {"image_size": size, "rows": rows}
