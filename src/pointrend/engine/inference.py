"""Trained models for inference: load one from a checkpoint, predict on image files.

``pointrend eval``, ``pointrend predict``, the demo and export all start from
:func:`load_trained_model`: the config the checkpoint holds (or one given), the model it
describes, the weights loaded with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data.images import IMAGE_SUFFIXES, read_image, read_pixels, to_float_image
from .build import build_model
from .checkpoint import CheckpointError, atomic_write, load_checkpoint, load_model_weights
from .config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
    with_checkpoint_model,
)
from .distributed import DeviceError, resolve_device
from .photos import detect_photo, draw_instances, instance_records

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
    device: torch.device = torch.device("cpu")

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


ZOO_PREFIX = "zoo:"


def checkpoint_file(weights: str | Path) -> Path:
    """The checkpoint file ``weights`` names: a path, or ``zoo:NAME`` for a published model
    (downloaded and converted once: :func:`~pointrend.engine.imported.converted_zoo_checkpoint`)."""
    text = str(weights)
    if not text.startswith(ZOO_PREFIX):
        return Path(weights)
    from ..interop.detectron2 import D2ImportError
    from .imported import converted_zoo_checkpoint

    try:
        return converted_zoo_checkpoint(text[len(ZOO_PREFIX) :])
    except D2ImportError as err:
        raise CheckpointError(f"--weights {text}: {err}") from err


def load_trained_model(
    weights: str | Path,
    config: str | Path | None = None,
    overrides: list[str] | None = None,
    device: str | torch.device | None = None,
) -> TrainedModel:
    """Build the model a checkpoint describes and load the checkpoint's weights.

    The model section is the checkpoint's own (:func:`with_checkpoint_model`); ``config`` gives
    the rest (the data), and ``config_notes`` list the model keys in which it differed.

    Args:
        weights: a checkpoint written by ``pointrend train`` (or a shipped one), or
            ``zoo:NAME`` for a published model (:func:`checkpoint_file`).
        config: a YAML config for the data; its model section counts only for a checkpoint
            that holds no config.
        overrides: ``key=value`` overrides applied last, model keys included, e.g.
            ``model.options.mask_output_size=112``.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (:func:`~.distributed.resolve_device`);
            ``None``: the config's ``device`` (``auto`` unless it says otherwise).
    """
    weights = checkpoint_file(weights)
    ckpt = load_checkpoint(weights)
    given = load_config(config) if config is not None else None
    cfg, notes = with_checkpoint_model(given, ckpt.get("config"), str(weights))
    if overrides:
        cfg = config_from_dict(config_to_dict(cfg), overrides, where="--set")
    state = ckpt.get("model", ckpt)
    num_classes = cfg.model.num_classes or ckpt.get("num_classes")
    num_classes = int(num_classes or num_classes_from_state(cfg.model.task, state))
    try:
        device = resolve_device(cfg.device if device is None else device)
    except DeviceError as err:
        raise ConfigError(str(err)) from err
    model = build_model(cfg.model, num_classes, initial_weights=False)
    load_model_weights(model, weights)
    model.to(device).eval()
    names = list(ckpt.get("class_names") or [str(k) for k in range(num_classes)])
    to_category = ckpt.get("label_to_category_id")
    to_category = {int(k): int(v) for k, v in to_category.items()} if to_category else None
    return TrainedModel(
        model, cfg, num_classes, names, ckpt.get("iteration"), notes, to_category, device
    )


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


@torch.no_grad()
def _predict_instances(trained: TrainedModel, pixels: torch.Tensor, score_thresh: float):
    """One image's id map, overlay and records; the model sees ``pixels`` (``3 x H x W``)
    shrunk as its transform would, and renders only detections scoring ``>= score_thresh``
    (box-local masks, pasted at ``H x W`` one chunk at a time: never ``R x H x W`` floats)."""
    out, keep = detect_photo(trained.model, pixels, score_thresh, trained.device)
    ids, overlay, rles = draw_instances(out, keep, pixels)
    boxes, labels = out["boxes"][keep].cpu(), out["labels"][keep].cpu()
    scores = out["scores"][keep].float().cpu()
    records = instance_records(trained, rles, boxes, labels, scores)
    overlay = _label_overlay(trained, overlay, boxes, labels, scores)
    return {"instances": ids, "overlay": overlay}, records


def _label_overlay(trained: TrainedModel, overlay, boxes, labels, scores):
    """The overlay with each kept detection's box, class name and score, in the colours and
    drawing order (best on top) of its mask."""
    from ..viz import label_instances, palette

    order = torch.argsort(scores, stable=True)  # as draw_instances draws the masks
    names = trained.class_names
    texts = [
        f"{names[k] if k < len(names) else k} {v:.2f}"
        for k, v in zip(labels[order].tolist(), scores[order].tolist())
    ]
    return label_instances(overlay, boxes[order], texts, palette(len(order)))


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


PREDICT_RECORDS = ("predictions.json", "predictions.jsonl", "predict.incomplete")


def _prepare_predict_folder(
    out_dir: Path, targets: list[Path], inputs: list[Path], overwrite: bool
) -> None:
    """Refuse to write over an input (flag or not) or, without ``overwrite``, over an earlier
    run's files; with ``overwrite`` the earlier run's records are deleted first (its PNGs are
    replaced as this run writes them)."""
    from .outputs import OutputExistsError, check_outputs

    records = [out_dir / name for name in PREDICT_RECORDS]
    check_outputs([*targets, *records], inputs, overwrite=True)  # inputs, folders, devices
    found = [p for p in [*records, *targets] if p.exists()]
    if found and not overwrite:
        raise OutputExistsError(
            f"{out_dir} holds an earlier predict run ({found[0].name} found): pass --overwrite "
            "to replace it, or choose another output folder; nothing was changed"
        )
    for p in records:
        p.unlink(missing_ok=True)


class _RecordLog:
    """``predictions.jsonl``: one JSON line per finished image, flushed and fsync'ed, so that a
    killed run keeps every image finished before; ``predict.incomplete`` marks the folder until
    the run ends."""

    def __init__(self, out_dir: Path):
        self.marker = out_dir / "predict.incomplete"
        note = "a predict run started here and has not finished; predictions.jsonl holds the "
        note += "images finished so far\n"
        atomic_write(self.marker, lambda f: f.write(note), binary=False)
        self.file = open(out_dir / "predictions.jsonl", "w")  # noqa: SIM115

    def add(self, name: str, path: Path, record) -> None:
        self.file.write(json.dumps({"image": name, "file": str(path), "result": record}) + "\n")
        self.file.flush()
        os.fsync(self.file.fileno())

    def close(self, complete: bool) -> None:
        self.file.close()
        if complete:
            self.marker.unlink(missing_ok=True)


def _write_predictions(
    trained: TrainedModel, predictions: dict, files: dict, path: Path, complete: bool = True
) -> None:
    source = (
        "dataset category ids"
        if trained.label_to_category_id
        else "model labels (the checkpoint records no label -> category id map)"
    )
    text = json.dumps(
        {"category_ids": source, "complete": complete, "images": predictions, "files": files},
        indent=1,
    )
    atomic_write(path, lambda f: f.write(text), binary=False)


def predict_images(
    trained: TrainedModel,
    paths: list[Path],
    out_dir: str | Path,
    score_thresh: float = 0.5,
    progress: bool = True,
    overwrite: bool = False,
    exif_orientation: bool = True,
) -> tuple[list[dict], list[tuple[Path, str]]]:
    """Predict every image and write ``<name>_overlay.png`` plus the masks for each.

    ``<name>`` is the file's stem, made distinct with ``_1``, ``_2``, ... when inputs share one
    (see :func:`output_stems`). Instance models write ``<name>_instances.png`` (16-bit id map,
    0 = none, id ``i`` is entry ``i`` of the image's list) and ``predictions.json``:
    ``{"images": {"<name><suffix>": [COCO-style results with RLE masks]}, "files":
    {"<name><suffix>": input path}, "category_ids": ..., "complete": bool}``; an image with no
    detection scoring at least ``score_thresh`` gets an empty list and its overlay.
    ``category_id`` is the dataset's category id when the checkpoint records the label ->
    category id map, the model's label otherwise (``"category_ids"`` says which). Semantic models
    write ``<name>_labels.png`` (class index per pixel).

    Both write ``predictions.jsonl`` as they go (one line per finished image: ``image``,
    ``file``, ``result``), and ``predict.incomplete`` until the run ends: a killed run leaves the
    marker and every finished image's line. ``out_dir`` is held locked for the run; an output
    that is an input is refused, and an earlier run's files are replaced only with ``overwrite``
    (:func:`_prepare_predict_folder`).

    Images are read turned upright as their EXIF orientation says (``exif_orientation=False``:
    as stored); masks, boxes and PNGs are in that orientation. Only detections scoring at least
    ``score_thresh`` are rendered (the model's box threshold is raised for the call).

    Returns one summary row per image written and the ``(path, error)`` of those that failed:
    an image that cannot be read or predicted is reported and the others are still processed.
    ``predictions.json`` is written even when the loop stops early (interrupt, crash), with
    every image done before and ``"complete": false``.
    """
    from .outputs import hold_folder

    out_dir = Path(out_dir)
    stems = output_stems(paths)
    kinds = ("instances", "overlay") if trained.task == "instance" else ("labels", "overlay")
    targets = [out_dir / f"{stem}_{kind}.png" for stem in stems for kind in kinds]
    with hold_folder(out_dir):
        _prepare_predict_folder(out_dir, targets, paths, overwrite)
        items = list(zip(paths, stems))
        return _predict_all(trained, items, out_dir, score_thresh, progress, exif_orientation)


def _predict_all(
    trained: TrainedModel, items: list, out_dir: Path, score_thresh, progress, exif: bool
):
    """The loop of :func:`predict_images` (folder checked and held; ``exif``: apply the EXIF
    orientation)."""
    rows, failures, predictions, files = [], [], {}, {}
    log = _RecordLog(out_dir)
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="predict", dynamic_ncols=True)
    complete = False
    try:
        for path, stem in items:
            try:
                row, records = _predict_one(trained, path, stem, out_dir, score_thresh, exif)
            except CheckpointError:  # an output that cannot be written stops the run
                raise
            except (ValueError, RuntimeError) as err:
                failures.append((path, _first_line(err)))
                continue
            rows.append(row)
            log.add(stem + path.suffix, path, records if records is not None else row["found"])
            if records is not None:
                predictions[stem + path.suffix] = records
                files[stem + path.suffix] = str(path)
        complete = True
    finally:
        if trained.task == "instance":
            path = out_dir / "predictions.json"
            _write_predictions(trained, predictions, files, path, complete)
        log.close(complete)
    return rows, failures
