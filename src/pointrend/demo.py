"""``pointrend demo``: the shipped models on fresh synthetic images, pictures and a metrics table.

Four small checkpoints ship in ``pointrend/weights/`` (trained on the synthetic datasets by the
configs in ``configs/``): PointRend Mask R-CNN and torchvision's Mask R-CNN (same backbone, data,
schedule), PointRend Semantic FPN and the same Semantic FPN upsampled. The demo renders fresh
images (a seed training never used), runs every model, scores them and writes to ``out``:

- ``subdivision.png``: one object's coarse 7x7 mask, then each step with the points it chose;
- ``instances.png``: Mask R-CNN vs PointRend vs ground truth, with zoomed boundary crops;
- ``semantic.png``: the coarse model upsampled vs PointRend's full-resolution output;
- ``metrics.json`` (and a printed table): mask AP, AP75, Boundary AP; mIoU, boundary F-score.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from .data.synthetic import SyntheticInstanceDataset, SyntheticSemanticDataset
from .engine.checkpoint import atomic_write
from .engine.evaluate import coco_ground_truth
from .engine.inference import TrainedModel, load_trained_model, read_image
from .evaluation import InstanceEvaluator, SemanticEvaluator
from .viz import (
    overlay_instances,
    overlay_labels,
    plot_panels,
    plot_subdivision_steps,
    require_matplotlib,
)

__all__ = ["WEIGHTS_DIR", "SHIPPED", "DemoOptions", "run_demo", "format_demo_table"]

WEIGHTS_DIR = Path(__file__).parent / "weights"
SHIPPED = {
    "maskrcnn": "synthetic_instance_maskrcnn_r18.pt",
    "pointrend": "synthetic_instance_pointrend_r18.pt",
    "semantic_coarse": "synthetic_semantic_coarse_fpn_r18.pt",
    "semantic_pointrend": "synthetic_semantic_pointrend_fpn_r18.pt",
}
MASK_TITLES = {"fixed": "224x224", "box": "per-box grid"}  # by PointRend's mask_resolution
DEMO_SEED = 777  # training used seed 0, validation seed 1000


@dataclasses.dataclass
class DemoOptions:
    out: Path = Path("outputs/demo")
    instance_images: int = 12
    semantic_images: int = 8
    # The instance models see every image at 160 px (their training size: the transform resizes)
    # and paste masks at the image's own size: fresh images at 320 px show what a 224x224
    # rendered mask holds that a 28x28 one cannot. The semantic models run at the input size.
    instance_size: int = 320
    semantic_size: int = 160
    seed: int = DEMO_SEED
    image: Path | None = None
    weights_dir: Path = WEIGHTS_DIR
    rows: int = 3  # images shown in the comparison figures
    mask_resolution: str = "fixed"  # PointRend's instance masks: "fixed" 224 x 224 or per "box"
    device: str | None = None  # auto, cpu, cuda or cuda:N (None: the checkpoints' config, auto)


def _load(options: DemoOptions) -> dict[str, TrainedModel]:
    models = {}
    for key, name in SHIPPED.items():
        path = Path(options.weights_dir) / name
        if not path.is_file():
            raise FileNotFoundError(f"shipped checkpoint missing: {path}")
        overrides = []
        if key == "pointrend":
            overrides = [f"model.options.mask_resolution={options.mask_resolution}"]
        models[key] = load_trained_model(path, overrides=overrides, device=options.device)
    return models


@torch.no_grad()
def _predict_instance(trained: TrainedModel, image: torch.Tensor) -> dict:
    """The model's output for one CPU image, on the CPU."""
    output = trained.model([image.to(trained.device)])[0]
    return {k: v.cpu() for k, v in output.items()}


@torch.no_grad()
def _instance_outputs(trained: TrainedModel, images: list[torch.Tensor]) -> list[dict]:
    return [_predict_instance(trained, image) for image in images]


def _score_instances(dataset, outputs: list[dict]) -> dict:
    gt, label_map = coco_ground_truth(dataset)
    evaluator = InstanceEvaluator(gt, label_map)
    evaluator.update(list(range(len(outputs))), outputs)
    m = evaluator.evaluate()
    return {
        "mask_AP": m["segm"]["AP"],
        "mask_AP75": m["segm"]["AP75"],
        "boundary_AP": m["boundary"]["AP"],
        "box_AP": m["bbox"]["AP"],
    }


