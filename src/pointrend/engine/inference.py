"""Trained models for inference: load one from a checkpoint, predict on image files.

``pointrend eval``, ``pointrend predict``, the demo and export all start from
:func:`load_trained_model`: the config the checkpoint holds (or one given), the model it
describes, the weights loaded with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import nn

from .build import build_model
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, load_model_weights
from .config import TrainConfig, config_from_dict, load_config

__all__ = [
    "TrainedModel",
    "load_trained_model",
    "num_classes_from_state",
    "list_images",
    "read_image",
    "predict_images",
    "IMAGE_SUFFIXES",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclasses.dataclass
class TrainedModel:
    """A model ready for inference (eval mode) and what is known about it."""

    model: nn.Module
    config: TrainConfig
    num_classes: int
    class_names: list[str]
    iteration: int | None

    @property
    def task(self) -> str:
        return self.config.model.task


def num_classes_from_state(task: str, state: dict) -> int:
    """The class count a state dict was trained with (its last classifier's size)."""
    if task == "instance":
        key = "roi_heads.box_predictor.cls_score.weight"
        if key in state:
            return int(state[key].shape[0])
    else:
        biases = [k for k in state if k.startswith("coarse_head.") and k.endswith(".bias")]
        if biases:
            return int(state[biases[-1]].shape[0])
    raise CheckpointError(
        f"cannot tell the number of classes of this {task} checkpoint; set model.num_classes"
    )


def load_trained_model(
    weights: str | Path,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    device: str | torch.device = "cpu",
) -> TrainedModel:
    """Build the model a checkpoint (or ``config``) describes and load the checkpoint's weights.

    Args:
        weights: a checkpoint written by ``pointrend train`` (or a shipped one).
        config: a YAML config to use instead of the one the checkpoint holds.
        overrides: ``key=value`` overrides, e.g. ``model.options.mask_output_size=112``.
    """
    ckpt = load_checkpoint(weights)
    if config is not None:
        cfg = load_config(config, overrides)
    elif "config" in ckpt:
        cfg = config_from_dict(ckpt["config"], overrides, where=f"config in {weights}")
    else:
        raise CheckpointError(f"{weights} holds no config: pass the training config (--config)")
    state = ckpt.get("model", ckpt)
    num_classes = cfg.model.num_classes or ckpt.get("num_classes")
    num_classes = int(num_classes or num_classes_from_state(cfg.model.task, state))
    model = build_model(cfg.model, num_classes)
    load_model_weights(model, weights)
    model.to(device).eval()
    names = list(ckpt.get("class_names") or [str(k) for k in range(num_classes)])
    return TrainedModel(model, cfg, num_classes, names, ckpt.get("iteration"))


def list_images(paths: list[str | Path]) -> list[Path]:
    """Image files among ``paths``; a folder contributes its images (sorted, not recursive)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.iterdir() if q.suffix.lower() in IMAGE_SUFFIXES)
        elif p.exists():
            found.append(p)
        else:
            raise FileNotFoundError(f"no such image or folder: {p}")
    return found


def read_image(path: str | Path) -> torch.Tensor:
    """An image file as a ``3 x H x W`` float tensor in [0, 1] (RGB); a clear error otherwise."""
    try:
        with Image.open(path) as im:
            array = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ValueError(f"cannot read image {path}: {err}") from err
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


def _save_png(array: np.ndarray, path: Path) -> None:
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG"))


def _unique_stem(path: Path, used: set[str]) -> str:
    stem, k = path.stem, 1
    while stem in used:
        stem, k = f"{path.stem}_{k}", k + 1
    used.add(stem)
    return stem


@torch.no_grad()
def _predict_instances(trained: TrainedModel, image: torch.Tensor, score_thresh: float):
    from pycocotools import mask as mask_utils

    from ..viz import instance_id_map, overlay_instances

    out = trained.model([image.to(next(trained.model.parameters()).device)])[0]
    keep = out["scores"] >= score_thresh
    masks = (out["masks"][keep, 0] >= 0.5).cpu().numpy()
    boxes, labels, scores = out["boxes"][keep].cpu(), out["labels"][keep], out["scores"][keep]
    order = np.argsort(scores.cpu().numpy(), kind="stable")  # best drawn last, on top
    drawn = instance_id_map(masks[order])  # position in score order + 1, 0 = none
    ids = np.where(drawn > 0, order[np.maximum(drawn - 1, 0)] + 1, 0).astype(np.uint16)
    rles = mask_utils.encode(np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8)))
    records = []
    for i, rle in enumerate(rles):
        x0, y0, x1, y1 = boxes[i].tolist()
        label = int(labels[i])
        records.append(
            {
                "instance_id": i + 1,
                "category_id": label,
                "category": trained.class_names[label] if label < len(trained.class_names) else "",
                "score": round(float(scores[i]), 5),
                "bbox": [round(v, 2) for v in (x0, y0, x1 - x0, y1 - y0)],
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            }
        )
    overlay = overlay_instances(image, masks[order])
    return {"instances": ids, "overlay": overlay}, records


@torch.no_grad()
def _predict_semantic(trained: TrainedModel, image: torch.Tensor):
    from ..viz import overlay_labels

    logits = trained.model(image[None].to(next(trained.model.parameters()).device))["out"]
    labels = logits[0].argmax(0).cpu().numpy().astype(np.uint8)
    overlay = overlay_labels(image, labels, trained.num_classes)
    present = np.unique(labels)
    names = [trained.class_names[c] if c < len(trained.class_names) else str(c) for c in present]
    return {"labels": labels, "overlay": overlay}, [{"classes": names}]


def predict_images(
    trained: TrainedModel,
    paths: list[Path],
    out_dir: str | Path,
    score_thresh: float = 0.5,
    progress: bool = True,
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Predict every image and write ``<stem>_overlay.png`` plus the masks for each.

    Instance models write ``<stem>_instances.png`` (16-bit id map, 0 = none, id ``i`` is entry
    ``i`` of the image's list in ``predictions.json``, a COCO-style result file with RLE masks);
    semantic models write ``<stem>_labels.png`` (class index per pixel).

    Returns one summary row per image written and the ``(path, error)`` of those that failed;
    a file that cannot be read is reported and the others are still processed.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, failures, predictions, used = [], [], {}, set()
    iterator = paths
    if progress:
        from tqdm import tqdm

        iterator = tqdm(paths, desc="predict", dynamic_ncols=True)
    for path in iterator:
        try:
            image = read_image(path)
        except ValueError as err:
            failures.append((path, str(err)))
            continue
        stem = _unique_stem(path, used)
        start = time.perf_counter()
        if trained.task == "instance":
            arrays, records = _predict_instances(trained, image, score_thresh)
            predictions[path.name] = records
            found = f"{len(records)} instances"
        else:
            arrays, records = _predict_semantic(trained, image)
            found = ", ".join(records[0]["classes"])
        seconds = time.perf_counter() - start
        for kind, array in arrays.items():
            _save_png(array, out_dir / f"{stem}_{kind}.png")
        rows.append(
            {
                "image": str(path),
                "size": f"{image.shape[2]}x{image.shape[1]}",
                "found": found,
                "seconds": round(seconds, 3),
            }
        )
    if trained.task == "instance":
        text = json.dumps({"images": predictions}, indent=1)
        atomic_write(out_dir / "predictions.json", lambda f: f.write(text), binary=False)
    return rows, failures
