"""Evaluation loops: run a model over a dataset (sharded across ranks), gather, score on rank 0."""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..data.coco import instance_annotations, make_coco
from ..evaluation import InstanceEvaluator, SemanticEvaluator
from ..instance.compact import compact_detections
from ..instance.roi_heads import PointRendRoIHeads
from ..instance.transform import PointRendTransform
from .distributed import (
    all_gather_objects,
    default_num_workers,
    get_rank,
    get_world_size,
    is_main_process,
)

__all__ = [
    "cityscapes_metrics",
    "coco_ground_truth",
    "predict_pasted",
    "detect",
    "score_threshold",
    "evaluate_instances",
    "evaluate_semantic",
    "make_evaluate_fn",
    "format_metrics",
    "metrics_json",
]


def coco_ground_truth(dataset: Dataset):
    """``(COCO, label_to_category_id)`` for a dataset: its own file, or one built from its targets
    (each image as large as its ground-truth masks)."""
    if hasattr(dataset, "coco"):
        return dataset.coco, dataset.label_to_category_id
    images, anns = [], []
    for i in range(len(dataset)):
        image, target = dataset[i]
        h, w = _ground_truth_size(image, target)  # the image's, but for data with a gt_size
        image_id = int(target["image_id"])
        images.append(
            {"id": image_id, "width": int(w), "height": int(h), "file_name": f"{image_id}.png"}
        )
        masks = target["masks"].bool().numpy()
        anns += instance_annotations(masks, target["labels"].tolist(), image_id, len(anns) + 1)
    names = getattr(dataset, "categories", None) or [str(k) for k in range(1, dataset.num_classes)]
    categories = [{"id": k, "name": n} for k, n in enumerate(names, 1)]
    return make_coco({"images": images, "annotations": anns, "categories": categories}), None


def _shard(n: int) -> range:
    return range(get_rank(), n, get_world_size())


def _as_list(batch: list) -> list:
    return batch


def _loader(dataset: Dataset, batch_size: int, device: torch.device) -> DataLoader:
    """This process's share of ``dataset`` in order, ``batch_size`` items a batch (a list of
    ``(image, target)``), decoded by worker processes (:func:`~.distributed.default_num_workers`) while
    the model runs; pinned for a GPU."""
    return DataLoader(
        Subset(dataset, list(_shard(len(dataset)))),
        batch_size=batch_size,
        collate_fn=_as_list,
        num_workers=default_num_workers(),
        pin_memory=torch.device(device).type == "cuda",
    )


def _ground_truth_size(image: torch.Tensor, target: dict) -> tuple[int, int]:
    """``(H, W)`` of a target's masks, else of its image."""
    return tuple(int(n) for n in target.get("masks", image).shape[-2:])


def _detections(
    model: nn.Module, images: list[torch.Tensor], output_sizes: list[tuple[int, int]]
) -> tuple[list[dict], list[tuple[int, int]]]:
    """The RoI heads' detections of a torchvision-style instance model on ``images``, before
    the transform's postprocess: boxes (and box-local masks) in the resized images, whose
    sizes are returned with them. Masks rendered at each box's output size (``mask_resolution:
    box``) are rendered for ``output_sizes`` (one ``(H, W)`` per image)."""
    transform = getattr(model, "transform", None)
    if transform is None:
        raise ValueError(f"{type(model).__name__} has no transform: cannot paste at another size")
    model.eval()
    image_list, _ = transform(images)
    features = model.backbone(image_list.tensors)
    if isinstance(features, torch.Tensor):
        features = {"0": features}
    proposals, _ = model.rpn(image_list, features)
    heads, sizes = model.roi_heads, list(image_list.image_sizes)
    if isinstance(heads, PointRendRoIHeads):
        detections, _ = heads(features, proposals, sizes, output_sizes=output_sizes)
    else:
        detections, _ = heads(features, proposals, sizes)
    return detections, sizes


