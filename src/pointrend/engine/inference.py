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
from PIL import Image
from pycocotools import mask as mask_utils
from torch import Tensor, nn

from ..data.images import IMAGE_SUFFIXES, read_image, read_pixels, resize_to_float, to_float_image
from ..instance.compact import binary_mask_chunks
from .build import build_model
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, load_model_weights
from .config import (
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    with_checkpoint_model,
)
from .evaluate import detect

__all__ = [
    "TrainedModel",
    "load_trained_model",
    "num_classes_from_state",
    "list_images",
    "read_image",
    "predict_images",
    "IMAGE_SUFFIXES",
    "output_stems",
]


@dataclasses.dataclass
class TrainedModel:
    """A model ready for inference (eval mode) and what is known about it.

    ``label_to_category_id``: instance models, the model's label -> the training annotation
    file's category id (``None`` when the checkpoint does not record it).
    """

    model: nn.Module
    config: TrainConfig
    num_classes: int
    class_names: list[str]
    iteration: int | None
    # model keys in which the config given differed from the checkpoint's (the checkpoint's won)
    config_notes: list[str] = dataclasses.field(default_factory=list)
    label_to_category_id: dict[int, int] | None = None

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
    """Build the model a checkpoint describes and load the checkpoint's weights.

    The model section is the checkpoint's own (:func:`with_checkpoint_model`); ``config`` gives
    the rest (the data), and ``config_notes`` list the model keys in which it differed.

    Args:
        weights: a checkpoint written by ``pointrend train`` (or a shipped one).
        config: a YAML config for the data; its model section counts only for a checkpoint
            that holds no config.
        overrides: ``key=value`` overrides applied last, model keys included, e.g.
            ``model.options.mask_output_size=112``.
    """
    ckpt = load_checkpoint(weights)
    given = load_config(config) if config is not None else None
    cfg, notes = with_checkpoint_model(given, ckpt.get("config"), str(weights))
    if overrides:
        cfg = config_from_dict(config_to_dict(cfg), overrides, where="--set")
    state = ckpt.get("model", ckpt)
    num_classes = cfg.model.num_classes or ckpt.get("num_classes")
    num_classes = int(num_classes or num_classes_from_state(cfg.model.task, state))
    model = build_model(cfg.model, num_classes, initial_weights=False)
    load_model_weights(model, weights)
    model.to(device).eval()
    names = list(ckpt.get("class_names") or [str(k) for k in range(num_classes)])
    to_category = ckpt.get("label_to_category_id")
    to_category = {int(k): int(v) for k, v in to_category.items()} if to_category else None
    return TrainedModel(model, cfg, num_classes, names, ckpt.get("iteration"), notes, to_category)


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


def output_stems(paths: list[Path]) -> list[str]:
    """One distinct output name per input, in order: the file's stem, or ``stem_1``,
    ``stem_2``, ... when an earlier input already took it (``a/x.png`` and ``b/x.png``)."""
    used: set[str] = set()
    stems = []
    for path in paths:
        stem, k = path.stem, 1
        while stem in used:
            stem, k = f"{path.stem}_{k}", k + 1
        used.add(stem)
        stems.append(stem)
    return stems


def _save_png(array: np.ndarray, path: Path) -> None:
    # zlib level 1: a 48-megapixel overlay is written in a few seconds, not twenty
    atomic_write(path, lambda f: Image.fromarray(array).save(f, format="PNG", compress_level=1))


def _instance_records(trained: TrainedModel, rles, boxes, labels, scores) -> list[dict]:
    """COCO-style result dicts of one image's kept detections (``category_id``: the dataset's
    id when the checkpoint records the map, else the model's label)."""
    to_category = trained.label_to_category_id or {}
    names = trained.class_names
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    records = []
    for i, (rle, label, score, box) in enumerate(zip(rles, labels.tolist(), scores.tolist(), xywh)):
        records.append(
            {
                "instance_id": i + 1,
                "category_id": int(to_category.get(label, label)),
                "category": names[label] if label < len(names) else "",
                "score": round(float(score), 5),
                "bbox": [round(v, 2) for v in box],
                "segmentation": rle,
            }
        )
    return records


def resized_size(model: nn.Module, size: tuple[int, int]) -> tuple[int, int] | None:
    """``(h, w)`` the model's transform resizes an image of ``size`` to, when it shrinks it and
    leaves an image of ``(h, w)`` as it is (``None`` otherwise: no transform, training mode, or
    a size the transform would resize again). Read from the transform itself on a ``meta``
    tensor (no pixels)."""
    transform = getattr(model, "transform", None)
    if transform is None or transform.training or not hasattr(transform, "resize"):
        return None
    try:
        once = tuple(transform.resize(torch.empty(3, *size, device="meta"))[0].shape[-2:])
        twice = tuple(transform.resize(torch.empty(3, *once, device="meta"))[0].shape[-2:])
    except (RuntimeError, NotImplementedError, ValueError, TypeError):
        return None
    if once != twice or once[0] * once[1] >= size[0] * size[1]:
        return None
    return int(once[0]), int(once[1])


