"""From a config to objects: datasets, models, collate and evaluation functions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from ..options import OptionError
from .builders import check_task, model_builder
from .classes import check_classes_match, dataset_facts
from .config import ConfigError, DatasetConfig, ModelConfig, TrainConfig

__all__ = [
    "TrainObjects",
    "build_dataset",
    "build_model",
    "build_train_objects",
    "is_checkpoint_path",
    "collate_fn_for",
    "num_classes_of",
]

# builder arguments that a config sets outside model.options (option -> model.<field>)
CONFIG_FIELDS = {
    "backbone": "backbone",
    "backbone_name": "backbone",
    "num_classes": "num_classes",
    "weights": "weights",
    "weights_backbone": "weights_backbone",
}


@dataclass
class TrainObjects:
    model: nn.Module
    dataset: Dataset
    collate_fn: Callable
    evaluate_fn: Callable | None


def detection_collate(batch):
    """Lists of images and targets, as torchvision's detection models take them."""
    images, targets = zip(*batch)
    return list(images), list(targets)


def semantic_collate(batch):
    """``N x 3 x H x W`` images and ``N x H x W`` labels (crops of one size)."""
    images, labels = zip(*batch)
    return torch.stack(images), torch.stack(labels)


def collate_fn_for(task: str) -> Callable:
    return {"instance": detection_collate, "semantic": semantic_collate}[check_task(task)]


def _require_path(value: str | None, field: str) -> Path:
    if not value:
        raise FileNotFoundError(f"{field} is not set in the config")
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"{field}: {path} does not exist")
    return path


def build_dataset(cfg: DatasetConfig, task: str, train: bool, field: str = "train_data") -> Dataset:
    """The dataset a config describes, with training or evaluation transforms."""
    from ..data import transforms as T

    task = check_task(task)
    tf = T.build_transforms(task, train, cfg)
    if cfg.gt_size is not None and (cfg.format != "synthetic" or task != "instance"):
        raise ValueError(
            f"{field}.gt_size needs synthetic instance data (exact ground truth at another "
            f"size), got format {cfg.format!r} for a {task} model"
        )
    if cfg.format == "synthetic":
        from ..data.synthetic import SyntheticInstanceDataset, SyntheticSemanticDataset

        if task == "instance":
            return SyntheticInstanceDataset(
                cfg.num_images, cfg.image_size, cfg.seed, transforms=tf, gt_size=cfg.gt_size
            )
        return SyntheticSemanticDataset(cfg.num_images, cfg.image_size, cfg.seed, transforms=tf)
    if cfg.format == "coco":
        from ..data.coco import CocoInstanceDataset

        if task != "instance":
            raise ValueError(f"{field}.format 'coco' is for instance segmentation")
        images = _require_path(cfg.images, f"{field}.images")
        annotations = _require_path(cfg.annotations, f"{field}.annotations")
        return CocoInstanceDataset(images, annotations, transforms=tf)
    if cfg.format == "cityscapes" and task == "instance":
        from ..data.cityscapes import CityscapesInstanceDataset

        root = _require_path(cfg.root, f"{field}.root")
        return CityscapesInstanceDataset(root, cfg.split, transforms=tf)
    if cfg.format in ("folder", "cityscapes"):
        from ..data.semantic import CityscapesSemanticDataset, SemanticFolderDataset

        if task != "semantic":
            raise ValueError(f"{field}.format {cfg.format!r} is for semantic segmentation")
        if cfg.format == "folder":
            images = _require_path(cfg.images, f"{field}.images")
            labels = _require_path(cfg.labels, f"{field}.labels")
            return SemanticFolderDataset(images, labels, transforms=tf)
        root = _require_path(cfg.root, f"{field}.root")
        return CityscapesSemanticDataset(root, cfg.split, transforms=tf)
    raise ValueError(
        f"{field}.format must be synthetic, coco, folder or cityscapes, got {cfg.format!r}"
    )


