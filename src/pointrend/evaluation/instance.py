"""Instance evaluation: COCO box and mask AP (pycocotools) and Boundary AP.

Boundary AP is COCO AP where the IoU of a non-crowd pair is ``min(mask IoU, Boundary IoU)``
(Cheng et al., CVPR 2021); crowd regions keep mask IoU. The ground truth is a parameter: score
predictions against any annotation file of the same images (e.g. finer masks, as the paper's
AP* does with LVIS).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from ..data.coco import encode_masks, make_coco
from ..instance.compact import binary_mask_chunks
from .boundary import boundary_region

__all__ = ["InstanceEvaluator", "BoundaryCOCOeval", "predictions_to_coco", "STAT_NAMES"]

STAT_NAMES = ["AP", "AP50", "AP75", "APs", "APm", "APl"]


def predictions_to_coco(
    image_id: int,
    output: Mapping[str, torch.Tensor],
    label_to_category_id: Mapping[int, int] | None = None,
    dilation_ratio: float = 0.02,
    mask_threshold: float = 0.5,
) -> list[dict]:
    """One image's model output -> COCO result dicts (``bbox`` XYWH, RLE ``segmentation``,
    and the RLE of the mask's boundary region under ``boundary``). Masks are dense ``masks``
    (``N x 1 x H x W``) or compact ``mask_grids``, thresholded a chunk of them at a time."""
    boxes = output["boxes"].detach().float().cpu()
    scores = output["scores"].detach().float().cpu().tolist()
    labels = output["labels"].detach().cpu().tolist()
    results = []
    masks = None
    if "masks" in output or "mask_grids" in output:
        masks, rles, brles = True, [], []
        chunks = binary_mask_chunks(output, threshold=mask_threshold, max_bytes=1 << 25)
        for _, chunk, _ in chunks:  # k x H x W uint8, a few masks at a time
            chunk = chunk.cpu().bool()
            rles += encode_masks(chunk.numpy())
            brles += encode_masks(boundary_region(chunk, dilation_ratio).numpy())
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist() if len(boxes) else []
    for k in range(len(scores)):
        cat = label_to_category_id[labels[k]] if label_to_category_id else labels[k]
        res = {
            "image_id": int(image_id),
            "category_id": int(cat),
            "bbox": xywh[k],
            "score": scores[k],
        }
        if masks is not None:
            res["segmentation"] = rles[k]
            res["boundary"] = brles[k]
        results.append(res)
    return results


class BoundaryCOCOeval(COCOeval):
    """COCOeval whose segm IoU is ``min(mask IoU, Boundary IoU)`` for non-crowd ground truth.

    ``gt_boundaries`` maps ground-truth annotation ids to boundary RLEs; detections carry
    theirs under ``"boundary"``.
    """

    def __init__(self, coco_gt: COCO, coco_dt: COCO, gt_boundaries: Mapping[int, dict]):
        super().__init__(coco_gt, coco_dt, "segm")
        self.gt_boundaries = gt_boundaries

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
        mask_iou = super().computeIoU(imgId, catId)
        if len(mask_iou) == 0:
            return mask_iou
        p = self.params
        cats = [catId] if p.useCats else p.catIds
        gt = [g for c in cats for g in self._gts[imgId, c]]
        dt = [d for c in cats for d in self._dts[imgId, c]]
        order = np.argsort([-d["score"] for d in dt], kind="mergesort")[: p.maxDets[-1]]
        dt = [dt[i] for i in order]
        b_iou = mask_utils.iou(
            [d["boundary"] for d in dt], [self.gt_boundaries[g["id"]] for g in gt], [0] * len(gt)
        )
        crowd = np.array([bool(g["iscrowd"]) for g in gt])
        b_iou = np.asarray(b_iou).reshape(len(dt), len(gt))
        b_iou[:, crowd] = mask_iou[:, crowd]
        return np.minimum(mask_iou, b_iou)


def _quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


class InstanceEvaluator:
    """Accumulate predictions image by image (as RLE: memory stays small), then score them.

    Args:
        coco_gt: the ground truth (pycocotools ``COCO``).
        label_to_category_id: contiguous model labels -> category ids (identity if omitted).
        dilation_ratio: Boundary IoU's ``d`` as a fraction of the image diagonal.
    """

    def __init__(
        self,
        coco_gt: COCO,
        label_to_category_id: Mapping[int, int] | None = None,
        dilation_ratio: float = 0.02,
    ):
        self.coco_gt = coco_gt
        self.label_to_category_id = label_to_category_id
        self.dilation_ratio = dilation_ratio
        self.results: list[dict] = []

    def update(
        self, image_ids: Sequence[int], outputs: Sequence[Mapping[str, torch.Tensor]]
    ) -> None:
        for image_id, output in zip(image_ids, outputs):
            self.results.extend(
                predictions_to_coco(
                    image_id, output, self.label_to_category_id, self.dilation_ratio
                )
            )

    def _gt_boundaries(self, image_ids) -> dict[int, dict]:
        out = {}
        for image_id in image_ids:
            anns = self.coco_gt.imgToAnns.get(image_id, [])
            if not anns:
                continue
            masks = np.stack([self.coco_gt.annToMask(a) for a in anns]).astype(bool)
            regions = boundary_region(masks, self.dilation_ratio).numpy()
            for a, rle in zip(anns, encode_masks(regions)):
                out[a["id"]] = rle
        return out

    def _load_results(self, results: list[dict]) -> COCO:
        """Detections as a ``COCO``; with none, an empty one (``loadRes`` refuses an empty
        list), so COCO scores 0 where there are objects and nothing where there are none."""
        if results:
            return _quiet(self.coco_gt.loadRes, results)
        gt = self.coco_gt.dataset
        empty = {"images": gt["images"], "annotations": [], "categories": gt["categories"]}
        return make_coco(empty)

    def evaluate(self, results: Sequence[dict] | None = None) -> dict:
        """``{"bbox": {...}, "segm": {...}, "boundary": {...}}`` with AP, AP50, AP75, APs/m/l
        in percent (``nan`` where COCO has nothing to score, e.g. no objects of that size).
        Without any detection every score COCO can compute is 0 and the others stay ``nan``."""
        results = list(self.results if results is None else results)
        image_ids = sorted(self.coco_gt.imgs)
        metrics = {}
        # boxes and masks are loaded apart: with both, pycocotools would take a mask's area
        # (which decides its size range) from its box
        boxes = [
            {k: v for k, v in r.items() if k not in ("segmentation", "boundary")} for r in results
        ]
        runs = [("bbox", COCOeval(self.coco_gt, self._load_results(boxes), "bbox"))]
        if not results or "segmentation" in results[0]:
            masks = self._load_results(
                [{k: v for k, v in r.items() if k != "bbox"} for r in results]
            )
            runs.append(("segm", COCOeval(self.coco_gt, masks, "segm")))
            runs.append(
                ("boundary", BoundaryCOCOeval(self.coco_gt, masks, self._gt_boundaries(image_ids)))
            )
        for name, ev in runs:
            ev.params.imgIds = image_ids
            _quiet(ev.evaluate)
            _quiet(ev.accumulate)
            _quiet(ev.summarize)
            metrics[name] = {
                k: float(v) * 100 if v >= 0 else float("nan") for k, v in zip(STAT_NAMES, ev.stats)
            }
        return metrics
