"""The Cityscapes tree: listing a split's files, and its instances read without conversion.

Layout (``root`` is the folder holding ``leftImg8bit`` and ``gtFine``)::

    root/leftImg8bit/SPLIT/CITY/CITY_SEQ_FRAME_leftImg8bit.png
    root/gtFine/SPLIT/CITY/CITY_SEQ_FRAME_gtFine_instanceIds.png   (or ..._gtFine_polygons.json)

Instance ids, as Cityscapes encodes them: a pixel of an individual object of a class with
instances holds ``label_id * 1000 + k``; a pixel of anything else holds the plain label id,
including a *group* region (a thing class annotated as ``cargroup``, ``persongroup``, ...: several
objects not told apart). The polygons JSON is rasterised into the same ids with cityscapesscripts'
own ``createInstanceImage`` (polygons drawn in file order, later ones on top).

The classes are the eight Cityscapes evaluates instances of (``hasInstances`` and not
``ignoreInEval`` in ``cityscapesscripts.helpers.labels``), in its label id order: person, rider,
car, truck, bus, train, motorcycle, bicycle. Model labels are ``1..8`` (0 is the background);
``label_to_category_id`` maps them to the Cityscapes label ids (24, 25, 26, 27, 28, 31, 32, 33).
Group regions are crowd: not training instances, and ignore regions when scoring.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.ops import masks_to_boxes

from .coco import DataError, instance_annotations, make_coco, raise_problems
from .images import ImageError, image_size, pair_size_problem, read_image

__all__ = [
    "CityscapesInstanceDataset",
    "cityscapes_pairs",
    "decode_instance_ids",
    "import_cityscapesscripts",
    "thing_labels",
]

IMAGE_SUFFIX = "_leftImg8bit.png"
INSTANCE_SUFFIXES = ("_gtFine_instanceIds.png", "_gtFine_polygons.json")
INSTANCE_ID_FACTOR = 1000  # instance pixel value = label_id * 1000 + instance number


def import_cityscapesscripts(module: str):
    """``cityscapesscripts.<module>``, or an ``ImportError`` saying how to install it."""
    try:
        return importlib.import_module(f"cityscapesscripts.{module}")
    except ImportError as err:
        raise ImportError(
            f"Cityscapes instances need the cityscapesscripts package ({err}): "
            f"pip install 'pointrend[cityscapes]'"
        ) from None


def thing_labels() -> list:
    """The ``Label`` tuples of the classes Cityscapes scores instances of, by label id."""
    labels = import_cityscapesscripts("helpers.labels").labels
    return sorted(
        (lb for lb in labels if lb.hasInstances and not lb.ignoreInEval), key=lambda lb: lb.id
    )


def cityscapes_pairs(
    root: str | Path, split: str, suffixes: Sequence[str], hint: str
) -> list[tuple[Path, Path]]:
    """``(image, annotation)`` for every image of a split, in file name order.

    The annotation of ``CITY/NAME_leftImg8bit.png`` is ``gtFine/SPLIT/CITY/NAME<suffix>`` for the
    first of ``suffixes`` that exists. A :class:`DataError` names the folder when there are no
    images, and counts the images without any annotation (``hint`` says how to make them).
    """
    root = Path(root)
    image_root, label_root = root / "leftImg8bit" / split, root / "gtFine" / split
    if not image_root.is_dir():
        raise DataError(f"Cityscapes images not found: {image_root}")
    images = sorted(image_root.glob(f"*/*{IMAGE_SUFFIX}"))
    if not images:
        raise DataError(f"no *{IMAGE_SUFFIX} images under {image_root}")
    pairs, missing = [], []
    for image in images:
        base = label_root / image.parent.name / image.name[: -len(IMAGE_SUFFIX)]
        found = [Path(f"{base}{s}") for s in suffixes if Path(f"{base}{s}").is_file()]
        if found:
            pairs.append((image, found[0]))
        else:
            missing.append(f"{base}{suffixes[0]}")
    if missing:
        raise DataError(
            f"{len(missing)} annotations ({' or '.join('*' + s for s in suffixes)}) missing, "
            f"e.g. {missing[0]} ({hint})"
        )
    return pairs


def read_index_png(path: Path, what: str) -> np.ndarray:
    """A single-channel PNG of indices (a label map, instance ids) as ``H x W`` int64; ``what``
    names it in the :class:`DataError` raised when it cannot be read or has channels."""
    try:
        with Image.open(path) as im:
            ids = np.asarray(im)
    except (OSError, ValueError) as err:
        raise DataError(f"cannot read {what} {path}: {err}") from err
    if ids.ndim != 2:
        raise DataError(f"{what} {path} must be a single-channel PNG, got shape {ids.shape}")
    return ids.astype(np.int64)


def _rasterise_polygons(path: Path) -> np.ndarray:
    """``H x W`` instance ids of a ``*_gtFine_polygons.json`` (cityscapesscripts' own drawing)."""
    annotation_cls = import_cityscapesscripts("helpers.annotation").Annotation
    draw = import_cityscapesscripts("preparation.json2instanceImg").createInstanceImage
    log = io.StringIO()
    try:
        annotation = annotation_cls()
        annotation.fromJsonFile(str(path))
        with contextlib.redirect_stdout(log):  # its errors print, then exit
            image = draw(annotation, "ids")
    except SystemExit:
        reason = log.getvalue().strip().splitlines()
        raise DataError(f"{path}: {reason[0] if reason else 'cannot be rasterised'}") from None
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a readable Cityscapes polygons file: {err}") from err
    return np.asarray(image).astype(np.int64)


def _is_point(p) -> bool:
    return isinstance(p, list | tuple) and len(p) == 2 and all(_is_number(c) for c in p)


def _is_number(c) -> bool:
    return isinstance(c, int | float) and not isinstance(c, bool)


def polygons_problem(image: Path, path: Path, label_names) -> str | None:
    """Why a ``*_gtFine_polygons.json`` cannot be rasterised for ``image`` (``None``: fine),
    checked without drawing: readable JSON, ``imgHeight`` / ``imgWidth`` equal to the image's
    header size, and every object a known label (or ``<label>group``) with a list of ``[x, y]``
    points, as cityscapesscripts' ``createInstanceImage`` requires."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # UnicodeDecodeError is a ValueError
        return f"{path}: not a readable Cityscapes polygons file: {err}"
    if not isinstance(data, dict) or not isinstance(data.get("objects"), list):
        return f"{path}: not a Cityscapes polygons file (no 'objects' list)"
    size = (data.get("imgHeight"), data.get("imgWidth"))
    try:
        if size != image_size(image):
            return f"{path} is {size} (imgHeight, imgWidth) but its image {image} is {image_size(image)}"
    except ImageError as err:
        return str(err)
    for k, obj in enumerate(data["objects"]):
        label = obj.get("label") if isinstance(obj, dict) else None
        base = (
            label[: -len("group")] if isinstance(label, str) and label.endswith("group") else label
        )
        if label not in label_names and base not in label_names:
            return f"{path}: objects[{k}]: label {label!r} is not a Cityscapes label"
        polygon = obj.get("polygon")
        if not isinstance(polygon, list) or not polygon or not all(map(_is_point, polygon)):
            return f"{path}: objects[{k}] ({label}): 'polygon' must be a list of [x, y] points"
    return None


def decode_instance_ids(ids: np.ndarray, label_ids: np.ndarray):
    """Regions of an ``H x W`` instance-id map of the classes ``label_ids`` (their Cityscapes
    ids, in label order): ``(masks N x H x W bool, labels N int64 in 1..K, crowd N bool)``, in
    increasing id order. Crowd regions are the groups: a thing class's plain label id."""
    values = np.unique(ids)
    label_id = np.where(values >= INSTANCE_ID_FACTOR, values // INSTANCE_ID_FACTOR, values)
    kept = np.isin(label_id, label_ids)
    values, label_id = values[kept], label_id[kept]
    labels = np.searchsorted(label_ids, label_id) + 1
    masks = ids[None] == values[:, None, None]
    return masks, labels.astype(np.int64), values < INSTANCE_ID_FACTOR


class CityscapesInstanceDataset(Dataset):
    """Cityscapes instances (``gtFine``) as torchvision-style ``(image, target)`` pairs.

    Each image's annotation is its ``*_gtFine_instanceIds.png``, or its ``*_gtFine_polygons.json``
    where the PNG was not generated (conventions: module doc). ``target``: ``boxes`` (``N x 4``
    XYXY float32, the pixel extent: ``x2 = last column + 1``), ``labels`` (``N`` int64 in
    ``1..8``), ``masks`` (``N x H x W`` uint8), ``image_id`` (the index); group regions are left
    out (:meth:`regions` has them, with their crowd flags). Images without instances are kept.

    ``coco`` is the ground truth as a COCO object (groups ``iscrowd``, category ids = Cityscapes
    label ids) for COCO-style scoring; :meth:`instance_id_files` gives the instance-id PNGs the
    Cityscapes evaluation reads. Image and PNG sizes are checked on construction (headers), and
    every polygons file is read and checked then (:func:`polygons_problem`), so that a broken one
    stops a run before its first iteration.
    """

    def __init__(self, root: str | Path, split: str = "train", transforms=None):
        self.root = Path(root)
        self.split = split
        self.transforms = transforms
        things = thing_labels()
        self.categories = [lb.name for lb in things]
        self.label_ids = np.array([lb.id for lb in things])
        self.label_to_category_id = {k + 1: lb.id for k, lb in enumerate(things)}
        self.num_classes = len(things) + 1
        self.pairs = cityscapes_pairs(
            self.root,
            split,
            INSTANCE_SUFFIXES,
            "download gtFine; cityscapesscripts' json2instanceImg makes the PNGs from the JSON",
        )
        names = set(import_cityscapesscripts("helpers.labels").name2label)
        problems = [  # headers of the PNGs, the whole of the (small) polygons files
            pair_size_problem(image, ann)
            if ann.suffix == ".png"
            else polygons_problem(image, ann, names)
            for image, ann in self.pairs
        ]
        raise_problems(self.root / "gtFine" / split, [p for p in problems if p])
        self.image_names = [image.name[: -len(IMAGE_SUFFIX)] for image, _ in self.pairs]

    def __len__(self) -> int:
        return len(self.pairs)

    def check_num_classes(self, num_classes: int) -> None:
        """Raise a :class:`DataError` if a model of ``num_classes`` classes (background
        included) cannot predict the eight Cityscapes classes."""
        if num_classes < self.num_classes:
            raise DataError(
                f"{self.root}: Cityscapes instances have {self.num_classes - 1} classes "
                f"({', '.join(self.categories)}) but the model has {num_classes} (background "
                f"included); leave model.num_classes unset to take it from the data"
            )

    def instance_ids(self, index: int) -> np.ndarray:
        """``H x W`` int64 instance ids of image ``index`` (from its PNG or its polygons)."""
        image, annotation = self.pairs[index]
        if annotation.suffix == ".png":
            return self._known_ids(read_index_png(annotation, "instance ids"), annotation)
        ids = _rasterise_polygons(annotation)
        with Image.open(image) as im:
            width, height = im.size
        if ids.shape != (height, width):
            raise DataError(
                f"{annotation} is {tuple(ids.shape)} (H x W) but its image {image} is "
                f"{(height, width)}"
            )
        return ids

    @cached_property
    def _label_ids(self) -> np.ndarray:
        return np.array(sorted(import_cityscapesscripts("helpers.labels").id2label))

    def _known_ids(self, ids: np.ndarray, path: Path) -> np.ndarray:
        """``ids``, when every value is a Cityscapes label id or ``label id * 1000 + k`` (what
        the Cityscapes evaluation can read); else a :class:`DataError` naming the file."""
        values = np.unique(ids)
        label_id = np.where(values >= INSTANCE_ID_FACTOR, values // INSTANCE_ID_FACTOR, values)
        unknown = values[~np.isin(label_id, self._label_ids)]
        if unknown.size:
            raise DataError(
                f"{path}: instance ids {unknown[:5].tolist()} are not Cityscapes ids (a label id, "
                "or label id * 1000 + k, as cityscapesscripts writes them)"
            )
        return ids

    def regions(self, index: int):
        """``(masks N x H x W bool, labels N int64 in 1..8, crowd N bool)`` of image ``index``:
        its individual objects and its group regions (``crowd``)."""
        return decode_instance_ids(self.instance_ids(index), self.label_ids)

    def __getitem__(self, index: int):
        masks, labels, crowd = self.regions(index)
        try:
            image = read_image(self.pairs[index][0], annotated_size=masks.shape[-2:])
        except ImageError as err:
            raise DataError(str(err)) from err
        masks = torch.from_numpy(masks[~crowd].astype(np.uint8))
        boxes = masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])
        target = {
            "boxes": boxes.reshape(-1, 4),
            "labels": torch.from_numpy(labels[~crowd]),
            "masks": masks,
            "image_id": index,
        }
        if self.transforms is not None:
            image, target = self.transforms(image, target)
        return image, target

    @cached_property
    def coco(self):
        """The ground truth as a pycocotools ``COCO`` (image ids = indices; groups iscrowd)."""
        images, anns = [], []
        for index in range(len(self)):
            masks, labels, crowd = self.regions(index)
            h, w = masks.shape[1:]
            images.append(
                {
                    "id": index,
                    "width": int(w),
                    "height": int(h),
                    "file_name": str(self.pairs[index][0]),
                }
            )
            categories = self.label_ids[labels - 1]
            anns += instance_annotations(masks, categories, index, len(anns) + 1, crowd)
        categories = [{"id": int(i), "name": n} for i, n in zip(self.label_ids, self.categories)]
        return make_coco({"images": images, "annotations": anns, "categories": categories})

    def instance_id_files(self, work_dir: str | Path) -> list[Path]:
        """The instance-id PNG of every image, in order: the tree's own, or, for an image
        annotated by polygons only, its rasterisation written under ``work_dir``."""
        files = []
        for index, (image, annotation) in enumerate(self.pairs):
            if annotation.suffix == ".png":
                files.append(annotation)
                continue
            path = (
                Path(work_dir)
                / image.parent.name
                / f"{self.image_names[index]}{INSTANCE_SUFFIXES[0]}"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(self.instance_ids(index).astype(np.uint16)).save(path)
            files.append(path)
        return files
