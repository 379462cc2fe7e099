"""``model.options`` are typed when the config is read: numbers as people write them, the
builder's annotated types, no non-finite numbers."""

import pytest
import yaml

from pointrend.engine.build import build_model
from pointrend.engine.config import ConfigError, config_from_dict, load_config


def _config(tmp_path, options: str, task: str = "instance"):
    path = tmp_path / "c.yaml"
    path.write_text(f"model:\n  task: {task}\n  backbone: resnet18\n  options: {options}\n")
    return path


def test_numbers_written_with_an_exponent_are_numbers(tmp_path):
    text = "{box_score_thresh: 5e-2, oversample_ratio: 1e1, mask_output_size: 1e1}"
    options = load_config(_config(tmp_path, text)).model.options
    assert options == {
        "box_score_thresh": 0.05,
        "oversample_ratio": 10.0,
        "mask_output_size": 10,
    }
    assert type(options["mask_output_size"]) is int and type(options["box_score_thresh"]) is float
    semantic = load_config(_config(tmp_path, "{importance_sample_ratio: 7.5E-1}", "semantic"))
    assert semantic.model.options == {"importance_sample_ratio": 0.75}


def test_a_checkpoint_holding_a_string_number_is_typed_on_load():
    stored = {
        "model": {"task": "instance", "backbone": "resnet18", "options": {"box_nms_thresh": "1e-1"}}
    }
    cfg = config_from_dict(yaml.safe_load(yaml.safe_dump(stored)), where="config in m.pt")
    assert cfg.model.options["box_nms_thresh"] == pytest.approx(0.1)


@pytest.mark.parametrize(
    "value, message",
    [
        ("abc", "expected a float, got 'abc'"),
        (".nan", "expected a finite number, got nan"),
        (".inf", "expected a finite number, got inf"),
        ("true", "expected a float, got True"),
    ],
)
def test_wrong_option_values_name_the_key_and_the_file(tmp_path, value, message):
    path = _config(tmp_path, f"{{mask_points_per_side: {value}}}")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value) == f"{path}: model.options.mask_points_per_side: {message}"


def test_an_int_option_refuses_a_fraction(tmp_path):
    path = _config(tmp_path, "{mask_output_size: 2.5}")
    with pytest.raises(
        ConfigError, match=r"model\.options\.mask_output_size: expected an int, got 2\.5"
    ):
        load_config(path)


def test_typed_options_build_the_model(tmp_path):
    text = "{box_head_dim: 1.6e1, coarse_head_fc_dim: 1.6e1, coarse_head_conv_dim: 1.6e1, min_size: 3.2e1}"
    cfg = load_config(_config(tmp_path, text))
    model = build_model(cfg.model, 3, initial_weights=False)
    assert model.roi_heads.box_head.fc6.out_features == 16
