"""Write the synthetic datasets to disk: COCO format (instance) or image/label folders (semantic)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from .coco import instance_annotations
from .shapes import CATEGORIES
from .synthetic import SEMANTIC_CLASSES, render_sample

__all__ = ["write_synthetic_dataset"]


def _save_png(array: np.ndarray, path: Path) -> None:
    # fixed PNG settings and no metadata: the same seed gives byte-identical files
    Image.fromarray(array).save(path, format="PNG", optimize=False, compress_level=6)


def write_synthetic_dataset(
    task: str, out: str | Path, num_images: int, size: int, seed: int = 0, progress: bool = False
) -> Path:
    """Write ``num_images`` synthetic images of ``size x size`` to ``out``.

    * ``instance``: ``out/images/NNNNNN.png`` and ``out/annotations.json`` (COCO: RLE masks,
      XYWH boxes, areas, categories ``1..7``).
    * ``semantic``: ``out/images/NNNNNN.png``, ``out/labels/NNNNNN.png`` (uint8 class ids,
      0 = background) and ``out/classes.json``.

    Returns the path of the annotation file (instance) or of ``classes.json`` (semantic).
    """
    if task not in ("instance", "semantic"):
        raise ValueError(f"task must be 'instance' or 'semantic', got {task!r}")
    if num_images < 1 or size < 16:
        raise ValueError(f"need num_images >= 1 and size >= 16, got {num_images} and {size}")
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    if task == "semantic":
        (out / "labels").mkdir(exist_ok=True)
    indices = range(num_images)
    if progress:
        from tqdm import tqdm

        indices = tqdm(indices, desc=f"synth {task}", dynamic_ncols=True)
    images, anns = [], []
    for i in indices:
        sample = render_sample(i, size, size, seed)
        name = f"{i:06d}.png"
        _save_png(sample.image, out / "images" / name)
        if task == "semantic":
            _save_png(sample.label_map().astype(np.uint8), out / "labels" / name)
            continue
        images.append({"id": i, "file_name": name, "width": size, "height": size})
        anns += instance_annotations(sample.masks, sample.labels.tolist(), i, len(anns) + 1)
    if task == "semantic":
        path = out / "classes.json"
        path.write_text(json.dumps(SEMANTIC_CLASSES))
        return path
    categories = [
        {"id": k, "name": n, "supercategory": "shape"} for k, n in enumerate(CATEGORIES, 1)
    ]
    path = out / "annotations.json"
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": categories}))
    return path
