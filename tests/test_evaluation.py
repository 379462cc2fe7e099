import contextlib
import io

import numpy as np
import pytest
import torch
from pycocotools.cocoeval import COCOeval

from pointrend.data.coco import encode_masks, instance_annotations, make_coco
from pointrend.data.synthetic import SyntheticInstanceDataset
from pointrend.evaluation import (
    InstanceEvaluator,
    SemanticEvaluator,
    boundary_f_score,
    boundary_iou,
    boundary_region,
    confusion_matrix,
)


def square(size=20, lo=5, hi=15, shift=0):
    m = np.zeros((size, size), bool)
    m[lo:hi, lo + shift : hi + shift] = True
    return m


def test_boundary_iou_hand_computed():
    a = square()
    assert boundary_iou(a, a) == 1.0
    assert boundary_iou(a, np.zeros_like(a)) == 0.0
    assert boundary_iou(a, square(lo=0, hi=3)) == 0.0  # disjoint
    # d = round(0.02 * hypot(20, 20)) = 1: one-pixel rings of 36 pixels each; shifted by one
    # pixel they share 9 + 9 pixels of the top and bottom rows -> 18 / (72 - 18)
    assert boundary_iou(a, square(shift=1)) == pytest.approx(18 / 54)


def test_boundary_region_counts_the_image_border_unless_replicate():
    m = np.zeros((10, 10), bool)
    m[:, :5] = True  # touches the left, top and bottom borders
    region = boundary_region(m, distance=1).numpy()
    assert region.sum() == 50 - 8 * 3 and region[:, 0].all() and region[:, 4].all()
    region = boundary_region(m, distance=1, border="replicate").numpy()
    assert region.sum() == 10 and region[:, 4].all()


def test_boundary_f_score():
    gt = torch.zeros(20, 20, dtype=torch.long)
    gt[5:15, 5:15] = 1
    assert boundary_f_score(gt, gt) == 1.0
    assert boundary_f_score(gt, torch.roll(gt, 1, 1), tolerance=1) == 1.0
    assert boundary_f_score(gt, torch.roll(gt, 4, 1), tolerance=1) < 0.7
    ignored = gt.clone()
    ignored[:, :10] = 255
    assert boundary_f_score(ignored, torch.where(ignored == 255, 0, ignored)) == 1.0


def test_confusion_matrix_and_miou():
    gt = torch.tensor([[0, 0, 1, 1], [0, 255, 1, 2]])
    pred = torch.tensor([[0, 1, 1, 1], [0, 2, 1, 2]])
    assert confusion_matrix(gt, pred, 3).tolist() == [[2, 1, 0], [0, 3, 0], [0, 0, 1]]
    ev = SemanticEvaluator(3)
    ev.update(gt, pred)
    out = ev.evaluate()
    assert out["mIoU"] == pytest.approx(100 * (2 / 3 + 3 / 4 + 1) / 3)
    with pytest.raises(ValueError, match=r"labels \[7\] are outside \[0, 3\)"):
        confusion_matrix(torch.tensor([7]), torch.tensor([0]), 3)


def _ground_truth(n=5, size=96, seed=11):
    ds = SyntheticInstanceDataset(n, size, seed)
    images, anns, targets = [], [], []
    for i in range(n):
        _, t = ds[i]
        images.append({"id": i, "width": size, "height": size, "file_name": f"{i}.png"})
        anns += instance_annotations(
            t["masks"].bool().numpy(), t["labels"].tolist(), i, len(anns) + 1
        )
        targets.append(t)
    cats = [{"id": k, "name": n} for k, n in enumerate(ds.categories, 1)]
    return make_coco({"images": images, "annotations": anns, "categories": cats}), targets


def _outputs(targets, shift, seed=0):
    g = torch.Generator().manual_seed(seed)
    outs = []
    for t in targets:
        n = len(t["labels"])
        masks = torch.roll(t["masks"].float(), shift, -1)[:, None]
        outs.append(
            {
                "boxes": t["boxes"],
                "labels": t["labels"],
                "scores": torch.rand(n, generator=g),
                "masks": masks,
            }
        )
    return outs


def test_perfect_predictions_score_100():
    coco, targets = _ground_truth()
    ev = InstanceEvaluator(coco)
    ev.update(range(len(targets)), _outputs(targets, 0))
    m = ev.evaluate()
    for key in ("bbox", "segm", "boundary"):
        assert m[key]["AP"] == pytest.approx(100.0)


@pytest.mark.parametrize("shift", [1, 3])
def test_mask_ap_matches_plain_pycocotools_and_boundary_ap_is_lower(shift):
    coco, targets = _ground_truth()
    outs = _outputs(targets, shift, seed=shift)
    ev = InstanceEvaluator(coco)
    ev.update(range(len(targets)), outs)
    m = ev.evaluate()
    plain = []
    for i, o in enumerate(outs):
        for rle, s, label in zip(
            encode_masks((o["masks"][:, 0] > 0.5).numpy()),
            o["scores"].tolist(),
            o["labels"].tolist(),
        ):
            plain.append({"image_id": i, "category_id": label, "segmentation": rle, "score": s})
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(coco, coco.loadRes(plain), "segm")
        e.evaluate()
        e.accumulate()
        e.summarize()
    assert m["segm"]["AP"] == pytest.approx(e.stats[0] * 100, abs=1e-9)
    assert m["segm"]["AP75"] == pytest.approx(e.stats[2] * 100, abs=1e-9)
    for k in ("AP", "AP50", "AP75"):
        assert m["boundary"][k] <= m["segm"][k] + 1e-9
    assert m["boundary"]["AP"] < m["segm"]["AP"]


