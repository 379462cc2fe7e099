"""The paper's ablations on the synthetic instance data.

* Inference, on the SAME weights: the output size (28 ... 224, 28 x 28 points a step) and the
  points per step (14^2 ... 112^2, output 224): accuracy, the mask branch's time on the
  ground-truth boxes of some validation images (alternated), point predictions and
  multiply-adds per box.
* Training point selection, each variant trained from the PointRend recipe for the same number
  of iterations: regular grid; uniform (k = 1, beta = 0); mildly biased (k = 3, beta = 0.75,
  the default); heavily biased (k = 10, beta = 1.0).
"""

from __future__ import annotations

import statistics

import torch
from torch import nn

from pointrend.engine.inference import load_trained_model

from .accuracy import INSTANCE, ModelSource, TrainedModel, train_model
from .common import PointCounter, alternate, count_call
from .scoring import instance_scores, mask_settings, validation_set

OUTPUT_SIZES = (28, 56, 112, 224)
POINTS_PER_STEP = (14, 28, 56, 112)  # squared
TRAINING_VARIANTS = {"regular grid": {"train_point_sampling": "grid"}} | {
    f"{name} (k={k}, beta={beta})": {
        "oversample_ratio": k,
        "importance_sample_ratio": float(beta),
    }
    for k, beta, name in (
        (1, 0, "uniform"),
        (3, 0.75, "mildly biased"),
        (10, 1.0, "heavily biased"),
    )
}


@torch.no_grad()
def render_inputs(model: nn.Module, dataset, num_images: int):
    """P2 features, stride, ground-truth boxes (model input pixels) and labels: what the mask
    branch receives when the detector finds exactly the ground truth."""
    model.eval()
    samples = [dataset[i] for i in range(min(num_images, len(dataset)))]
    images, targets = model.transform([s[0] for s in samples])
    features = model.backbone(images.tensors)
    key = model.roi_heads.mask_branch.config.feature_key
    fine = features[key].contiguous(memory_format=torch.channels_last)
    boxes = []
    for (image, target), size in zip(samples, images.image_sizes):
        scale = torch.tensor([size[1] / image.shape[-1], size[0] / image.shape[-2]] * 2)
        boxes.append(target["boxes"] * scale)
    labels = torch.cat([s[1]["labels"] for s in samples])
    return fine, model.roi_heads.mask_stride, boxes, labels


def _points_name(side: int) -> str:
    return "output 224x224" if side == 28 else f"output 224x224, {side}^2 points"


def _settings(sizes, points) -> dict[str, dict]:
    out = {f"output {s}x{s}": {"output_size": s, "subdivision_num_points": 784} for s in sizes}
    for p in points:
        out.setdefault(_points_name(p), {"output_size": 224, "subdivision_num_points": p * p})
    return out


def inference_ablation(
    pointrend: TrainedModel,
    num_images: int,
    timing_images: int,
    repeats: int,
    sizes=OUTPUT_SIZES,
    points=POINTS_PER_STEP,
    folds: int = 4,
    log=print,
) -> dict:
    """Accuracy, time and cost of each setting (``sizes``: output sides; ``points``: sides of
    the square number of points a step at output 224) on one PointRend model's weights."""
    model = pointrend.model
    val = validation_set("instance", num_images, pointrend.image_size, folds)
    settings = _settings(sizes, points)
    inputs = render_inputs(model, val.dataset, timing_images)
    fine, stride, boxes, labels = inputs
    branch = model.roi_heads.mask_branch

    def renderer(changes: dict):
        def render():
            with mask_settings(model, **changes):
                return branch.render(fine, stride, boxes, labels)

        return render

    renderers = {name: renderer(s) for name, s in settings.items()}
    samples = alternate(renderers, repeats)
    count = max(int(labels.numel()), 1)
    rows = {}
    for name, s in settings.items():
        counter = PointCounter(branch.point_head)
        macs = count_call(renderers[name], counter) / count
        with mask_settings(model, **s):
            row = rows[name] = instance_scores(model, val) | s
        seconds = statistics.median(samples[name])
        row |= {"render_s": seconds, "render_ms_per_box": seconds / count * 1e3}
        row |= {"render_samples_s": samples[name], "point_predictions_per_box": counter.points}
        row["multiply_adds_per_box"] = macs
        log(f"  {name:<30} Boundary AP {row['boundary_AP']:5.1f}  {seconds:.3f} s")
    return {
        "val_images": num_images,
        "timing": {"images": timing_images, "boxes": count, "repeats": repeats},
        "output_sizes": [f"output {s}x{s}" for s in sizes],
        "points_per_step": [_points_name(p) for p in points],
        "rows": rows,
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
            val = validation_set("instance", num_images, size, folds)
        row = rows[name] = instance_scores(loaded.model.eval(), val)
        row |= {"options": options, "iteration": loaded.iteration, "weights": str(path)}
        source.log(f"  {name:<32} mask AP {row['mask_AP']:5.1f}")
    schedule = {"max_iter": solver.max_iter, "warmup_iters": solver.warmup_iters}
    schedule.update({"steps": list(solver.steps), "lr": solver.lr, "schedule": solver.schedule})
    result = {"train_iters": solver.max_iter, "schedule": schedule, "val_images": num_images}
    return result | {"image_size": size, "rows": rows}
