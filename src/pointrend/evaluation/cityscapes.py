"""Cityscapes instance AP, computed by the ``cityscapesscripts`` package's own evaluation.

The metric (``cityscapesscripts.evaluation.evalInstanceLevelSemanticLabeling``): per class, AP
at the overlaps ``0.5, 0.55, ..., 0.95`` (a prediction matches a ground-truth object when their
IoU is strictly above the overlap), averaged over the overlaps (``AP``) or taken at 0.5
(``AP50``), then over the classes that have ground truth. Ground-truth objects of fewer than 100
pixels and group regions are not scored; an unmatched prediction whose pixels lie mostly (more
than the overlap) on void labels, groups or such small objects is not a false positive.

Predictions are written as that evaluation reads them, for each image ``NAME``
(``CITY_SEQ_FRAME``) into one folder:

* ``NAME_pred.txt``: one line ``masks/NAME_K.png LABEL_ID SCORE`` per predicted instance (the
  mask file relative to the text file, the Cityscapes label id, the confidence);
* ``masks/NAME_K.png``: that instance's mask at image size, a 1-bit PNG (1 inside).

The evaluation's settings are module globals and it caches the ground truth in a JSON file:
each run here uses a copy of the settings, and a temporary folder for the cache.
"""

from __future__ import annotations

import contextlib
import copy
import io
import os
import tempfile
import types
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from ..data.cityscapes import import_cityscapesscripts

__all__ = ["cityscapes_instance_ap", "evaluate_cityscapes", "write_cityscapes_predictions"]

EVALUATION_MODULE = "evaluation.evalInstanceLevelSemanticLabeling"


def write_cityscapes_predictions(
    results: Sequence[Mapping], image_names: Sequence[str], out_dir: str | Path
) -> list[Path]:
    """Write COCO-style mask results as Cityscapes prediction files (format: module doc).

    ``results``: dicts with ``image_id`` (an index into ``image_names``), ``category_id`` (the
    Cityscapes label id), ``score`` and an RLE ``segmentation``. Returns every image's text file
    in the order of ``image_names`` (an image without predictions gets an empty one).
    """
    out_dir = Path(out_dir)
    (out_dir / "masks").mkdir(parents=True, exist_ok=True)
    by_image = defaultdict(list)
    for result in results:
        by_image[int(result["image_id"])].append(result)
    files = []
    for image_id, name in enumerate(image_names):
        if any(c.isspace() for c in name):
            raise ValueError(f"image name {name!r}: the Cityscapes evaluation reads no spaces")
        found = by_image.get(image_id, [])
        lines = []
        for k, result in enumerate(found):
            relative = f"masks/{name}_{k}.png"
            _save_mask_png(result["segmentation"], out_dir / relative)
            lines.append(f"{relative} {int(result['category_id'])} {float(result['score'])}\n")
        path = out_dir / f"{name}_pred.txt"
        path.write_text("".join(lines))
        files.append(path)
    return files


def _save_mask_png(rle: Mapping, path: Path) -> None:
    """An RLE mask as a 1-bit PNG: each ``H x W`` row packed 8 pixels to a byte, first pixel
    in the high bit (Pillow's raw layout of mode ``"1"``)."""
    mask = np.ascontiguousarray(mask_utils.decode(rle))  # pycocotools decodes column-major
    bits = np.packbits(mask, axis=1)
    Image.frombytes("1", (mask.shape[1], mask.shape[0]), bits.tobytes()).save(path)


class _NumpyWithIn1d(types.ModuleType):
    """numpy, plus ``in1d`` (removed in numpy 2.4, still called by cityscapesscripts 2.3.0)."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def in1d(values, test_values, invert=False):
        return np.isin(np.ravel(values), test_values, invert=invert)


@contextlib.contextmanager
def _library_call(module):
    """Run the evaluation quietly, with ``module.np`` given ``in1d`` where numpy lacks it; its
    errors (printed, then ``sys.exit``) become a ``RuntimeError`` with its message."""
    saved = module.np
    if not hasattr(np, "in1d"):
        module.np = _NumpyWithIn1d("numpy")
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # nan means of unscored classes
            yield
    except SystemExit:
        lines = [line for line in log.getvalue().splitlines() if line.strip()]
        raise RuntimeError(
            f"Cityscapes evaluation failed: {lines[-1] if lines else 'no message'}"
        ) from None
    finally:
        module.np = saved


def cityscapes_instance_ap(
    gt_files: Sequence[str | Path],
    prediction_files: Sequence[str | Path],
    prediction_root: str | Path,
) -> dict[str, float]:
    """Cityscapes instance AP of prediction text files (under ``prediction_root``) against the
    ground-truth ``*_gtFine_instanceIds.png`` of the same images, in the same order.

    Returns ``{"AP", "AP50", "AP-<class>" for the eight classes}`` in percent, ``nan`` where a
    class has no ground truth (the averages leave those classes out).
    """
    if len(gt_files) != len(prediction_files):
        raise ValueError(
            f"{len(gt_files)} ground-truth files but {len(prediction_files)} prediction files"
        )
    ev = import_cityscapesscripts(EVALUATION_MODULE)
    gt = [os.path.abspath(f) for f in gt_files]
    predictions = [os.path.abspath(f) for f in prediction_files]
    with tempfile.TemporaryDirectory() as work:
        args = copy.copy(ev.args)
        args.quiet, args.JSONOutput, args.colorized = True, False, False
        args.gtInstancesFile = os.path.join(work, "gtInstances.json")
        args.exportFile = os.path.join(work, "resultInstanceLevelSemanticLabeling.json")
        args.predictionPath, args.predictionWalk = os.path.abspath(prediction_root), None
        with _library_call(ev):
            ev.setInstanceLabels(args)
            instances = ev.getGtInstances(gt, args)
            matches = ev.matchGtWithPreds(predictions, gt, instances, args)
            averages = ev.computeAverages(ev.evaluateMatches(matches, args), args)
    metrics = {"AP": 100 * float(averages["allAp"]), "AP50": 100 * float(averages["allAp50%"])}
    for name, values in averages["classes"].items():
        metrics[f"AP-{name}"] = 100 * float(values["ap"])
    return metrics


def evaluate_cityscapes(
    results: Sequence[Mapping],
    image_names: Sequence[str],
    gt_files: Sequence[str | Path],
    out_dir: str | Path,
) -> dict[str, float]:
    """Write ``results`` as prediction files into ``out_dir`` and score them against
    ``gt_files`` (the instance-id PNGs of ``image_names``, same order): see
    :func:`write_cityscapes_predictions` and :func:`cityscapes_instance_ap`."""
    files = write_cityscapes_predictions(results, image_names, out_dir)
    return cityscapes_instance_ap(gt_files, files, out_dir)
