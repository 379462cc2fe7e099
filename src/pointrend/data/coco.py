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
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from torch.utils.data import Dataset

from .images import ImageError, image_size, read_image, size_matches

__all__ = [
    "encode_masks",
    "instance_annotations",
    "make_coco",
    "load_coco",
    "CocoInstanceDataset",
    "DataError",
    "raise_problems",
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


def instance_annotations(
    masks: np.ndarray, labels, image_id: int, first_id: int, iscrowd=None
) -> list[dict]:
    """COCO annotations (RLE, XYWH box, area, iscrowd) for one image's ``N x H x W`` masks;
    ``iscrowd``: ``N`` flags (default: none is crowd)."""
    rles = encode_masks(masks)
    crowd = np.zeros(len(rles), bool) if iscrowd is None else np.asarray(iscrowd, bool)
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
                "iscrowd": int(crowd[k]),
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


def raise_problems(where: str | Path, problems: list[str], limit: int = 12) -> None:
    """Raise one :class:`DataError` listing every problem found (the first ``limit`` spelled
    out, the rest counted), or nothing when there is none."""
    if not problems:
        return
    if len(problems) == 1:
        raise DataError(f"{where}: {problems[0]}")
    shown = "; ".join(problems[:limit])
    more = f"; ... and {len(problems) - limit} more" if len(problems) > limit else ""
    raise DataError(f"{where}: {len(problems)} problems: {shown}{more}")


def _segmentation_problem(seg, img: dict) -> str | None:
    """Why a segmentation is malformed, as the rest of a sentence after "annotation <id>"
    (``None``: it is well formed)."""
    polygons = isinstance(seg, list) and all(
        isinstance(p, list) and len(p) >= 6 and len(p) % 2 == 0 for p in seg
    )
    rle = isinstance(seg, dict) and "counts" in seg and "size" in seg
    if not (polygons or rle):
        return f" has a malformed segmentation: {str(seg)[:80]}"
    if rle and list(seg["size"]) != [img.get("height"), img.get("width")]:
        return (
            f": RLE size {seg['size']} differs from image {img['id']} "
            f"({img.get('height')} x {img.get('width')})"
        )
    return None


def _mask_is_empty(seg) -> bool:
    """Whether a well-formed segmentation covers no pixel: no polygon, or an RLE of area 0."""
    if isinstance(seg, list):
        return len(seg) == 0
    counts = seg["counts"]
    if isinstance(counts, list):  # uncompressed RLE: runs alternate background, foreground
        return sum(counts[1::2]) == 0
    return int(mask_utils.area(seg)) == 0


def _unusable_reason(ann: dict) -> str | None:
    """Why a well-formed annotation holds no instance to train on (``None``: it does)."""
    w, h = ann.get("bbox", [0, 0, 0, 0])[2:]
    if ann.get("area", 1) <= 0 or w <= 0 or h <= 0:
        return "of zero area"
    if _mask_is_empty(ann["segmentation"]):
        return "with an empty mask (area and box say otherwise)"
    return None


class CocoInstanceDataset(Dataset):
    """A COCO-format instance dataset as torchvision-style ``(image, target)`` pairs.

    * Segmentations may be polygons, RLE or uncompressed RLE.
    * ``iscrowd`` annotations are not training instances (as COCO's own evaluation treats
      them): they are left out of ``boxes`` / ``labels`` / ``masks``.
    * Images without annotations are kept: training must see negatives.
    * Annotations of zero area or box, and annotations whose mask is empty (``"segmentation":
      []``, or an RLE covering no pixel), are skipped; their count is ``num_skipped`` (one
      warning that gives the reasons and ids). ``coco``, the ground truth evaluation scores
      against, is the file without them.
    * Images are read by :func:`pointrend.data.images.read_image` (16-bit images by their range;
      EXIF orientation applied unless the annotation's width and height match only the stored
      orientation, then the stored pixels are used).

    ``target``: ``boxes`` (``N x 4`` XYXY float32), ``labels`` (``N`` int64 in ``1..K``),
    ``masks`` (``N x H x W`` uint8), ``image_id`` (int).

    Everything that can be checked without decoding pixels is checked on construction and
    every problem is listed in one :class:`DataError` naming the file and ids: annotations of an
    unknown image or category, malformed segmentations, boxes outside their image, and image
    files that are missing, unreadable or of another size than the annotation file says (read
    from their headers).
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
        problems, skipped = self._check_annotations()
        raise_problems(self.annotation_file, problems + self._check_image_files())
        self.num_skipped = sum(len(ids) for ids in skipped.values())
        if self.num_skipped:
            self.coco = _without(self.coco, {aid for ids in skipped.values() for aid in ids})
            reasons = ", ".join(
                f"{len(ids)} {reason} (ids {', '.join(map(str, ids[:10]))})"
                for reason, ids in skipped.items()
            )
            warnings.warn(
                f"{self.annotation_file}: skipped {self.num_skipped} annotations: {reasons}",
                stacklevel=2,
            )

    def _check_annotations(self) -> tuple[list[str], dict[str, list]]:
        """``(problems, {reason: ids of skipped annotations})``; fills ``self.instances``
        (per image id, the annotations that are training instances)."""
        problems: list[str] = []
        skipped: dict[str, list] = {}
        self.instances: dict[int, list[dict]] = {i: [] for i in self.coco.imgs}
        for ann in self.coco.dataset["annotations"]:
            aid = ann.get("id")
            if ann.get("image_id") not in self.coco.imgs:
                problems.append(f"annotation {aid} refers to unknown image {ann.get('image_id')}")
                continue
            if ann.get("category_id") not in self.coco.cats:
                problems.append(
                    f"annotation {aid} refers to unknown category {ann.get('category_id')}"
                )
                continue
            img = self.coco.imgs[ann["image_id"]]
            problem = _segmentation_problem(ann.get("segmentation"), img)
            if problem is None:
                problem = _box_problem(ann, img)
            if problem is not None:
                problems.append(f"annotation {aid}{problem}")
                continue
            reason = _unusable_reason(ann)
            if reason is not None:
                skipped.setdefault(reason, []).append(aid)
            elif not ann.get("iscrowd", 0):
                self.instances[ann["image_id"]].append(ann)
        return problems, skipped

    def _check_image_files(self) -> list[str]:
        """Problems of the image files: missing, unreadable, or of another size (headers)."""
        problems = []
        for image_id in self.image_ids:
            info = self.coco.imgs[image_id]
            path = self.image_dir / str(info.get("file_name"))
            try:
                size = image_size(path)
                if size_matches(path, (info.get("height"), info.get("width"))):
                    continue  # as shown (EXIF orientation) or as stored: read_image picks
            except ImageError as err:
                problems.append(f"image {image_id}: {err}{self._doubled_folder_hint(path)}")
                continue
            if size != (info.get("height"), info.get("width")):
                problems.append(
                    f"image {image_id}: {path} is {size[1]} x {size[0]} (W x H) but the "
                    f"annotation file says {info.get('width')} x {info.get('height')}"
                )
        return problems

    def _doubled_folder_hint(self, missing: Path) -> str:
        """A hint when a missing image exists one folder up: ``file_name`` already starts with
        the folder ``images`` names (``images/1.png`` joined with ``.../images``)."""
        relative = missing.relative_to(self.image_dir)
        if not missing.exists() and (self.image_dir.parent / relative).is_file():
            return (
                f" (but {self.image_dir.parent / relative} exists: the file names already start "
                f"with {relative.parts[0]!r}, so set images to {self.image_dir.parent})"
            )
        return ""

    def check_num_classes(self, num_classes: int) -> None:
        """Raise a :class:`DataError` if an annotation's label falls outside a model of
        ``num_classes`` classes (background included), naming the image, annotation and
        category id."""
        bad = [
            (ann, self.category_id_to_label[ann["category_id"]])
            for anns in self.instances.values()
            for ann in anns
            if self.category_id_to_label[ann["category_id"]] >= num_classes
        ]
        if not bad:
            return
        ann, label = bad[0]
        raise DataError(
            f"{self.annotation_file}: {len(bad)} annotations are outside the model's "
            f"{num_classes} classes, e.g. annotation {ann.get('id')} of image {ann['image_id']}: "
            f"category {ann['category_id']} is label {label} (the file has "
            f"{len(self.categories)} categories, the model needs num_classes "
            f"{self.num_classes}; leave model.num_classes unset to take it from the data)"
        )

    def __len__(self) -> int:
        return len(self.image_ids)

    def load_image(self, image_id: int) -> torch.Tensor:
        """Image ``image_id`` as ``3 x H x W`` float32 in ``[0, 1]`` (its size was checked
        against the annotation file on construction)."""
        info = self.coco.imgs[image_id]
        path = self.image_dir / info["file_name"]
        try:
            return read_image(path, annotated_size=(info["height"], info["width"]))
        except ImageError as err:
            raise DataError(f"image {image_id}: {err}") from err

    def __getitem__(self, index: int):
        image_id = self.image_ids[index]
        image = self.load_image(image_id)
        info = self.coco.imgs[image_id]
        anns = self.instances[image_id]
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


def _without(coco: COCO, annotation_ids: set) -> COCO:
    """``coco`` without the annotations of ``annotation_ids``."""
    kept = [a for a in coco.dataset["annotations"] if a.get("id") not in annotation_ids]
    return make_coco({**coco.dataset, "annotations": kept})


def _box_problem(ann: dict, img: dict, tol: float = 1.0) -> str | None:
    """Why an annotation's box is malformed or outside its image, as the rest of a sentence
    after "annotation <id>" (``None``: it is fine)."""
    box = ann.get("bbox", [0, 0, 0, 0])
    if not (isinstance(box, list) and len(box) == 4):
        return f": bbox must be [x, y, width, height], got {str(box)[:80]}"
    x, y, w, h = box
    width, height = img.get("width"), img.get("height")
    if width is None or height is None:
        return f": image {img['id']} has no width / height"
    if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
        return f": box {box} lies outside image {img['id']} ({width} x {height})"
    return None
