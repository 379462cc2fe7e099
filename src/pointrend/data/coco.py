"""COCO-format instance data: encoding masks, building COCO objects, and a dataset reader.

Category ids of a COCO file are mapped to contiguous labels ``1..K`` (0 is the background, as
torchvision counts) in increasing id order; ``dataset.label_to_category_id`` maps back.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset

__all__ = [
    "encode_masks",
    "instance_annotations",
    "make_coco",
    "load_coco",
    "CocoInstanceDataset",
    "DataError",
]


class DataError(ValueError):
    """Bad data: the message names the file and the annotation or image id."""


def encode_masks(masks: np.ndarray) -> list[dict]:
    """``N x H x W`` boolean masks -> COCO RLEs with ``counts`` as str (JSON-ready)."""
    if len(masks) == 0:
        return []
    rles = mask_utils.encode(
        np.asfortranarray(np.moveaxis(np.asarray(masks, dtype=np.uint8), 0, -1))
    )
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def instance_annotations(masks: np.ndarray, labels, image_id: int, first_id: int) -> list[dict]:
    """COCO annotations (RLE, XYWH box, area, iscrowd 0) for one image's masks."""
    rles = encode_masks(masks)
    anns = []
    for k, (rle, label) in enumerate(zip(rles, labels)):
        anns.append(
            {
                "id": first_id + k,
                "image_id": int(image_id),
                "category_id": int(label),
                "segmentation": rle,
                "area": float(mask_utils.area(rle)),
                "bbox": [float(v) for v in mask_utils.toBbox(rle)],
                "iscrowd": 0,
            }
        )
    return anns


def make_coco(dataset: dict) -> COCO:
    """A pycocotools ``COCO`` from an in-memory dataset dict, without its console chatter."""
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_coco(annotation_file: str | Path) -> COCO:
    """Read a COCO annotation file; a clear error names the file when it cannot be read."""
    path = Path(annotation_file)
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable JSON file: {err}") from err
    for key in ("images", "annotations", "categories"):
        if key not in data or not isinstance(data[key], list):
            raise DataError(f"{path}: no '{key}' list")
    return make_coco(data)


class CocoInstanceDataset(Dataset):
    """A COCO-format instance dataset as torchvision-style ``(image, target)`` pairs.

    * Segmentations may be polygons, RLE or uncompressed RLE.
    * ``iscrowd`` annotations are not training instances (as COCO's own evaluation treats
      them): they are left out of ``boxes`` / ``labels`` / ``masks``.
    * Images without annotations are kept: training must see negatives.
    * Annotations of zero area are skipped; their count is ``num_skipped`` (one warning).

    ``target``: ``boxes`` (``N x 4`` XYXY float32), ``labels`` (``N`` int64 in ``1..K``),
    ``masks`` (``N x H x W`` uint8), ``image_id`` (int).

    Raises :class:`DataError` naming the file and id for an annotation of an unknown image or
    category, a malformed segmentation, a box outside its image, or a missing/unreadable image.
    """

    def __init__(self, image_dir: str | Path, annotation_file: str | Path, transforms=None):
        self.image_dir = Path(image_dir)
        self.annotation_file = Path(annotation_file)
        self.coco = load_coco(self.annotation_file)
        self.transforms = transforms
        cat_ids = sorted(self.coco.cats)
        self.category_id_to_label = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.label_to_category_id = {i + 1: c for i, c in enumerate(cat_ids)}
        self.categories = [self.coco.cats[c]["name"] for c in cat_ids]
        self.num_classes = len(cat_ids) + 1
        self.image_ids = sorted(self.coco.imgs)
        self.num_skipped = self._validate()
        if self.num_skipped:
            warnings.warn(
                f"{self.annotation_file}: skipped {self.num_skipped} annotations of zero area",
                stacklevel=2,
            )

    def _validate(self) -> int:
        where = self.annotation_file
        skipped = 0
        for ann in self.coco.dataset["annotations"]:
            aid = ann.get("id")
            if ann.get("image_id") not in self.coco.imgs:
                raise DataError(
                    f"{where}: annotation {aid} refers to unknown image {ann.get('image_id')}"
                )
            if ann.get("category_id") not in self.coco.cats:
                raise DataError(
                    f"{where}: annotation {aid} refers to unknown category {ann.get('category_id')}"
                )
            img = self.coco.imgs[ann["image_id"]]
            seg = ann.get("segmentation")
            ok = (
                isinstance(seg, list)
                and all(isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg)
            ) or (isinstance(seg, dict) and "counts" in seg and "size" in seg)
            if not ok:
                raise DataError(
                    f"{where}: annotation {aid} has a malformed segmentation: {str(seg)[:80]}"
                )
            if isinstance(seg, dict) and list(seg["size"]) != [img["height"], img["width"]]:
                raise DataError(
                    f"{where}: annotation {aid}: RLE size {seg['size']} differs from image "
                    f"{ann['image_id']} ({img['height']} x {img['width']})"
                )
            x, y, w, h = ann.get("bbox", [0, 0, 0, 0])
            tol = 1.0
            if x < -tol or y < -tol or x + w > img["width"] + tol or y + h > img["height"] + tol:
                raise DataError(
                    f"{where}: annotation {aid}: box {ann['bbox']} lies outside image "
                    f"{ann['image_id']} ({img['width']} x {img['height']})"
                )
            if ann.get("area", 1) <= 0 or w <= 0 or h <= 0:
                skipped += 1
        return skipped

    def __len__(self) -> int:
        return len(self.image_ids)

    def load_image(self, image_id: int) -> torch.Tensor:
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        try:
            with Image.open(path) as im:
                array = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as err:
            raise DataError(f"image {image_id}: cannot read {path}: {err}") from err
        if array.shape[:2] != (info["height"], info["width"]):
            raise DataError(
                f"image {image_id}: {path} is {array.shape[1]} x {array.shape[0]} but the annotation "
                f"file says {info['width']} x {info['height']}"
            )
        return torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255)

    def __getitem__(self, index: int):
        image_id = self.image_ids[index]
        image = self.load_image(image_id)
        info = self.coco.imgs[image_id]
        anns = [
            a
            for a in self.coco.imgToAnns.get(image_id, [])
            if not a.get("iscrowd", 0)
            and a.get("area", 1) > 0
            and a["bbox"][2] > 0
            and a["bbox"][3] > 0
        ]
        H, W = info["height"], info["width"]
        if anns:
            masks = np.stack([self.coco.annToMask(a) for a in anns]).astype(np.uint8)
            boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32)
            boxes[:, 2:] += boxes[:, :2]
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, W)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, H)
        else:
            masks = np.zeros((0, H, W), dtype=np.uint8)
            boxes = torch.zeros(0, 4)
        target = {
            "boxes": boxes,
            "labels": torch.tensor(
                [self.category_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64
            ),
            "masks": torch.from_numpy(masks),
            "image_id": int(image_id),
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target
