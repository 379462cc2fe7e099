"""Semantic datasets on disk: folder pairs of images and label PNGs, and the Cityscapes layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .cityscapes import cityscapes_pairs, read_index_png
from .coco import DataError, raise_problems
from .images import IMAGE_SUFFIXES, ImageError, pair_size_problem, read_image

__all__ = ["SemanticFolderDataset", "CityscapesSemanticDataset", "CITYSCAPES_CLASSES"]

CITYSCAPES_CLASSES = [
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
    "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train",
    "motorcycle", "bicycle",
]  # fmt: skip


class _PairDataset(Dataset):
    """``(image 3 x H x W float in [0, 1], labels H x W int64)`` from lists of file pairs.

    Every pair is checked on construction from the file headers (both readable, same size)
    and all problems are listed in one :class:`DataError`; label values are checked per sample.
    """

    def __init__(self, pairs, num_classes, classes, ignore_index, transforms, where):
        problems = [p for p in (pair_size_problem(*pair) for pair in pairs) if p]
        raise_problems(where, problems)
        self.pairs = pairs
        self.num_classes = num_classes
        self.classes = classes
        self.ignore_index = ignore_index
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.pairs)

    def check_num_classes(self, num_classes: int) -> None:
        """Raise a :class:`DataError` if the dataset has more classes than a model of
        ``num_classes`` predicts."""
        if num_classes < self.num_classes:
            raise DataError(
                f"the data has {self.num_classes} classes ({', '.join(self.classes[:8])}, ...) "
                f"but the model has {num_classes}; leave model.num_classes unset to take it "
                f"from the data"
            )

    def __getitem__(self, index: int):
        image_path, label_path = self.pairs[index]
        labels = torch.from_numpy(
            read_index_png(label_path, "label map")
        )  # its size was checked on construction
        try:
            image = read_image(image_path, annotated_size=tuple(labels.shape))
        except ImageError as err:
            raise DataError(str(err)) from err
        bad = (labels != self.ignore_index) & ((labels < 0) | (labels >= self.num_classes))
        if bad.any():
            raise DataError(
                f"{label_path}: labels {torch.unique(labels[bad]).tolist()} are outside "
                f"[0, {self.num_classes}) and not the ignore label {self.ignore_index}"
            )
        if self.transforms is not None:
            image, labels = self.transforms(image, labels)
        return image, labels


class SemanticFolderDataset(_PairDataset):
    """Images in ``image_dir`` and label PNGs of the same stem in ``label_dir``.

    Images are read by :func:`pointrend.data.images.read_image` (16-bit images by their range).

    The class list comes from ``classes.json`` (a list of names) beside the label folder or in
    its parent, or from ``classes``; labels are ``0..K-1``, ``ignore_index`` (255) is ignored.
    """

    def __init__(
        self, image_dir, label_dir, classes=None, ignore_index: int = 255, transforms=None
    ):
        image_dir, label_dir = Path(image_dir), Path(label_dir)
        for d in (image_dir, label_dir):
            if not d.is_dir():
                raise DataError(f"folder not found: {d}")
        if classes is None:
            for candidate in (label_dir / "classes.json", label_dir.parent / "classes.json"):
                if candidate.is_file():
                    classes = json.loads(candidate.read_text())
                    break
            else:
                raise DataError(
                    f"no classes.json in {label_dir} or {label_dir.parent}; pass classes="
                )
        labels = {p.stem: p for p in label_dir.iterdir() if p.suffix.lower() == ".png"}
        images = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        raise_problems(
            label_dir, [f"no label PNG for image {p.name}" for p in images if p.stem not in labels]
        )
        if not images:
            raise DataError(f"{image_dir}: no images")
        pairs = [(p, labels[p.stem]) for p in images]
        super().__init__(pairs, len(classes), list(classes), ignore_index, transforms, label_dir)


class CityscapesSemanticDataset(_PairDataset):
    """Cityscapes: ``root/leftImg8bit/SPLIT/CITY/*_leftImg8bit.png`` with
    ``root/gtFine/SPLIT/CITY/*_gtFine_labelTrainIds.png`` (19 classes, ignore 255)."""

    def __init__(self, root, split: str = "train", transforms=None):
        pairs = cityscapes_pairs(
            root,
            split,
            ["_gtFine_labelTrainIds.png"],
            "create the *_labelTrainIds.png files with cityscapesscripts' createTrainIdLabelImgs",
        )
        super().__init__(
            pairs, len(CITYSCAPES_CLASSES), CITYSCAPES_CLASSES, 255, transforms, Path(root)
        )