@contextlib.contextmanager
def score_threshold(model: nn.Module, score_thresh: float | None):
    """The model's box score threshold raised to keep only scores ``>= score_thresh`` for the
    time of the block (``None``: unchanged), so that masks below it are never rendered.

    torchvision keeps ``score > roi_heads.score_thresh``; the largest float32 below
    ``score_thresh`` makes that ``score >= score_thresh``. Dropping low scores before the
    non-maximum suppression keeps the same detections above them (a box is only suppressed by
    a higher-scoring one)."""
    heads = getattr(model, "roi_heads", None)
    if score_thresh is None or heads is None:
        yield
        return
    before = heads.score_thresh
    below = float(np.nextafter(np.float32(score_thresh), np.float32(-np.inf)))
    heads.score_thresh = max(float(before), below)
    try:
        yield
    finally:
        heads.score_thresh = before


@torch.no_grad()
def detect(
    model: nn.Module,
    images: list[torch.Tensor],
    output_sizes: list[tuple[int, int]] | None = None,
    compact: bool = True,
    score_thresh: float | None = None,
) -> list[dict]:
    """An instance model's detections with boxes in ``output_sizes`` (default: each image's own
    size), without changing the model.

    Args:
        images: ``3 x H_i x W_i`` float images, each run on its own (no batch partner, no
            padding shared with another image: results do not depend on batching).
        output_sizes: one ``(H, W)`` per image: where boxes and masks belong (e.g. the size of
            the photo an image was shrunk from, or of finer ground truth).
        compact: masks as ``mask_grids`` (:class:`~pointrend.instance.compact.CompactMasks`)
            when the model renders box-local masks through a :class:`PointRendTransform`;
            otherwise (or ``False``) dense ``masks`` (``N x 1 x H x W``). A model without a
            ``transform`` is called as ``model([image])`` (its own output, own size only).
        score_thresh: keep only detections scoring at least this (see :func:`score_threshold`).
    """
    sizes = output_sizes or [tuple(int(v) for v in image.shape[-2:]) for image in images]
    transform = getattr(model, "transform", None)
    outputs = []
    with score_threshold(model, score_thresh):
        for image, size in zip(images, sizes):
            size = (int(size[0]), int(size[1]))
            if transform is None and size == tuple(image.shape[-2:]):
                outputs += model([image])  # any model with the detection contract
                continue
            found, shapes = _detections(model, [image], [size])
            if compact and isinstance(transform, PointRendTransform):
                fade = transform.mask_paste == "detectron2"
                outputs += compact_detections(found, shapes, [size], fade)
            else:
                outputs += type(transform).postprocess(transform, found, shapes, [size])
    return outputs


@torch.no_grad()
def predict_pasted(
    model: nn.Module, images: list[torch.Tensor], sizes: list[list[tuple[int, int]]]
) -> list[list[dict]]:
    """Run an instance model (torchvision-style, with a ``transform``) once on ``images`` and
    paste its detections into images of other sizes: ``sizes`` holds one ``(H, W)`` per image
    for each wanted output; returns one output list per entry of ``sizes`` (dense ``masks``).

    The boxes are scaled from the model's resized image to ``(H, W)`` and the per-box masks
    pasted there, as ``model(images)`` does for the input images' own sizes. Masks rendered at
    each box's output size (``mask_resolution: box``) are rendered for the largest wanted size.
    """
    largest = [max(wanted, key=lambda s: s[0] * s[1]) for wanted in zip(*sizes)]
    found, shapes = _detections(model, images, largest)
    paste = type(model.transform).postprocess
    return [paste(model.transform, [dict(r) for r in found], shapes, list(out)) for out in sizes]


@torch.no_grad()
def evaluate_instances(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int = 2,
    progress: bool = False,
    coco_gt=None,
    device=None,
    cityscapes_dir: str | Path | None = None,
) -> dict:
    """Box AP, mask AP and Boundary AP of an instance model on ``dataset`` (all ranks call it).

    Images are loaded ``batch_size`` at a time but each goes through the model on its own
    (:func:`detect`), so that the scores do not depend on the batch size (no padding shared
    with a batch partner) and are those ``pointrend predict`` gives. Masks stay compact until
    each is pasted and run-length encoded. Predictions are pasted at the size of each image's
    ground-truth masks: the image's own size, or a larger one for data that renders exact
    ground truth at another size (``gt_size``).
    On Cityscapes instance data (a dataset with ``instance_id_files``) also the Cityscapes
    instance AP / AP50 (``"cityscapes"``), from predictions written in that evaluation's format
    into ``cityscapes_dir`` (default: a temporary folder, removed after scoring).
    """
    gt, label_map = (
        coco_ground_truth(dataset)
        if coco_gt is None
        else (coco_gt, getattr(dataset, "label_to_category_id", None))
    )
    evaluator = InstanceEvaluator(gt, label_map)
    device = device or next(model.parameters()).device
    model.eval()
    for batch in _progress(_loader(dataset, batch_size, device), progress, "eval"):
        images = [b[0].to(device, non_blocking=True) for b in batch]
        gt_sizes = [_ground_truth_size(image, target) for image, target in batch]
        outputs = detect(model, images, gt_sizes)
        evaluator.update([int(b[1]["image_id"]) for b in batch], outputs)
    gathered = all_gather_objects(evaluator.results)
    if not is_main_process():
        return {}
    results = [r for part in gathered for r in part]
    metrics = evaluator.evaluate(results)
    if hasattr(dataset, "instance_id_files") and "segm" in metrics:
        metrics["cityscapes"] = cityscapes_metrics(dataset, results, cityscapes_dir)
    return metrics