def test_second_annotation_file_of_the_same_images_is_a_parameter(tmp_path):
    """AP* style: the same predictions scored against another (here: shifted) ground truth."""
    import json

    from pointrend.data.coco import load_coco
    from pointrend.engine.evaluate import evaluate_instances

    coco, targets = _ground_truth(n=3)
    outs = _outputs(targets, 0)
    other = json.loads(json.dumps(coco.dataset))
    shifted = [dict(t, masks=torch.roll(t["masks"], 3, -1)) for t in targets]
    other["annotations"] = []
    for i, t in enumerate(shifted):
        other["annotations"] += instance_annotations(
            t["masks"].bool().numpy(), t["labels"].tolist(), i, len(other["annotations"]) + 1
        )
    path = tmp_path / "finer.json"
    path.write_text(json.dumps(other))

    class Replay(torch.nn.Module):  # a "model" that returns the fixed predictions in order
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.i = 0

        def forward(self, images):
            out = outs[self.i : self.i + len(images)]
            self.i += len(images)
            return out

    dataset = SyntheticInstanceDataset(3, 96, 11)
    own = evaluate_instances(Replay(), dataset, batch_size=1)
    finer = evaluate_instances(Replay(), dataset, batch_size=1, coco_gt=load_coco(path))
    assert own["segm"]["AP"] == pytest.approx(100.0)
    assert finer["segm"]["AP"] < own["segm"]["AP"]
    assert finer["boundary"]["AP"] < finer["segm"]["AP"] + 1e-9


def _coco_of_sizes(sides):
    """One image of 200 x 200 with one square object per side in ``sides`` (category 1)."""
    masks = np.zeros((len(sides), 200, 200), bool)
    for k, side in enumerate(sides):
        masks[k, 10 * k : 10 * k + side, 10 * k : 10 * k + side] = True
    anns = instance_annotations(masks, [1] * len(sides), 0, 1)
    images = [{"id": 0, "width": 200, "height": 200, "file_name": "0.png"}]
    return make_coco(
        {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "a"}]}
    )


def test_no_detection_scores_zero_where_coco_can_score_and_nan_elsewhere():
    import math

    coco = _coco_of_sizes([20, 60])  # areas 400 (small, < 32^2) and 3600 (medium); no large
    ev = InstanceEvaluator(coco)
    ev.update([0], [{k: v[:0] for k, v in _outputs([_target_like()], 0)[0].items()}])
    m = ev.evaluate()
    for key in ("bbox", "segm", "boundary"):
        assert m[key]["AP"] == m[key]["APs"] == m[key]["APm"] == 0.0
        assert math.isnan(m[key]["APl"])  # no large object: nothing to score, as COCO says


def _target_like():
    return {
        "boxes": torch.zeros(1, 4),
        "labels": torch.ones(1, dtype=torch.int64),
        "masks": torch.zeros(1, 200, 200, dtype=torch.uint8),
    }


def test_metrics_json_writes_null_for_undefined_scores():
    import json

    from pointrend.engine.evaluate import metrics_json

    ev = SemanticEvaluator(3)
    ev.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]))  # class 2 absent
    text = metrics_json(ev.evaluate())
    assert "NaN" not in text
    parsed = json.loads(text)
    assert parsed["IoU"]["2"] is None and parsed["IoU"]["0"] == 100.0


def test_evaluation_ground_truth_leaves_out_annotations_without_a_mask(tmp_path):
    """A ``"segmentation": []`` annotation in a validation file: skipped, not a crash."""
    import json

    from PIL import Image

    from pointrend.data.coco import CocoInstanceDataset
    from pointrend.engine.evaluate import evaluate_instances

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    square_ann = instance_annotations(square(40, 5, 25)[None], [1], 1, 1)[0]
    empty = dict(square_ann, id=2, segmentation=[])
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 40}],
        "annotations": [square_ann, empty],
        "categories": [{"id": 1, "name": "a"}],
    }
    (tmp_path / "val.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="1 with an empty mask"):
        dataset = CocoInstanceDataset(tmp_path, tmp_path / "val.json")
    assert sorted(dataset.coco.anns) == [1]

    class Perfect(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, images):
            mask = torch.from_numpy(square(40, 5, 25)).float()[None, None]
            box = torch.tensor([[5.0, 5.0, 25.0, 25.0]])
            one = torch.ones(1)
            return [{"boxes": box, "labels": one.long(), "scores": one, "masks": mask}]

    metrics = evaluate_instances(Perfect(), dataset)
    assert metrics["segm"]["AP"] == pytest.approx(100.0)
