"""Scoring instances on a fresh synthetic validation set, overall and per fold.

The folds (disjoint, equal parts of the validation set) give a rough idea of how much a
difference between two models is worth: the report shows each difference with the standard
error of its per-fold values. Instance predictions are made once and scored against the whole
set and against each fold's ground truth.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from pycocotools.coco import COCO
from torch import nn
from torch.utils.data import Dataset
from torchvision.ops import roi_align

from pointrend.data.coco import make_coco
from pointrend.engine.build import build_dataset
from pointrend.engine.config import DatasetConfig
from pointrend.engine.evaluate import coco_ground_truth, predict_pasted
from pointrend.evaluation import InstanceEvaluator, predictions_to_coco
from pointrend.instance.paste import paste_masks
from pointrend.settings import replace_options

VAL_SEED = 7000  # the recipes train on seed 0 and validate on seed 1000


class _Rendered(Dataset):
    """A dataset's items kept in memory (data slow to render, read several times), with its
    class facts (what the evaluators ask of a dataset)."""

    def __init__(self, dataset):
        self.items = [dataset[i] for i in range(len(dataset))]
        self.num_classes, self.categories = dataset.num_classes, dataset.categories

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


@dataclass
class ValSet:
    """A validation set of instances, its folds (lists of indices), and the COCO ground truth of
    the whole set and of each fold."""

    dataset: Dataset
    folds: list[list[int]]
    gt: COCO
    fold_gts: list[COCO]

    @property
    def image_size(self) -> int:
        return int(self.dataset[0][0].shape[-1])


def _fold_coco(gt: COCO, image_ids: set[int]) -> COCO:
    data = gt.dataset
    return make_coco(
        {
            "images": [im for im in data["images"] if im["id"] in image_ids],
            "annotations": [a for a in data["annotations"] if a["image_id"] in image_ids],
            "categories": data["categories"],
        }
    )


def validation_set(
    num_images: int, image_size: int, folds: int = 4, gt_size: int | None = None
) -> ValSet:
    """``num_images`` fresh synthetic instance images (seed :data:`VAL_SEED`) in ``folds`` equal
    parts; with ``gt_size``, their ground truth rendered exactly at that size (kept in memory)."""
    options = {"num_images": num_images, "image_size": image_size, "gt_size": gt_size}
    cfg = DatasetConfig(format="synthetic", seed=VAL_SEED, flip=False, **options)
    dataset = build_dataset(cfg, "instance", train=False, field="val_data")
    dataset = dataset if gt_size is None else _Rendered(dataset)
    folds = max(1, min(folds, num_images))
    parts = [list(range(k, num_images, folds)) for k in range(folds)]
    gt, _ = coco_ground_truth(dataset)
    ids = [{int(dataset[i][1]["image_id"]) for i in part} for part in parts]
    return ValSet(dataset, parts, gt, [_fold_coco(gt, s) for s in ids])


PICK = {"mask_AP": ("segm", "AP"), "mask_AP50": ("segm", "AP50"), "mask_AP75": ("segm", "AP75")}
PICK |= {"boundary_AP": ("boundary", "AP"), "boundary_AP75": ("boundary", "AP75")}
PICK |= {"box_AP": ("bbox", "AP")}


def _pick(metrics: dict) -> dict:
    return {key: metrics[kind][name] for key, (kind, name) in PICK.items()}


def score_results(val: ValSet, results: list[dict]) -> dict:
    """The scores of COCO result dicts against ``val``'s ground truth, overall and per fold."""
    scores = _pick(InstanceEvaluator(val.gt).evaluate(results))
    parts = [(gt, [r for r in results if r["image_id"] in gt.imgs]) for gt in val.fold_gts]
    scores["folds"] = [_pick(InstanceEvaluator(gt).evaluate(part)) for gt, part in parts]
    return scores | {"images": len(val.dataset)}


@torch.no_grad()
def predict_at_sizes(
    model: nn.Module, dataset, sizes: list[int] | None = None, batch_size: int = 2
) -> dict[int, list[dict]]:
    """COCO result dicts of ``model`` on every (square) image of ``dataset``, one model run
    per image, its detections pasted into ``S x S`` images for each ``S`` of ``sizes`` (default:
    the image's own size): ``{S: results}``."""
    sizes = sizes or [int(dataset[0][0].shape[-1])]
    results = {size: [] for size in sizes}
    for start in range(0, len(dataset), batch_size):
        batch = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        out_sizes = [[(size, size)] * len(batch) for size in sizes]
        pasted = predict_pasted(model, [image for image, _ in batch], out_sizes)
        for size, outputs in zip(sizes, pasted):
            for (_, target), output in zip(batch, outputs):
                results[size] += predictions_to_coco(int(target["image_id"]), output)
    return results


def instance_scores(model: nn.Module, val: ValSet) -> dict:
    """Mask AP / AP50 / AP75, Boundary AP / AP75, box AP (percent), overall and per fold."""
    return score_results(val, predict_at_sizes(model, val.dataset)[val.image_size])


@contextlib.contextmanager
def mask_settings(model: nn.Module, score_thresh: float | None = None, **changes) -> Iterator[None]:
    """Render with other :class:`PointRendMaskConfig` settings inside the block (same weights),
    keeping only detections scoring above ``score_thresh`` when given."""
    heads = model.roi_heads
    saved = heads.mask_branch.config, heads.score_thresh
    heads.mask_branch.config = replace_options(saved[0], **changes)
    heads.score_thresh = saved[1] if score_thresh is None else score_thresh
    try:
        yield
    finally:
        heads.mask_branch.config, heads.score_thresh = saved


def oracle_outputs(dataset, size: int) -> list[dict]:
    """Ground-truth instances whose masks were resampled to ``size x size`` in their box.

    Each mask is averaged over ``size x size`` bins of its tight box (RoIAlign, aligned, 2 x 2
    samples a bin: how Mask R-CNN makes its mask targets), then pasted back bilinearly into an
    image of the ground truth's size.
    """
    outputs = []
    for i in range(len(dataset)):
        _, target = dataset[i]
        masks, boxes = target["masks"].float(), target["boxes"].float()
        index = torch.arange(len(boxes), dtype=torch.float32)[:, None]
        small = roi_align(masks[:, None], torch.cat([index, boxes], 1), size, 1.0, 2, True)
        outputs.append(
            {
                "boxes": boxes,
                "labels": target["labels"],
                "scores": torch.ones(len(boxes)),
                "masks": paste_masks(small, boxes, masks.shape[-2:]),
                "image_id": int(target["image_id"]),
            }
        )
    return outputs


def oracle_scores(val: ValSet, size: int) -> dict:
    """The scores of :func:`oracle_outputs`: the ceiling of a ``size x size`` mask."""
    outputs = oracle_outputs(val.dataset, size)
    return score_results(val, [r for o in outputs for r in predictions_to_coco(o["image_id"], o)])