def model_input(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The float image to give ``model`` for ``pixels`` (``3 x H x W`` from
    :func:`~pointrend.data.images.read_pixels`): shrunk to the size the model's transform would
    resize it to before the conversion to float (:func:`resize_to_float`, the same
    interpolation), so that a large photo is never held as float32 at full size."""
    size = resized_size(model, tuple(pixels.shape[-2:]))
    if size is None:
        return to_float_image(pixels)
    antialias = getattr(model.transform, "resize_rule", "torchvision") == "detectron2"
    return resize_to_float(pixels, size, antialias=antialias)


def _draw_on_top(rank: Tensor, masks: Tensor, first: int) -> None:
    """Draw ``masks`` (``k x h x w`` uint8, drawing positions ``first + 1``, ... ``first + k``)
    over ``rank`` (``h x w``, the drawing position of the top mask, 0: none), in place."""
    if masks.shape[0] == 1:
        rank.masked_fill_(masks[0].bool(), first + 1)
        return
    local = torch.arange(1, masks.shape[0] + 1, dtype=torch.uint8)[:, None, None]
    top = (masks * local).amax(0)  # the last of the chunk covering a pixel, 1-based
    rank.copy_(torch.where(top > 0, top.to(rank.dtype) + first, rank))


def _draw_instances(out: dict, keep: torch.Tensor, pixels: torch.Tensor):
    """``(id map, overlay, RLEs)`` of the kept detections (``keep``: their indices, in the
    output's order) pasted one chunk at a time: the ``H x W`` uint16 id map (``i + 1`` for
    kept detection ``i``, the best-scoring on top, 0 = none), the ``H x W x 3`` uint8 overlay
    and one COCO RLE per kept detection."""
    from ..viz import overlay_ranked

    H, W = pixels.shape[-2:]
    scores = out["scores"][keep].cpu()
    order = torch.argsort(scores, stable=True)  # worst first: the best is drawn last, on top
    # W x H: the masks' own column-major layout (drawing order + 1 of the top mask, 0: none)
    dtype = torch.uint8 if len(keep) < 256 else torch.int32
    rank_t = torch.zeros(W, H, dtype=dtype)
    rles: list = [None] * len(keep)
    budget = min(1 << 26, 255 * H * W)  # <= 255 masks a chunk: uint8 positions below
    for positions, masks, (y0, y1, x0, x1) in binary_mask_chunks(
        out, keep[order], max_bytes=budget
    ):
        masks_t = masks.cpu().transpose(1, 2)  # k x W x H, contiguous
        encoded = mask_utils.encode(np.asfortranarray(masks_t.permute(2, 1, 0).numpy()))
        for position, rle in zip(positions.tolist(), encoded):
            rle["counts"] = rle["counts"].decode("ascii")
            rles[int(order[position])] = rle
        if y1 > y0 and x1 > x0:
            _draw_on_top(rank_t[x0:x1, y0:y1], masks_t[:, x0:x1, y0:y1], int(positions[0]))
    rank = rank_t.numpy().T  # H x W view
    lookup = np.concatenate([[0], order.numpy() + 1]).astype(np.uint16)
    ids = lookup[rank]  # score rank -> instance id, H x W
    overlay = overlay_ranked(pixels, rank, len(keep))
    return ids, overlay, rles


@torch.no_grad()
def _predict_instances(trained: TrainedModel, pixels: torch.Tensor, score_thresh: float):
    """One image's id map, overlay and records; the model sees ``pixels`` (``3 x H x W``)
    shrunk as its transform would, and renders only detections scoring ``>= score_thresh``
    (box-local masks, pasted at ``H x W`` one chunk at a time: never ``R x H x W`` floats)."""
    model = trained.model
    image = model_input(model, pixels).to(next(model.parameters()).device)
    size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
    out = detect(model, [image], [size], compact=True, score_thresh=score_thresh)[0]
    keep = torch.nonzero(out["scores"].cpu() >= score_thresh)[:, 0]
    ids, overlay, rles = _draw_instances(out, keep, pixels)
    boxes, labels = out["boxes"][keep].cpu(), out["labels"][keep].cpu()
    records = _instance_records(trained, rles, boxes, labels, out["scores"][keep].cpu())
    return {"instances": ids, "overlay": overlay}, records


@torch.no_grad()
def _predict_semantic(trained: TrainedModel, pixels: torch.Tensor):
    from ..viz import overlay_labels

    image = to_float_image(pixels)
    logits = trained.model(image[None].to(next(trained.model.parameters()).device))["out"]
    del image
    H, W = logits.shape[-2:]
    labels = np.empty((H, W), np.uint8)  # class indices, a band of rows at a time (no int64 map)
    for start in range(0, H, 256):
        labels[start : start + 256] = logits[0, :, start : start + 256].argmax(0).cpu().numpy()
    del logits
    overlay = overlay_labels(pixels, labels, trained.num_classes)
    present = np.unique(labels)
    names = [trained.class_names[c] if c < len(trained.class_names) else str(c) for c in present]
    return {"labels": labels, "overlay": overlay}, [{"classes": names}]


def _predict_one(
    trained: TrainedModel, path: Path, stem: str, out_dir: Path, score_thresh, exif=True
):
    """Predict one image and write its PNGs; ``(summary row, instance records or None)``."""
    pixels = read_pixels(path, exif_orientation=exif)
    start = time.perf_counter()
    if trained.task == "instance":
        arrays, records = _predict_instances(trained, pixels, score_thresh)
        found = f"{len(records)} instances"
    else:
        arrays, records = _predict_semantic(trained, pixels)
        found, records = ", ".join(records[0]["classes"]), None
    seconds = time.perf_counter() - start
    size = f"{pixels.shape[2]}x{pixels.shape[1]}"
    del pixels  # a large photo's pixels are not kept while the PNGs are encoded
    for kind in list(arrays):
        _save_png(arrays.pop(kind), out_dir / f"{stem}_{kind}.png")
    row = {
        "image": str(path),
        "size": size,
        "found": found,
        "seconds": round(seconds, 3),
    }
    return row, records


def _first_line(err: Exception) -> str:
    """The first line of an error's message (its type when the message is empty)."""
    lines = str(err).strip().splitlines()
    return lines[0] if lines else type(err).__name__


def _write_predictions(trained: TrainedModel, predictions: dict, files: dict, path: Path) -> None:
    source = (
        "dataset category ids"
        if trained.label_to_category_id
        else "model labels (the checkpoint records no label -> category id map)"
    )
    text = json.dumps({"category_ids": source, "images": predictions, "files": files}, indent=1)
    atomic_write(path, lambda f: f.write(text), binary=False)


def predict_images(
    trained: TrainedModel,
    paths: list[Path],
    out_dir: str | Path,
    score_thresh: float = 0.5,
    progress: bool = True,
    exif_orientation: bool = True,
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Predict every image and write ``<name>_overlay.png`` plus the masks for each.

    ``<name>`` is the file's stem, made distinct with ``_1``, ``_2``, ... when inputs share one
    (see :func:`output_stems`). Instance models write ``<name>_instances.png`` (16-bit id map,
    0 = none, id ``i`` is entry ``i`` of the image's list) and ``predictions.json``:
    ``{"images": {"<name><suffix>": [COCO-style results with RLE masks]}, "files":
    {"<name><suffix>": input path}, "category_ids": ...}``; an image with no detection scoring
    at least ``score_thresh`` gets an empty list and its overlay. ``category_id`` is the
    dataset's category id when the checkpoint records the label -> category id map, the model's
    label otherwise (``"category_ids"`` says which). Semantic models write
    ``<name>_labels.png`` (class index per pixel).

    Images are read turned upright as their EXIF orientation says (``exif_orientation=False``:
    as stored); masks, boxes and PNGs are in that orientation. Only detections scoring at least
    ``score_thresh`` are rendered (the model's box threshold is raised for the call).

    Returns one summary row per image written and the ``(path, error)`` of those that failed:
    an image that cannot be read or predicted is reported and the others are still processed.
    ``predictions.json`` is written even when the loop stops early (interrupt, crash), with
    every image done before.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows, failures, predictions, files = [], [], {}, {}
    items = list(zip(paths, output_stems(paths)))
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="predict", dynamic_ncols=True)
    try:
        for path, stem in items:
            try:
                row, records = _predict_one(
                    trained, path, stem, out_dir, score_thresh, exif_orientation
                )
            except (ValueError, RuntimeError) as err:
                failures.append((path, _first_line(err)))
                continue
            rows.append(row)
            if records is not None:
                predictions[stem + path.suffix] = records
                files[stem + path.suffix] = str(path)
    finally:
        if trained.task == "instance":
            _write_predictions(trained, predictions, files, out_dir / "predictions.json")
    return rows, failures