def num_classes_of(dataset: Dataset) -> int:
    """Classes a model needs for ``dataset`` (instance: categories + background)."""
    n = getattr(dataset, "num_classes", None)
    if n is None:
        raise ValueError(
            f"{type(dataset).__name__} does not say its num_classes; set model.num_classes"
        )
    return int(n)


def is_checkpoint_path(weights: str | None) -> bool:
    """Whether ``model.weights`` names a pointrend checkpoint file (``.pt`` / ``.pth``) rather
    than torchvision weights (``COCO``, an enum name)."""
    return isinstance(weights, str) and weights.endswith((".pt", ".pth"))


def build_model(
    cfg: ModelConfig, num_classes: int, source: str | None = None, initial_weights: bool = True
) -> nn.Module:
    """The model a config describes; ``num_classes`` from the dataset unless the config sets it.

    ``model.options`` go to the builder as keyword arguments; an option it does not take raises
    a :class:`ConfigError` naming ``source`` (the config file; by default where
    :func:`load_config` read ``cfg``), the key and the builder's options.

    ``model.weights`` may be a pointrend checkpoint (``.pt``, e.g. one written by ``pointrend
    import-detectron2``) to fine-tune from: the model is built from the config, then every
    checkpoint weight of the same key and shape is loaded (class-specific layers of another
    class count keep their initialisation). ``initial_weights=False`` skips that loading and
    torchvision's (``weights``, ``weights_backbone``: the model has the layout they give, but
    nothing is downloaded), for a caller that loads a whole checkpoint over them.
    """
    builder = model_builder(cfg)
    where = source or getattr(cfg, "source", None) or "model config"
    for key, field in CONFIG_FIELDS.items():
        if key in cfg.options:
            raise ConfigError(f"{where}: model.options.{key}: set model.{field} instead")
    from_checkpoint = is_checkpoint_path(cfg.weights)
    options = dict(cfg.options) if initial_weights else {**cfg.options, "load_weights": False}
    try:
        model = builder(
            cfg.backbone,
            cfg.num_classes or num_classes,
            weights=None if from_checkpoint else cfg.weights,
            weights_backbone=cfg.weights_backbone,
            **options,
        )
    except OptionError as error:
        raise ConfigError(error.located(where)) from error
    if from_checkpoint and initial_weights:
        from .checkpoint import load_matching_weights

        load_matching_weights(model, cfg.weights)
    return model


def check_labels_fit(dataset: Dataset, num_classes: int) -> None:
    """Before the first iteration: every label of ``dataset`` (its annotation file's
    categories, its class list) fits a model of ``num_classes`` classes; a ``DataError`` names
    the image, annotation and category id otherwise."""
    check = getattr(dataset, "check_num_classes", None)
    if check is not None:
        check(num_classes)


def _check_same_classes(train_data: Dataset, val_data: Dataset) -> None:
    """The validation data must have the training data's classes (count and names)."""
    facts = dataset_facts(train_data)
    if "num_classes" in facts:
        names = facts.get("class_names") or [str(k) for k in range(facts["num_classes"])]
        check_classes_match(names, facts["num_classes"], val_data, "train_data")


def build_train_objects(cfg: TrainConfig) -> TrainObjects:
    dataset = build_dataset(cfg.train_data, cfg.model.task, train=True)
    num_classes = cfg.model.num_classes or num_classes_of(dataset)
    check_labels_fit(dataset, num_classes)
    model = build_model(cfg.model, num_classes)
    evaluate_fn = None
    if cfg.val_data is not None:
        from .evaluate import make_evaluate_fn

        val = build_dataset(cfg.val_data, cfg.model.task, train=False, field="val_data")
        check_labels_fit(val, num_classes)
        _check_same_classes(dataset, val)
        evaluate_fn = make_evaluate_fn(cfg.model.task, val, cfg)
    return TrainObjects(model, dataset, collate_fn_for(cfg.model.task), evaluate_fn)
