"""Configs: numbers as people write them, ranges, the training data, the model of a checkpoint."""

import pytest
import torch
import yaml

from pointrend.engine import ConfigError, load_config, train
from pointrend.engine.build import build_model
from pointrend.engine.config import config_to_dict, require_train_data, with_checkpoint_model
from pointrend.engine.inference import load_trained_model


@pytest.mark.parametrize("text", ["1e-4", "1E4", ".5", "2.5e+3", "3."])
def test_float_fields_take_numbers_as_written(tmp_path, text):
    f = tmp_path / "c.yaml"
    f.write_text(f"solver:\n  lr: {text}\n")
    cfg = load_config(f, [f"solver.gamma={text}"])
    assert cfg.solver.lr == float(text) and isinstance(cfg.solver.lr, float)
    assert cfg.solver.gamma == float(text) and isinstance(cfg.solver.gamma, float)


def test_words_are_still_not_floats():
    with pytest.raises(ConfigError, match="solver.lr: expected float, got '1e'"):
        load_config(None, ["solver.lr=1e"])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("solver.images_per_batch=0", "solver.images_per_batch must be at least 1, got 0"),
        ("solver.max_iter=0", "solver.max_iter must be at least 1, got 0"),
        ("log_period=0", "log_period must be at least 1, got 0"),
        ("checkpoint_period=-1", "checkpoint_period must be at least 0, got -1"),
        ("solver.lr=0", "solver.lr must be positive, got 0.0"),
    ],
)
def test_out_of_range_values_name_file_and_key(tmp_path, override, message):
    f = tmp_path / "c.yaml"
    f.write_text("seed: 1\n")
    with pytest.raises(ConfigError, match=rf"c\.yaml: {message}"):
        load_config(f, [override])


def test_missing_train_data_is_an_error_not_synthetic_data(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("model:\n  task: semantic\nsolver:\n  max_iter: 1\n")
    cfg = load_config(f, [f"output_dir={tmp_path / 'run'}"])
    with pytest.raises(ConfigError, match=r"c\.yaml: train_data\.format is not set"):
        require_train_data(cfg, str(f))
    with pytest.raises(ConfigError, match="train_data.format is not set"):
        train(cfg, progress=False)
    assert not (tmp_path / "run").exists()


def test_synthetic_recipes_say_synthetic():
    from pathlib import Path

    recipes = sorted((Path(__file__).resolve().parents[1] / "configs").glob("synthetic_*.yaml"))
    assert recipes
    for path in recipes:
        assert load_config(path).train_data.format == "synthetic", path


def _tiny_semantic():
    options = {"train_num_points": 64, "subdivision_num_points": 256}
    return load_config(
        None,
        [
            "model.task=semantic",
            "model.backbone=resnet18",
            f"model.options={options}",
            "train_data={format: synthetic, num_images: 2, image_size: 32}",
            "val_data={format: synthetic, num_images: 2, image_size: 32, seed: 5}",
        ],
    )


def test_eval_builds_the_checkpoint_model_and_says_how_the_config_differs(tmp_path):
    trained_cfg = _tiny_semantic()
    trained_cfg.model.options["subdivision_num_points"] = 128  # a --set used in training
    model = build_model(trained_cfg.model, 3)
    weights = tmp_path / "w.pt"
    torch.save({"model": model.state_dict(), "config": config_to_dict(trained_cfg)}, weights)
    given = tmp_path / "eval.yaml"
    eval_values = config_to_dict(_tiny_semantic())
    eval_values["val_data"]["num_images"] = 1  # the data comes from the YAML
    given.write_text(yaml.safe_dump(eval_values))
    loaded = load_trained_model(weights, given)
    assert loaded.config.model.options["subdivision_num_points"] == 128
    assert loaded.config.val_data.num_images == 1
    assert loaded.config_notes == [
        "model.options.subdivision_num_points: 128 in the checkpoint, 256 in the config"
    ]
    # --set still wins over both, model keys included
    loaded = load_trained_model(weights, given, ["model.options.subdivision_num_points=64"])
    assert loaded.config.model.options["subdivision_num_points"] == 64


def test_one_rule_for_a_checkpoint_without_config():
    given = _tiny_semantic()
    assert with_checkpoint_model(given, None, "w.pt") == (given, [])
    with pytest.raises(ConfigError, match="w.pt holds no config"):
        with_checkpoint_model(None, None, "w.pt")