def _kept_masks(output: dict, thresh: float = 0.5) -> np.ndarray:
    keep = output["scores"] >= thresh
    order = output["scores"][keep].argsort()  # best drawn last, on top
    return (output["masks"][keep][order, 0] >= 0.5).numpy()


def _zoom(picture: np.ndarray, corner: tuple[int, int], side: int, size: int) -> np.ndarray:
    """The ``side x side`` crop at ``corner`` (y, x), enlarged to ``size`` (nearest)."""
    y0, x0 = corner
    crop = picture[y0 : y0 + side, x0 : x0 + side]
    ys = (np.arange(size) * crop.shape[0] / size).astype(int)
    xs = (np.arange(size) * crop.shape[1] / size).astype(int)
    return crop[ys][:, xs]


def _zoom_window(output: dict, gt_masks: np.ndarray, size: int) -> tuple[tuple[int, int], int]:
    """Corner (y, x) and side of a square around PointRend's top detection (else the largest
    ground-truth object), 15% larger than its box, inside the image."""
    if len(output["boxes"]):
        x0, y0, x1, y1 = output["boxes"][0].tolist()
    elif len(gt_masks):
        ys, xs = np.nonzero(gt_masks[gt_masks.sum((1, 2)).argmax()])
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    else:
        return (0, 0), size
    side = int(min(size, max(16, 1.15 * max(x1 - x0, y1 - y0))))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    y = int(np.clip(cy - side / 2, 0, size - side))
    x = int(np.clip(cx - side / 2, 0, size - side))
    return (y, x), side


def _instance_figure(dataset, images, outputs, options: DemoOptions) -> Path:
    rows, size = [], options.instance_size
    for i in range(min(options.rows, len(images))):
        gt = dataset[i][1]["masks"].bool().numpy()
        base, ours = _kept_masks(outputs["maskrcnn"][i]), _kept_masks(outputs["pointrend"][i])
        pictures = [
            overlay_instances(images[i], base),
            overlay_instances(images[i], ours),
            overlay_instances(images[i], gt),
        ]
        corner, side = _zoom_window(outputs["pointrend"][i], gt, size)
        rows.append(pictures + [_zoom(p, corner, side, size) for p in pictures])
    titles = [
        "Mask R-CNN 28x28",
        f"PointRend {MASK_TITLES[options.mask_resolution]}",
        "ground truth",
    ]
    titles += [f"zoom: {t}" for t in titles]
    return plot_panels(rows, titles, Path(options.out) / "instances.png")


@torch.no_grad()
def _subdivision_figure(trained: TrainedModel, image: torch.Tensor, output: dict, path: Path):
    """One object's steps: re-run its mask branch on the top detection with the steps kept."""
    model = trained.model
    if len(output["boxes"]) == 0:
        return None
    batch, _ = model.transform([image.to(trained.device)])
    features = model.backbone(batch.tensors)
    fine = features[model.roi_heads.mask_branch.config.feature_key]
    stride = model.roi_heads.mask_stride
    (h, w), (H, W) = batch.image_sizes[0], image.shape[-2:]
    box = output["boxes"][:1] * torch.tensor([w / W, h / H, w / W, h / H])
    _, coarse, steps = model.roi_heads.mask_branch.render(
        fine,
        stride,
        [box.to(trained.device)],
        output["labels"][:1].to(trained.device),
        return_steps=True,
    )
    coarse = coarse.float().cpu()
    panels = []
    for step in steps:
        prob = step.logits[0, 0].sigmoid().float().cpu().numpy()
        dense = step.point_indices.shape[1] == prob.size
        panels.append((prob, None if dense else step.point_coords[0].float().cpu().numpy()))
    name = trained.class_names[int(output["labels"][0])]
    return plot_subdivision_steps(
        coarse[0, 0].sigmoid().numpy(), panels, path, title=f"adaptive subdivision of a {name}"
    )