def cityscapes_metrics(dataset: Dataset, results: list[dict], out_dir: str | Path | None) -> dict:
    """Cityscapes instance AP of COCO-style ``results`` (category ids = Cityscapes label ids) on
    a :class:`~pointrend.data.cityscapes.CityscapesInstanceDataset`; the prediction files go to
    ``out_dir`` (default: a temporary folder)."""
    from ..evaluation.cityscapes import evaluate_cityscapes

    with tempfile.TemporaryDirectory() as work:
        gt_files = dataset.instance_id_files(Path(work) / "gtFine")
        out = Path(out_dir) if out_dir is not None else Path(work) / "results"
        return evaluate_cityscapes(results, dataset.image_names, gt_files, out)


@torch.no_grad()
def evaluate_semantic(
    model: nn.Module, dataset: Dataset, batch_size: int = 1, progress: bool = False, device=None
) -> dict:
    """mIoU, boundary F-score and Boundary IoU of a semantic model on ``dataset``."""
    names = getattr(dataset, "classes", None)
    evaluator = SemanticEvaluator(
        dataset.num_classes, getattr(dataset, "ignore_index", 255), class_names=names
    )
    device = device or next(model.parameters()).device
    model.eval()
    for batch in _progress(_loader(dataset, batch_size, device), progress, "eval"):
        for image, labels in batch:  # images of a semantic dataset may differ in size
            logits = model(image[None].to(device, non_blocking=True))["out"]
            evaluator.update(labels[None], logits.argmax(1).cpu())
    states = all_gather_objects(evaluator.state())
    if not is_main_process():
        return {}
    total = SemanticEvaluator(dataset.num_classes, evaluator.ignore_index, class_names=names)
    for state in states:
        total.merge(state)
    return total.evaluate()


def _progress(iterable, enabled: bool, desc: str):
    if not (enabled and is_main_process()):
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, desc=desc, dynamic_ncols=True)


def make_evaluate_fn(task: str, dataset: Dataset, cfg) -> Callable[[nn.Module, int], dict]:
    """``evaluate(model, iteration) -> metrics`` for the training loop's periodic evaluation."""
    cache = {}

    def evaluate(model: nn.Module, iteration: int) -> dict:
        if task == "instance":
            if "gt" not in cache:
                cache["gt"] = coco_ground_truth(dataset)[0]
            return evaluate_instances(model, dataset, coco_gt=cache["gt"])
        return evaluate_semantic(model, dataset)

    return evaluate


def format_metrics(metrics: dict) -> str:
    """A small text table of the headline numbers."""
    rows = []
    for group, values in metrics.items():
        if isinstance(values, dict):
            cells = [
                f"{k} {v:.1f}"
                for k, v in values.items()
                if isinstance(v, float) and not math.isnan(v)
            ]
            if cells:
                rows.append(f"{group:>10}: " + "  ".join(cells))
        elif isinstance(values, float):
            rows.append(f"{group:>10}: {values:.2f}")
    return "\n".join(rows)


def _json_ready(value):
    """``value`` with every non-finite float replaced by ``None`` (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def metrics_json(metrics: dict) -> str:
    """Metrics as strict JSON text: ``null`` where a metric is undefined (``nan``), e.g. the
    IoU of a class absent from the validation set or COCO's APs with no small objects."""
    return json.dumps(_json_ready(metrics), indent=1, allow_nan=False, default=float)
