"""Cityscapes instances read from a small tree written here (two cities, instance-id PNGs and
polygons of the same objects, group regions), and scored by cityscapesscripts' evaluation."""

import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from pointrend.data.cityscapes import CityscapesInstanceDataset
from pointrend.data.coco import DataError, encode_masks
from pointrend.engine.build import build_dataset
from pointrend.engine.config import DatasetConfig
from pointrend.engine.evaluate import evaluate_instances
from pointrend.evaluation.cityscapes import evaluate_cityscapes

H, W = 64, 128
ROAD, EGO_VEHICLE = 7, 1
LABEL_IDS = {"person": 24, "car": 26, "caravan": 29}  # Cityscapes label ids
CLASSES = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
# per image: (polygon label, x0, y0, x1, y1) rectangles, inclusive pixel bounds, in file order
TREE = {
    "aachen/aachen_000000_000019": [
        ("car", 10, 20, 29, 39),
        ("car", 50, 10, 79, 29),
        ("person", 90, 5, 99, 44),
        ("cargroup", 100, 40, 125, 58),
    ],
    "aachen/aachen_000001_000019": [
        ("person", 5, 5, 24, 34),
        ("car", 40, 40, 47, 47),  # 64 pixels: too small to be scored
        ("caravan", 60, 10, 90, 30),  # not one of the eight classes
    ],
    "bonn/bonn_000000_000019": [("car", 20, 20, 59, 49), ("persongroup", 70, 10, 90, 30)],
}


def _expected_ids(objects) -> np.ndarray:
    """The instance ids of the rectangles, numbered as Cityscapes does (per class, file order)."""
    ids = np.full((H, W), ROAD, np.int64)
    ids[H - 3 :] = EGO_VEHICLE  # a void strip along the bottom
    count = {}
    for label, x0, y0, x1, y1 in objects:
        if label.endswith("group"):
            value = LABEL_IDS[label[: -len("group")]]
        else:
            value = LABEL_IDS[label] * 1000 + count.get(label, 0)
            count[label] = count.get(label, 0) + 1
        ids[y0 : y1 + 1, x0 : x1 + 1] = value
    return ids


def _polygons(objects) -> dict:
    road = [[0, 0], [W - 1, 0], [W - 1, H - 1], [0, H - 1]]
    ego = [[0, H - 3], [W - 1, H - 3], [W - 1, H - 1], [0, H - 1]]
    rects = [
        {"label": lb, "polygon": [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]}
        for lb, x0, y0, x1, y1 in objects
    ]
    drawn = [{"label": "road", "polygon": road}, {"label": "ego vehicle", "polygon": ego}]
    return {"imgHeight": H, "imgWidth": W, "objects": drawn + rects}


def write_tree(root, pngs=True, jsons=True):
    rng = np.random.default_rng(0)
    for name in TREE:
        image_dir = root / "leftImg8bit" / "val" / name.split("/")[0]
        gt_dir = root / "gtFine" / "val" / name.split("/")[0]
        image_dir.mkdir(parents=True, exist_ok=True)
        gt_dir.mkdir(parents=True, exist_ok=True)
        stem = name.split("/")[1]
        pixels = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(image_dir / f"{stem}_leftImg8bit.png")
        if pngs:
            ids = _expected_ids(TREE[name]).astype(np.uint16)
            Image.fromarray(ids).save(gt_dir / f"{stem}_gtFine_instanceIds.png")
        if jsons:
            (gt_dir / f"{stem}_gtFine_polygons.json").write_text(json.dumps(_polygons(TREE[name])))
    return root