@torch.no_grad()
def _semantic_part(models, options: DemoOptions):
    dataset = SyntheticSemanticDataset(options.semantic_images, options.semantic_size, options.seed)
    k = dataset.num_classes
    scores, predictions = {}, {}
    for key in ("semantic_coarse", "semantic_pointrend"):
        evaluator = SemanticEvaluator(k, 255, class_names=dataset.classes)
        preds = []
        for i in range(len(dataset)):
            image, labels = dataset[i]
            pred = models[key].model(image[None].to(models[key].device))["out"].argmax(1).cpu()
            evaluator.update(labels[None], pred)
            preds.append(pred[0].numpy())
        m = evaluator.evaluate()
        scores[key] = {"mIoU": m["mIoU"], "boundary_F": m["boundary_f"]}
        predictions[key] = preds
    rows = []
    for i in range(min(options.rows, len(dataset))):
        image, labels = dataset[i]
        rows.append(
            [
                overlay_labels(image, predictions["semantic_coarse"][i], k),
                overlay_labels(image, predictions["semantic_pointrend"][i], k),
                overlay_labels(image, labels.numpy(), k),
            ]
        )
    stride = models["semantic_coarse"].model.coarse_stride
    titles = [f"coarse (stride {stride}, upsampled)", "PointRend (full resolution)", "ground truth"]
    plot_panels(rows, titles, Path(options.out) / "semantic.png")
    return scores


def run_demo(options: DemoOptions) -> dict:
    """Run the demo; returns the metrics it also writes to ``out/metrics.json``."""
    start = time.perf_counter()
    require_matplotlib()  # the figures are the demo's output: say so before any work
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    models = _load(options)
    dataset = SyntheticInstanceDataset(options.instance_images, options.instance_size, options.seed)
    images = [dataset[i][0] for i in range(len(dataset))]
    outputs = {key: _instance_outputs(models[key], images) for key in ("maskrcnn", "pointrend")}
    metrics = {
        "instance": {key: _score_instances(dataset, outputs[key]) for key in outputs},
        "semantic": _semantic_part(models, options),
    }
    _instance_figure(dataset, images, outputs, options)
    _subdivision_figure(
        models["pointrend"], images[0], outputs["pointrend"][0], out / "subdivision.png"
    )
    if options.image is not None:
        _user_image(models, Path(options.image), out)
    metrics["setting"] = {
        "instance_images": options.instance_images,
        "semantic_images": options.semantic_images,
        "instance_size": options.instance_size,
        "semantic_size": options.semantic_size,
        "seed": options.seed,
        "mask_resolution": options.mask_resolution,
        "threads": torch.get_num_threads(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    text = json.dumps(metrics, indent=1)
    atomic_write(out / "metrics.json", lambda f: f.write(text), binary=False)
    return metrics


@torch.no_grad()
def _user_image(models, path: Path, out: Path) -> None:
    from PIL import Image

    image = read_image(path)
    for key in ("maskrcnn", "pointrend"):
        result = _predict_instance(models[key], image)
        picture = overlay_instances(image, _kept_masks(result))
        target = out / f"{path.stem}_{key}.png"
        atomic_write(target, lambda f, p=picture: Image.fromarray(p).save(f, format="PNG"))


def format_demo_table(metrics: dict) -> str:
    """The printed table: instance and semantic metrics, baseline and PointRend side by side."""
    inst, sem = metrics["instance"], metrics["semantic"]
    masks = MASK_TITLES[metrics["setting"]["mask_resolution"]]
    lines = [
        f"{'instances':<24}{'mask AP':>9}{'AP75':>9}{'Boundary AP':>13}",
        *(
            f"{name:<24}{inst[k]['mask_AP']:>9.1f}{inst[k]['mask_AP75']:>9.1f}"
            f"{inst[k]['boundary_AP']:>13.1f}"
            for k, name in (
                ("maskrcnn", "Mask R-CNN (28x28)"),
                ("pointrend", f"PointRend ({masks})"),
            )
        ),
        "",
        f"{'semantic':<24}{'mIoU':>9}{'boundary F':>13}",
        *(
            f"{name:<24}{sem[k]['mIoU']:>9.1f}{sem[k]['boundary_F']:>13.1f}"
            for k, name in (
                ("semantic_coarse", "coarse, upsampled"),
                ("semantic_pointrend", "PointRend"),
            )
        ),
    ]
    return "\n".join(lines)
