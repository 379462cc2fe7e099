"""Published models in one call: ``pointrend.models.from_zoo`` and ``--weights zoo:NAME``
download detectron2's checkpoint once (replaced here by the detectron2 test fixture, a local
file), convert it once, and give detectron2's detections."""

import pytest
import torch
from detectron2_fixture import d2_config_yaml, fixture_image, instance_weights, write_zoo_pkl
from test_detectron2_import import D2, match_detections

import pointrend.interop.detectron2.zoo as zoo
from pointrend.cli import main
from pointrend.interop.detectron2 import D2Config
from pointrend.models import from_zoo, zoo_names

NAME = "pointrend_rcnn_R_50_FPN_1x_coco"


@pytest.fixture
def local_zoo(tmp_path, monkeypatch):
    """A hub cache in ``tmp_path`` whose 'download' copies the fixture's zoo .pkl; the zoo
    entry's config is the fixture's (3 classes); returns the list of downloaded URLs."""
    source = write_zoo_pkl(instance_weights(), tmp_path / "fixture.pkl", "numpy.core")
    config = D2Config.from_yaml(d2_config_yaml(tmp_path / "d2.yaml"))
    downloads = []

    def download(url, dst, progress=True):
        downloads.append(url)
        with open(dst, "wb") as f:
            f.write(source.read_bytes())

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setattr(zoo, "zoo_config", lambda name: config)
    return downloads


def test_from_zoo_downloads_once_converts_once_and_gives_detectron2s_detections(local_zoo):
    assert NAME in zoo_names()
    model = from_zoo(NAME, device="cpu")
    assert not model.training and model.class_names[0] == "background"
    image = fixture_image(0)
    with torch.no_grad():
        out = model([image])[0]
    d2_boxes = torch.from_numpy(D2["img0_boxes"])
    d2_classes = torch.from_numpy(D2["img0_classes"]).long()
    assert len(out["boxes"]) == len(d2_boxes)
    best, _ = match_detections(out["boxes"], out["labels"], d2_boxes, d2_classes)
    assert best.min() >= 0.999
    converted = zoo.zoo_checkpoint_path(NAME).with_suffix(".pointrend.pt")
    assert converted.is_file() and converted.with_suffix(".yaml").is_file()
    from_zoo(NAME, device="cpu")  # from the converted file: no second download
    assert local_zoo == [zoo.zoo_model(NAME).url]


def test_predict_takes_a_zoo_name_as_weights(local_zoo, tmp_path, capsys):
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray((fixture_image(1).permute(1, 2, 0) * 255).round().byte().numpy()).save(path)
    argv = ["predict", str(path), "--weights", f"zoo:{NAME}", "--out", str(tmp_path / "out")]
    assert main([*argv, "--no-progress", "--score-thresh", "0"]) == 0
    assert (tmp_path / "out" / "photo_overlay.png").is_file()
    assert main([*argv[:3], "zoo:no_such_model", *argv[4:]]) == 1
    assert "unknown model" in capsys.readouterr().err


def test_from_zoo_offline_names_the_url_and_the_path(tmp_path, monkeypatch):
    def offline(url, dst, progress=True):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ValueError) as err:
        from_zoo(NAME, device="cpu")
    assert zoo.zoo_model(NAME).url in str(err.value)
    assert str(zoo.zoo_checkpoint_path(NAME)) in str(err.value)
