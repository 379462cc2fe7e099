"""One clear line, naming the key / file / value, for inputs that used to give tracebacks, torch
paragraphs or silence (issue: "Unclear messages")."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from pointrend.cli import main
from pointrend.demo import SHIPPED, WEIGHTS_DIR
from pointrend.engine.inference import list_images
from pointrend.interop.detectron2 import D2Config, D2ImportError, import_detectron2
from pointrend.interop.detectron2.instance import instance_options

ROOT = Path(__file__).parents[1]
WEIGHTS = WEIGHTS_DIR / SHIPPED["pointrend"]
ZOO = ROOT / "tests" / "fixtures" / "detectron2" / "zoo"


def _effective(name="pointrend_rcnn_R_50_FPN_1x_coco", **changes) -> D2Config:
    values = json.loads((ZOO / f"{name}.json").read_text())["effective"]
    return D2Config({**values, **changes}, "config.yaml")


@pytest.mark.parametrize(
    "key, value",
    [
        ("MODEL.ROI_HEADS.NAME", "CascadeROIHeads"),
        ("MODEL.ROI_HEADS.NAME", "Res5ROIHeads"),
        ("MODEL.MASK_ON", False),
        ("MODEL.KEYPOINT_ON", True),
        ("MODEL.ROI_HEADS.NUM_CLASSES", 0),
    ],
)
def test_configs_pointrend_cannot_import_name_the_key_and_value(tmp_path, key, value):
    with pytest.raises(D2ImportError) as error:
        import_detectron2(tmp_path / "not_read.pkl", _effective(**{key: value}))
    assert f"config.yaml: {key} = {value!r}" in str(error.value)


def test_a_config_value_of_the_wrong_type_names_the_key():
    with pytest.raises(D2ImportError, match=r"MODEL\.RESNETS\.DEPTH = 'fifty': expected an int"):
        instance_options(_effective(**{"MODEL.RESNETS.DEPTH": "fifty"}))


def test_a_binary_d2_config_names_the_file(tmp_path):
    config = tmp_path / "model_final.pkl"
    config.write_bytes(pickle.dumps({"model": {"w": np.zeros(3, np.float32)}}))
    with pytest.raises(D2ImportError, match=r"model_final\.pkl: not a text file"):
        D2Config.from_yaml(config)


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if ": note: " not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _image(tmp_path, name="a.png") -> Path:
    (tmp_path / "in").mkdir(exist_ok=True)
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(tmp_path / "in" / name)
    return tmp_path / "in" / name


def test_a_detectron2_pkl_given_as_weights_says_to_import_it(tmp_path, capsys):
    pkl = tmp_path / "model_final_f10217.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"w": np.zeros(3, np.float32)}}, protocol=2))
    image = _image(tmp_path)
    assert main(["predict", str(image), "--weights", str(pkl), "--out", str(tmp_path / "o")]) == 1
    assert "pointrend import-detectron2" in _error(capsys)


def test_an_image_given_as_weights_is_one_short_line(tmp_path, capsys):
    image = _image(tmp_path)
    assert main(["predict", str(image), "--weights", str(image), "--out", str(tmp_path / "o")]) == 1
    line = _error(capsys)
    assert "a.png is not a complete checkpoint written by torch.save" in line
    assert "weights_only" not in line and len(line) < 300


@pytest.mark.parametrize("thresh", ["nan", "2", "-0.1"])
def test_score_thresh_outside_0_1_is_refused(tmp_path, capsys, thresh):
    image = _image(tmp_path)
    argv = ["predict", str(image), "--weights", str(WEIGHTS), "--out", str(tmp_path / "o")]
    assert main([*argv, "--score-thresh", thresh]) == 1
    assert "--score-thresh must be in [0, 1]" in _error(capsys)
    assert not (tmp_path / "o").exists()


def test_a_data_only_config_gives_no_note_and_a_wrong_task_is_an_error(tmp_path, capsys):
    image = _image(tmp_path)
    data = tmp_path / "data.yaml"
    data.write_text(yaml.safe_dump({"val_data": {"format": "synthetic", "num_images": 1}}))
    argv = ["predict", str(image), "--weights", str(WEIGHTS), "--no-progress"]
    assert main([*argv, "--config", str(data), "--out", str(tmp_path / "o1")]) == 0
    assert "differs in" not in capsys.readouterr().err
    changed = tmp_path / "changed.yaml"
    changed.write_text(yaml.safe_dump({"model": {"options": {"mask_output_size": 7}}}))
    assert main([*argv, "--config", str(changed), "--out", str(tmp_path / "o2")]) == 0
    note = capsys.readouterr().err
    assert "differs in model.options.mask_output_size:" in note and "model.arch" not in note
    semantic = ROOT / "configs" / "synthetic_semantic_pointrend_fpn_r18.yaml"
    assert main([*argv, "--config", str(semantic), "--out", str(tmp_path / "o3")]) == 1
    assert "sets model.task: semantic, but" in _error(capsys)


def test_a_folder_given_to_predict_includes_gif_files(tmp_path):
    Image.fromarray(np.full((8, 8), 3, np.uint8), mode="L").convert("P").save(tmp_path / "a.gif")
    _image(tmp_path, "b.png")
    (tmp_path / "in" / "a.gif").write_bytes((tmp_path / "a.gif").read_bytes())
    assert [p.name for p in list_images([tmp_path / "in"])] == ["a.gif", "b.png"]
