"""Boundary regions and Boundary AP against a direct transcription of the published definition.

The definition (Cheng et al., CVPR 2021): pad the ``H x W`` mask with one pixel of zeros, erode
it ``d = max(1, round(0.02 * diagonal))`` times with a 3x3 square (pixels beyond the padded
array do not erode), crop the padding; the boundary is the mask minus that erosion.
"""

import contextlib
import io
import math

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils
from pycocotools.cocoeval import COCOeval

from pointrend.data.coco import instance_annotations, make_coco
from pointrend.evaluation import InstanceEvaluator, boundary_iou, boundary_region


def slow_boundary(mask: np.ndarray, dilation_ratio: float = 0.02, border: str = "zero"):
    """The definition, pixel by pixel. ``border="replicate"``: no padding ring, and the image's
    edge does not erode (the variant that does not count the border as a contour)."""
    h, w = mask.shape
    d = max(1, int(round(dilation_ratio * math.sqrt(h * h + w * w))))
    pad = 1 if border == "zero" else 0
    grid = [[0] * (w + 2 * pad) for _ in range(h + 2 * pad)]
    for i in range(h):
        for j in range(w):
            grid[i + pad][j + pad] = int(mask[i, j])
    rows, cols = len(grid), len(grid[0])
    for _ in range(d):
        eroded = [[0] * cols for _ in range(rows)]
        for i in range(rows):
            for j in range(cols):
                eroded[i][j] = min(
                    grid[a][b]
                    for a in range(max(0, i - 1), min(rows, i + 2))
                    for b in range(max(0, j - 1), min(cols, j + 2))
                )
        grid = eroded
    inner = np.array([row[pad : pad + w] for row in grid[pad : pad + h]], dtype=bool)
    return mask.astype(bool) & ~inner


def _blank(h=20, w=30):
    return np.zeros((h, w), bool)


def _touching_masks():
    """Hand-made masks: each border, each corner, the whole image, a hole, thin lines, one-pixel
    objects (inside and in a corner)."""
    cases = {}
    m = _blank()
    m[:6, 8:20] = True
    cases["top"] = m
    m = _blank()
    m[14:, 8:20] = True
    cases["bottom"] = m
    m = _blank()
    m[5:15, :7] = True
    cases["left"] = m
    m = _blank()
    m[5:15, 22:] = True
    cases["right"] = m
    for name, (rs, cs) in {
        "top-left": (slice(0, 5), slice(0, 5)),
        "top-right": (slice(0, 5), slice(25, 30)),
        "bottom-left": (slice(15, 20), slice(0, 5)),
        "bottom-right": (slice(15, 20), slice(25, 30)),
    }.items():
        m = _blank()
        m[rs, cs] = True
        cases[name] = m
    cases["whole image"] = np.ones((20, 30), bool)
    m = _blank()
    m[2:18, 3:27] = True
    m[8:12, 12:18] = False
    cases["hole"] = m
    m = _blank()
    m[10, 2:28] = True
    m[:, 15] = True
    cases["thin lines"] = m
    m = _blank()
    m[9, 14] = True
    m[0, 0] = True
    m[19, 29] = True
    cases["one-pixel objects"] = m
    return cases


@pytest.mark.parametrize("name", list(_touching_masks()))
def test_boundary_region_equals_the_definition(name):
    m = _touching_masks()[name]
    expected = slow_boundary(m)
    assert np.array_equal(boundary_region(m).numpy(), expected), name
    # batched: the same, mask by mask
    batch = boundary_region(np.stack([m, ~m, m])).numpy()
    assert np.array_equal(batch[0], expected) and np.array_equal(batch[2], expected)
    assert np.array_equal(batch[1], slow_boundary(~m))


def test_hand_counted_boundaries():
    # d = round(0.02 * hypot(20, 30)) = round(0.72) = 1
    cases = _touching_masks()
    assert boundary_region(cases["whole image"]).sum() == 20 * 30 - 18 * 28  # the image's rim
    assert boundary_region(cases["top-left"]).sum() == 25 - 9  # all four sides are contour
    assert boundary_region(cases["top"]).sum() == 6 * 12 - 4 * 10
    # ring of the 16 x 24 rectangle (80 pixels) and ring around the 4 x 6 hole (6 * 8 - 24)
    assert boundary_region(cases["hole"]).sum() == (16 * 24 - 14 * 22) + (6 * 8 - 4 * 6)
    assert np.array_equal(boundary_region(cases["thin lines"]).numpy(), cases["thin lines"])
    one = cases["one-pixel objects"]
    assert np.array_equal(boundary_region(one).numpy(), one)


def test_left_border_square_of_the_published_example():
    # 100 x 150 image: d = round(0.02 * 180.3) = 4; the eroded square is 52 x 52
    m = np.zeros((100, 150), bool)
    m[20:80, :60] = True
    assert boundary_region(m).sum() == 3600 - 52 * 52 == 896
    assert boundary_region(m, border="replicate").sum() == 3600 - 52 * 56 == 688


