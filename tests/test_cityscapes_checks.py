"""Every Cityscapes annotation source is checked before the first iteration: a broken polygons
file stops ``train`` at start-up, naming the file, before anything is written."""

import json

import pytest
import yaml
from test_cityscapes import TREE, write_tree

from pointrend.cli import main
from pointrend.data.cityscapes import CityscapesInstanceDataset
from pointrend.data.coco import DataError

FIRST = sorted(TREE)[0]  # aachen/aachen_000000_000019


def _polygons_file(root, name=FIRST):
    city, stem = name.split("/")
    return root / "gtFine" / "val" / city / f"{stem}_gtFine_polygons.json"


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"imgHeight": 64, "imgWidth": 128, "objects": [', "not a readable Cityscapes polygons"),
        (
            '{"imgHeight": 64, "imgWidth": 100, "objects": []}',
            r"is \(64, 100\) \(imgHeight, imgWidth\)",
        ),
        ('{"imgHeight": 64, "imgWidth": 128}', "no 'objects' list"),
        (
            '{"imgHeight": 64, "imgWidth": 128, "objects": [{"label": "car", "polygon": [[1]]}]}',
            r"objects\[0\] \(car\): 'polygon' must be a list of \[x, y\] points",
        ),
        (
            '{"imgHeight": 64, "imgWidth": 128, "objects": [{"label": "ufo", "polygon": [[1, 2]]}]}',
            "label 'ufo' is not a Cityscapes label",
        ),
    ],
)
def test_a_broken_polygons_file_is_found_when_the_dataset_is_made(tmp_path, text, message):
    root = write_tree(tmp_path, pngs=False)
    _polygons_file(root).write_text(text)
    with pytest.raises(DataError, match=message) as error:
        CityscapesInstanceDataset(root, "val")
    assert str(_polygons_file(root)) in str(error.value)


def test_groups_and_deleted_objects_are_accepted(tmp_path):
    root = write_tree(tmp_path, pngs=False)
    data = json.loads(_polygons_file(root).read_text())
    data["objects"].append({"label": "bicyclegroup", "polygon": [[1, 1], [5, 1], [5, 5]]})
    data["objects"].append({"label": "car", "polygon": [[1.5, 2.5]], "deleted": 1})
    _polygons_file(root).write_text(json.dumps(data))
    assert len(CityscapesInstanceDataset(root, "val")) == len(TREE)


def test_train_stops_before_writing_anything(tmp_path, capsys):
    root = write_tree(tmp_path / "tree", pngs=False)
    _polygons_file(root, sorted(TREE)[-1]).write_text("{not json")  # the last image's
    data = {"format": "cityscapes", "root": str(root), "split": "val"}
    config = {
        "model": {"task": "instance", "backbone": "resnet18", "options": {"min_size": 64}},
        "train_data": data,
        "solver": {"images_per_batch": 1, "max_iter": 3, "warmup_iters": 0},
        "checkpoint_period": 1,
    }
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(config))
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    assert "bonn_000000_000019_gtFine_polygons.json" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # found before anything was written


def test_unknown_ids_in_an_instance_id_png_are_named_before_scoring(tmp_path):
    import numpy as np
    from PIL import Image

    root = write_tree(tmp_path, jsons=False)
    city, stem = FIRST.split("/")
    png = root / "gtFine" / "val" / city / f"{stem}_gtFine_instanceIds.png"
    ids = np.asarray(Image.open(png)).copy()
    ids[0, :4] = 45  # no Cityscapes label has id 45
    Image.fromarray(ids).save(png)
    dataset = CityscapesInstanceDataset(root, "val")
    with pytest.raises(
        DataError, match=r"instanceIds\.png: instance ids \[45\] are not Cityscapes"
    ):
        assert dataset.coco is None  # built by eval before its first prediction
