"""Configs to models: every recipe names a builder of pointrend.models, and option errors name
the file and the key."""

import dataclasses
from pathlib import Path

import pytest
import torch
from torchvision.ops.misc import FrozenBatchNorm2d

import pointrend
from pointrend import models
from pointrend.engine import ConfigError, load_config
from pointrend.engine.build import build_model
from pointrend.engine.builders import model_builder
from pointrend.engine.inference import load_trained_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
EXPECTED = {
    "coco_maskrcnn_r50_fpn_1x": "maskrcnn",
    "coco_pointrend_r50_fpn_1x": "pointrend_maskrcnn",
    "cityscapes_pointrend_r50_fpn": "pointrend_maskrcnn",
    "cityscapes_pointrend_semantic_fpn_r50": "pointrend_semantic_fpn",
    "cityscapes_pointrend_deeplabv3_r50": "pointrend_deeplabv3",
    "synthetic_semantic_coarse_fpn_r18": "semantic_fpn",
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipes_build_with_the_builder_they_name(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    builder = model_builder(cfg.model)
    assert builder is getattr(models, EXPECTED[name])
    offline = dataclasses.replace(cfg.model, weights=None, weights_backbone=None)  # no download
    model = build_model(offline, 5)
    assert sum(p.numel() for p in model.parameters()) > 1_000_000


def _config(tmp_path, options: str, name="pointrend", task="instance"):
    path = tmp_path / "x.yaml"
    path.write_text(
        f"model:\n  task: {task}\n  name: {name}\n  backbone: resnet18\n  options:\n{options}"
    )
    return path, load_config(path)


def test_a_typo_in_model_options_names_the_file_the_key_and_the_real_options(tmp_path):
    path, cfg = _config(tmp_path, "    box_head_dim: 16\n    min_szie: 100\n")
    with pytest.raises(ConfigError) as error:
        build_model(cfg.model, 4)
    message = str(error.value)
    assert message.startswith(
        f"{path}: model.options.min_szie: an unknown option of pointrend_maskrcnn; "
        "did you mean 'min_size'? known: "
    )
    known = message.split("known: ")[1].split(", ")
    assert {"box_head_dim", "fpn_channels", "mask_output_size", "min_size"} <= set(known)
    assert not [k for k in known if k.startswith("_")]

    path, cfg = _config(tmp_path, "    coarse_head_fc_dim: 16\n", name="maskrcnn")
    with pytest.raises(
        ConfigError, match=f"{path}: model.options.coarse_head_fc_dim: a PointRend mask"
    ):
        build_model(cfg.model, 4)
    path, cfg = _config(tmp_path, "    levls: P3-P5\n", task="semantic")
    with pytest.raises(ConfigError, match="levls: an unknown .* did you mean 'levels'"):
        build_model(cfg.model, 4)
    path, cfg = _config(tmp_path, "    weights_backbone: DEFAULT\n")
    with pytest.raises(ConfigError, match="weights_backbone: set model.weights_backbone instead"):
        build_model(cfg.model, 4)


def _no_downloads(monkeypatch):
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_a_model_for_a_checkpoint_has_the_pretrained_layout_without_downloading(monkeypatch):
    """``initial_weights=False`` (what loading a trained checkpoint does) downloads nothing but
    keeps the layout torchvision's weights give: frozen batch norm in the backbone."""
    _no_downloads(monkeypatch)
    cfg = load_config(CONFIGS / "coco_pointrend_r50_fpn_1x.yaml").model
    assert cfg.weights_backbone and "norm" not in cfg.options
    model = build_model(cfg, 5, initial_weights=False)
    norms = [type(m) for m in model.backbone.body.modules() if "Norm" in type(m).__name__]
    assert norms and all(issubclass(n, FrozenBatchNorm2d) for n in norms)


def test_a_checkpoint_trained_from_imagenet_weights_predicts_offline(monkeypatch, tmp_path):
    shipped = (
        Path(pointrend.__file__).parent / "weights" / "synthetic_semantic_pointrend_fpn_r18.pt"
    )
    ckpt = torch.load(shipped, weights_only=True)
    ckpt["config"]["model"]["weights_backbone"] = "IMAGENET1K_V1"  # as a real training run's
    torch.save(ckpt, tmp_path / "run.pt")
    _no_downloads(monkeypatch)
    image = torch.rand(1, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = load_trained_model(tmp_path / "run.pt", device="cpu").model(image)["out"]
        reference = load_trained_model(shipped, device="cpu").model(image)["out"]
    assert torch.equal(ours, reference)