def test_replicate_variant_equals_its_transcription_and_differs_at_the_border():
    for name, m in _touching_masks().items():
        assert np.array_equal(
            boundary_region(m, border="replicate").numpy(), slow_boundary(m, border="replicate")
        ), name
    m = _touching_masks()["left"]
    assert boundary_region(m, border="replicate").sum() < boundary_region(m).sum()


@pytest.mark.parametrize("shape,ratio", [((23, 41), 0.02), ((40, 40), 0.05), ((17, 9), 0.1)])
def test_random_masks_equal_the_definition(shape, ratio):
    g = np.random.default_rng(sum(shape))
    masks = g.random((4, *shape)) < np.array([0.3, 0.6, 0.85, 0.97])[:, None, None]
    got = boundary_region(masks, ratio).numpy()
    for k in range(len(masks)):
        assert np.array_equal(got[k], slow_boundary(masks[k], ratio))


def test_boundary_iou_counts_the_image_border():
    a = _touching_masks()["left"]  # rows 5..14, columns 0..6
    b = np.roll(a, 1, axis=1)  # columns 1..7: its left side is now a contour inside the image
    ba, bb = slow_boundary(a), slow_boundary(b)
    assert boundary_iou(a, b) == pytest.approx((ba & bb).sum() / (ba | bb).sum())


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="border must be one of"):
        boundary_region(_blank(), border="reflect")
    with pytest.raises(ValueError, match="at least 1 pixel, got 0"):
        boundary_region(_blank(), distance=0)


SIZE = 64  # d = round(0.02 * 90.5) = 2


def _border_touching_set(seed=3, images=5):
    """Ground truth where most objects touch the image border, and predictions that are the
    objects shifted, grown or cut (scores random)."""
    g = np.random.default_rng(seed)
    coco_images, anns, preds = [], [], []
    for i in range(images):
        masks = np.zeros((4, SIZE, SIZE), bool)
        masks[0, : g.integers(10, 30), : g.integers(10, 30)] = True  # a corner
        top = g.integers(5, 30)
        masks[1, top : top + 20, SIZE - g.integers(8, 25) :] = True  # the right border
        masks[2, SIZE - 12 :, 20:40] = True  # the bottom border
        r, c = g.integers(15, 45, size=2)
        masks[3, r - 8 : r + 8, c - 6 : c + 6] = True  # inside
        anns += instance_annotations(masks, [1] * 4, i, len(anns) + 1)
        coco_images.append({"id": i, "width": SIZE, "height": SIZE, "file_name": f"{i}.png"})
        moved = np.stack([np.roll(m, int(g.integers(-1, 2)), int(g.integers(0, 2))) for m in masks])
        moved[g.integers(0, 4), :, : g.integers(1, 3)] = False
        preds.append(
            {
                "boxes": torch.zeros(4, 4),
                "labels": torch.ones(4, dtype=torch.int64),
                "scores": torch.from_numpy(g.random(4)).float(),
                "masks": torch.from_numpy(moved).float()[:, None],
            }
        )
    coco = make_coco(
        {"images": coco_images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}
    )
    return coco, preds


class SlowBoundaryEval(COCOeval):
    """COCOeval whose pair IoU is ``min(mask IoU, Boundary IoU)``, both counted pixel by pixel
    from the decoded masks with :func:`slow_boundary`."""

    def __init__(self, coco_gt, coco_dt, border="zero"):
        super().__init__(coco_gt, coco_dt, "segm")
        self.border = border

    def computeIoU(self, imgId, catId):  # noqa: N802 (pycocotools' name)
        gt = self._gts[imgId, catId]
        dt = sorted(self._dts[imgId, catId], key=lambda d: -d["score"])[: self.params.maxDets[-1]]
        ious = np.zeros((len(dt), len(gt)))
        for a, d in enumerate(dt):
            pm = mask_utils.decode(d["segmentation"]).astype(bool)
            pb = slow_boundary(pm, border=self.border)
            for b, t in enumerate(gt):
                gm = self.cocoGt.annToMask(t).astype(bool)
                gb = slow_boundary(gm, border=self.border)
                mask_iou = (pm & gm).sum() / (pm | gm).sum()
                ious[a, b] = min(mask_iou, (pb & gb).sum() / (pb | gb).sum())
        return ious


def test_boundary_ap_on_border_touching_objects_equals_the_slow_reference():
    coco, preds = _border_touching_set()
    ev = InstanceEvaluator(coco)
    ev.update(range(len(preds)), preds)
    fast = ev.evaluate()["boundary"]
    dets = ev._load_results([{k: v for k, v in r.items() if k != "bbox"} for r in ev.results])
    slow = {}
    for border in ("zero", "replicate"):
        ref = SlowBoundaryEval(coco, dets, border)
        ref.params.imgIds = sorted(coco.imgs)
        with contextlib.redirect_stdout(io.StringIO()):
            ref.evaluate()
            ref.accumulate()
            ref.summarize()
        slow[border] = ref.stats * 100
    for k, name in enumerate(["AP", "AP50", "AP75"]):
        assert fast[name] == pytest.approx(slow["zero"][k], abs=1e-9), name
    # the border matters on this set: the variant that ignores it scores otherwise
    assert abs(slow["replicate"][0] - slow["zero"][0]) > 1.0