def _expected_regions(ids: np.ndarray):
    """Masks, labels (1..8) and crowd flags of the eight classes, in increasing id order."""
    values = [v for v in np.unique(ids) if (v // 1000 if v >= 1000 else v) in (24, 26)]
    labels = [CLASSES.index("person" if (v // 1000 or v) == 24 else "car") + 1 for v in values]
    return [ids == v for v in values], labels, [v < 1000 for v in values]


@pytest.mark.parametrize("source", ["png", "json"])
def test_reader_masks_classes_and_crowd_flags_from_either_source(tmp_path, source):
    root = write_tree(tmp_path, pngs=source == "png", jsons=True)
    ds = CityscapesInstanceDataset(root, "val")
    assert ds.categories == CLASSES and ds.num_classes == 9
    assert ds.label_to_category_id == {1: 24, 2: 25, 3: 26, 4: 27, 5: 28, 6: 31, 7: 32, 8: 33}
    assert ds.image_names == [n.split("/")[1] for n in sorted(TREE)]
    assert {p[1].suffix for p in ds.pairs} == {".png" if source == "png" else ".json"}
    for index, name in enumerate(sorted(TREE)):
        masks, labels, crowd = ds.regions(index)
        want_masks, want_labels, want_crowd = _expected_regions(_expected_ids(TREE[name]))
        assert masks.shape == (len(want_masks), H, W)
        assert (masks == np.array(want_masks)).all()
        assert labels.tolist() == want_labels and crowd.tolist() == want_crowd
    image, target = ds[0]  # aachen_000000: two cars and a person; the car group is crowd
    assert image.shape == (3, H, W) and target["image_id"] == 0
    assert target["labels"].tolist() == [1, 3, 3]
    assert target["boxes"][1].tolist() == [10.0, 20.0, 30.0, 40.0]
    assert target["masks"].shape == (3, H, W) and target["masks"][1].sum() == 400
    assert ds.coco.getAnnIds(imgIds=[0], iscrowd=True) and len(ds.coco.anns) == 8


def test_both_sources_give_the_same_instance_ids(tmp_path):
    both = CityscapesInstanceDataset(write_tree(tmp_path / "a"), "val")
    polygons = CityscapesInstanceDataset(write_tree(tmp_path / "b", pngs=False), "val")
    for index in range(len(both)):
        assert (both.instance_ids(index) == polygons.instance_ids(index)).all()
    written = polygons.instance_id_files(tmp_path / "work")
    assert [np.asarray(Image.open(f)).tolist() for f in written] == [
        np.asarray(Image.open(f)).tolist() for f in both.instance_id_files(tmp_path / "unused")
    ]


def test_reader_errors_name_the_files(tmp_path, monkeypatch):
    root = write_tree(tmp_path, pngs=False, jsons=False)
    with pytest.raises(DataError, match=r"3 annotations .* missing, e\.g\. .*aachen_000000"):
        CityscapesInstanceDataset(root, "val")
    with pytest.raises(DataError, match="Cityscapes images not found"):
        CityscapesInstanceDataset(root, "test")
    polygons = _polygons([("spaceship", 1, 1, 5, 5)])
    for name in TREE:
        stem = root / "gtFine" / "val" / name
        (stem.parent / f"{stem.name}_gtFine_polygons.json").write_text(json.dumps(polygons))
    with pytest.raises(DataError, match=r"aachen_000000_000019_gtFine_polygons.json: .*spaceship"):
        CityscapesInstanceDataset(root, "val")[0]
    monkeypatch.setitem(sys.modules, "cityscapesscripts.helpers.labels", None)
    with pytest.raises(ImportError, match=r"pip install 'pointrend\[cityscapes\]'"):
        CityscapesInstanceDataset(root, "val")


def _perfect_results(ds):
    """COCO-style results equal to the ground truth's objects (groups are not predicted)."""
    results = []
    for index in range(len(ds)):
        masks, labels, crowd = ds.regions(index)
        for k, (rle, label) in enumerate(zip(encode_masks(masks[~crowd]), labels[~crowd])):
            category = ds.label_to_category_id[int(label)]
            results.append(
                {
                    "image_id": index,
                    "category_id": category,
                    "segmentation": rle,
                    "score": 0.9 - 0.01 * k,
                }
            )
    return results


def test_perfect_predictions_score_100_and_a_wider_car_scores_what_the_rules_say(tmp_path):
    ds = CityscapesInstanceDataset(write_tree(tmp_path / "tree", pngs=False), "val")
    gt_files = ds.instance_id_files(tmp_path / "gt")
    results = _perfect_results(ds)
    perfect = evaluate_cityscapes(results, ds.image_names, gt_files, tmp_path / "perfect")
    assert perfect["AP"] == pytest.approx(100) and perfect["AP50"] == pytest.approx(100)
    assert perfect["AP-car"] == pytest.approx(100) and np.isnan(perfect["AP-rider"])
    lines = (tmp_path / "perfect" / "aachen_000000_000019_pred.txt").read_text().splitlines()
    assert [line.split()[1] for line in lines] == ["24", "26", "26"]

    # widen the first car of aachen_000000 onto the road and give it the lowest car score
    wider = ds.regions(0)[0][2].copy()
    wider[20:40, 30:36] = True
    car = next(r for r in results if r["image_id"] == 0 and r["category_id"] == 26)
    car["segmentation"], car["score"] = encode_masks(wider[None])[0], 0.1
    iou = 400 / wider.sum()
    # the evaluation's rules: a match needs IoU above the overlap; where the wider car misses,
    # it is a false positive ranked below every true one, so the car AP is the recall reached
    # by the others: (cars of >= 100 pixels - 1) / (cars of >= 100 pixels)
    scored_cars = 3
    overlaps = np.linspace(0.5, 0.95, 10)
    matched = (overlaps < iou).sum()
    car_ap = (matched + (len(overlaps) - matched) * (scored_cars - 1) / scored_cars) / 10
    scores = evaluate_cityscapes(results, ds.image_names, gt_files, tmp_path / "wider")
    assert 0 < matched < len(overlaps)
    assert scores["AP-car"] == pytest.approx(100 * car_ap)
    assert scores["AP"] == pytest.approx(100 * (car_ap + 1) / 2)  # person is still perfect
    assert scores["AP50"] == pytest.approx(100)


class _Replay(nn.Module):
    """A model that returns the given outputs in order, whatever the images."""

    def __init__(self, outputs):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.outputs = list(outputs)

    def forward(self, images):
        return [self.outputs.pop(0) for _ in images]


def test_eval_reports_cityscapes_ap_next_to_coco_and_writes_predictions(tmp_path):
    root = write_tree(tmp_path / "tree")
    cfg = DatasetConfig(format="cityscapes", root=str(root), split="val")
    ds = build_dataset(cfg, "instance", train=False, field="val_data")
    assert isinstance(ds, CityscapesInstanceDataset)
    outputs = []
    for index in range(len(ds)):
        _, target = ds[index]
        n = len(target["labels"])
        outputs.append(
            {
                "boxes": target["boxes"],
                "labels": target["labels"],
                "scores": torch.linspace(0.9, 0.5, n),
                "masks": target["masks"][:, None].float(),
            }
        )
    metrics = evaluate_instances(_Replay(outputs), ds, cityscapes_dir=tmp_path / "preds")
    assert metrics["cityscapes"]["AP"] == pytest.approx(100)
    assert metrics["segm"]["AP"] == pytest.approx(100) and metrics["boundary"][
        "AP"
    ] == pytest.approx(100)
    assert len(list((tmp_path / "preds").glob("*_pred.txt"))) == len(TREE)


def test_cli_trains_and_evaluates_on_a_cityscapes_tree(tmp_path, capsys):
    import yaml

    from pointrend.cli import main

    root = write_tree(tmp_path / "tree", pngs=False)
    data = {"format": "cityscapes", "root": str(root), "split": "val"}
    options = {
        **{"min_size": 64, "max_size": 128, "box_head_dim": 32, "box_score_thresh": 0.0},
        **{"rpn_batch_size_per_image": 32, "box_batch_size_per_image": 16},
        **{"box_detections_per_img": 5, "mask_output_size": 28},
    }
    config = {
        "model": {
            "task": "instance",
            "name": "pointrend",
            "backbone": "resnet18",
            "options": options,
        },
        "train_data": data,
        "val_data": {**data, "flip": False},
        "solver": {"images_per_batch": 2, "max_iter": 1, "warmup_iters": 1},
        "checkpoint_period": 0,
    }
    cfg = tmp_path / "cityscapes.yaml"
    cfg.write_text(yaml.safe_dump(config))
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    out = tmp_path / "metrics.json"
    weights = tmp_path / "run" / "model_final.pt"
    assert (
        main(["eval", str(cfg), "--weights", str(weights), "--out", str(out), "--no-progress"]) == 0
    )
    metrics = json.loads(out.read_text())
    assert 0 <= metrics["cityscapes"]["AP"] <= metrics["cityscapes"]["AP50"] <= 100
    assert set(metrics) == {"bbox", "segm", "boundary", "cityscapes"}
    written = sorted(p.name for p in (tmp_path / "metrics_cityscapes").glob("*_pred.txt"))
    assert written == [f"{n.split('/')[1]}_pred.txt" for n in sorted(TREE)]
    assert "Cityscapes predictions written to" in capsys.readouterr().out
    lines = [
        line.split()
        for path in (tmp_path / "metrics_cityscapes").glob("*_pred.txt")
        for line in path.read_text().splitlines()
    ]
    assert lines  # box_score_thresh 0: every image has detections
    for mask, label_id, score in lines:
        assert (tmp_path / "metrics_cityscapes" / mask).is_file() and 0 <= float(score) <= 1
        assert int(label_id) in (24, 25, 26, 27, 28, 31, 32, 33)
