"""The detectron2 importer's checks and messages: every zoo entry imports from exactly its
published keys, non-finite weights are refused at import and at load, config values that
pointrend cannot honour are named."""

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import pointrend.interop.detectron2 as d2
from pointrend.cli import main
from pointrend.demo import SHIPPED, WEIGHTS_DIR
from pointrend.engine.checkpoint import CheckpointError, load_checkpoint
from pointrend.engine.inference import load_trained_model
from pointrend.interop.detectron2 import D2ImportError, read_detectron2_weights
from pointrend.interop.detectron2.zoo import ZOO

KEYS = Path(__file__).parent / "fixtures" / "detectron2" / "zoo"


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_entry_imports_from_its_published_keys(name, monkeypatch):
    """The checkpoint read holds exactly the published keys and shapes (zeros; instance models
    on the meta device, as their size would cost seconds each), imported with ``--zoo``."""
    keys = json.loads((KEYS / f"{name}.json").read_text())["keys"]
    device = "meta" if ZOO[name].task == "instance" else "cpu"
    weights = {key: torch.zeros(shape, device=device) for key, shape in keys}
    monkeypatch.setattr(d2, "read_detectron2_weights", lambda path: weights)
    with torch.device(device):
        imported = d2.import_detectron2("model_final.pkl", zoo=name)
    assert imported.model_config["task"] == ZOO[name].task
    assert imported.model_config["num_classes"] == len(imported.class_names)


def test_a_non_finite_weight_is_refused_at_import(tmp_path):
    weights = {"a.weight": torch.ones(2, 2), "b.bias": torch.tensor([0.0, float("nan")])}
    torch.save({"model": weights}, tmp_path / "model.pth")
    with pytest.raises(D2ImportError, match=r"model\.pth: b\.bias holds 1 non-finite value"):
        read_detectron2_weights(tmp_path / "model.pth")
    with open(tmp_path / "model.pkl", "wb") as f:
        pickle.dump({"model": {"c.weight": np.array([np.inf, -np.inf], np.float32)}}, f)
    with pytest.raises(D2ImportError, match=r"model\.pkl: c\.weight holds 2 non-finite"):
        read_detectron2_weights(tmp_path / "model.pkl")


def test_a_non_finite_weight_is_refused_at_load(tmp_path, capsys):
    ckpt = load_checkpoint(WEIGHTS_DIR / SHIPPED["pointrend"])
    key = "roi_heads.box_predictor.cls_score.bias"
    ckpt["model"][key] = ckpt["model"][key].float().clone()
    ckpt["model"][key][0] = float("inf")
    torch.save(ckpt, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=rf"broken\.pt: {key} holds 1 non-finite value"):
        load_trained_model(tmp_path / "broken.pt")
    argv = ["predict", str(tmp_path / "broken.pt"), "--weights", str(tmp_path / "broken.pt")]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 1
    assert key in capsys.readouterr().err
