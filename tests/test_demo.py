"""The demo on the shipped checkpoints (reduced setting), and the checkpoints themselves."""

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from pointrend.cli import main
from pointrend.demo import SHIPPED, WEIGHTS_DIR
from pointrend.engine import load_checkpoint, load_config, load_model_weights
from pointrend.engine.build import build_model
from pointrend.engine.config import with_checkpoint_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_shipped_checkpoints_fit_the_budget():
    sizes = {name: (WEIGHTS_DIR / name).stat().st_size for name in SHIPPED.values()}
    assert sum(sizes.values()) <= 25 * 1024**2, sizes


@pytest.mark.parametrize("name", sorted(SHIPPED.values()))
def test_shipped_checkpoint_loads_into_the_model_its_config_describes(name):
    path = WEIGHTS_DIR / name
    ckpt = load_checkpoint(path)  # weights_only=True inside
    cfg = load_config(CONFIGS / name.replace(".pt", ".yaml"))
    # the model in the checkpoint is the one the repo's config describes (options written under
    # their old names read under today's)
    stored, _ = with_checkpoint_model(None, ckpt["config"], str(path))
    assert dataclasses.asdict(stored.model) == dataclasses.asdict(cfg.model)
    # the recipe too (solver keys added since the checkpoint was written hold their defaults)
    assert dataclasses.asdict(stored.solver) == dataclasses.asdict(cfg.solver)
    model = build_model(cfg.model, ckpt["num_classes"])
    load_model_weights(model, path)
    assert ckpt["iteration"] == cfg.solver.max_iter
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_demo_end_to_end_writes_every_file(tmp_path, capsys):
    out = tmp_path / "demo"
    image = tmp_path / "mine.png"
    from PIL import Image

    Image.new("RGB", (120, 90), (40, 120, 200)).save(image)
    code = main(
        [
            "demo",
            "--out",
            str(out),
            "--instance-images",
            "2",
            "--semantic-images",
            "2",
            "--image",
            str(image),
        ]
    )
    assert code == 0
    for name in (
        "subdivision.png",
        "instances.png",
        "semantic.png",
        "metrics.json",
        "mine_pointrend.png",
        "mine_maskrcnn.png",
    ):
        assert (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("maskrcnn", "pointrend"):
        assert set(metrics["instance"][key]) >= {"mask_AP", "mask_AP75", "boundary_AP"}
    for key in ("semantic_coarse", "semantic_pointrend"):
        assert 0 <= metrics["semantic"][key]["mIoU"] <= 100
    printed = capsys.readouterr().out
    assert "Boundary AP" in printed and "boundary F" in printed and "demo took" in printed
    assert "PointRend (224x224)" in printed


def test_demo_with_per_box_masks(tmp_path, capsys):
    out = tmp_path / "demo"
    argv = ["demo", "--out", str(out), "--instance-images", "1", "--semantic-images", "1"]
    assert main([*argv, "--mask-resolution", "box"]) == 0
    assert json.loads((out / "metrics.json").read_text())["setting"]["mask_resolution"] == "box"
    assert "PointRend (per-box grid)" in capsys.readouterr().out
    assert (out / "instances.png").stat().st_size > 0
    from pointrend.demo import DemoOptions, _load

    branch = _load(DemoOptions(mask_resolution="box"))["pointrend"].model.roi_heads.mask_branch
    assert branch.config.mask_resolution == "box"
