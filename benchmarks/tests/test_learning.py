"""The ``learning`` section: Boundary IoU and the figures the quick bench reports."""

import torch
import torch.nn.functional as F

from benchmarks.learning import boundary_iou, star_images, star_mask


def test_boundary_iou_needs_the_contour():
    gt = star_mask(64, 64, 40, 20, 5, 0.0, 128)[None]
    assert boundary_iou(gt, gt, 4).tolist() == [1.0]
    blurred = F.avg_pool2d(gt.float()[None], 9, 1, 4)[0] >= 0.5  # rounded spikes
    assert boundary_iou(blurred, gt, 4).item() < 0.9
    assert ((blurred & gt).sum() / (blurred | gt).sum()) > 0.9  # mask IoU barely notices


def test_star_images_masks_match_boxes():
    images, targets = star_images(64)
    assert len(images) == 4 and images[0].shape == (3, 64, 64)
    for t in targets:
        masks = t["masks"].bool()
        assert not (masks[0] & masks[1]).any()  # the second star is cut by the first
        ys, xs = masks.any(1), masks.any(2)  # N x W columns, N x H rows
        first_x = ys.float().argmax(1)
        first_y = xs.float().argmax(1)
        torch.testing.assert_close(t["boxes"][:, :2], torch.stack([first_x, first_y], 1).float())


def test_learning_section_reports_both_mask_branches(quick_bench):
    out, results = quick_bench
    learning = results["sections"]["learning"]
    assert (learning["steps"], learning["image_size"]) == (2, 64)
    assert set(learning["rows"]) == {"PointRend", "Mask R-CNN 4x conv"}
    for row in learning["rows"].values():
        assert 0 <= row["boundary_iou"] <= 1 and 0 <= row["mask_iou"] <= 1
    report = (out / "REPORT.md").read_text()
    assert "## 5. Boundaries learned from scratch" in report
    assert f"{learning['rows']['PointRend']['boundary_iou']:.3f}" in report
