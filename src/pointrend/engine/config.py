"""Training configs: YAML files loaded into dataclasses, overridable with ``key.sub=value``.

Unknown keys, wrong types and out-of-range values are errors that name the key and the file, so
a typo never silently falls back to a default. Float fields take any number as a person writes it
(``1e-4``, ``1E4``, ``.5``; PyYAML reads some of these as strings). The number of classes comes
from the dataset unless the config sets it. A dataset section names its ``format``: there is no
default data, a config meant for generated images says ``format: synthetic``.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from ..options import current_option_names
from .config_values import NUMBER, ConfigError, option_types, option_value, unwrap_optional
from .distributed import DeviceError, check_device_name, resolve_amp

__all__ = [
    "ConfigError",
    "DatasetConfig",
    "ModelConfig",
    "SolverConfig",
    "TrainConfig",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "require_train_data",
    "differences",
    "model_differences",
    "model_keys_written",
    "with_checkpoint_model",
]


@dataclass
class ModelConfig:
    """Which model to build. ``name`` is ``pointrend`` or the baseline of the task (``maskrcnn``
    for instances, ``coarse`` for semantic); ``arch`` is the semantic coarse model
    (``semantic_fpn`` or ``deeplabv3``). ``options`` go to the builder as keyword arguments."""

    task: str = "instance"
    name: str = "pointrend"
    arch: str = "fpn"
    backbone: str = "resnet50"
    num_classes: int | None = None
    weights: str | None = None
    weights_backbone: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class DatasetConfig:
    """Where the data comes from. ``format`` (required): ``synthetic`` (generated from ``seed``),
    ``coco`` (``images`` dir + ``annotations`` json), ``folder`` (``images`` + ``labels`` dirs),
    ``cityscapes`` (``root`` + ``split``: train ids for semantic models, gtFine instances for
    instance models). ``min_size`` / ``max_size`` / ``crop_size`` resize and crop semantic data;
    instance models resize inside (``model.options.min_size``). ``gt_size`` (synthetic instance
    data, evaluation): ground truth rendered exactly at ``gt_size x gt_size`` while the image
    stays ``image_size``; predictions are pasted at that size."""

    format: str | None = None
    images: str | None = None
    annotations: str | None = None
    labels: str | None = None
    root: str | None = None
    split: str = "train"
    num_images: int = 64
    image_size: int = 256
    seed: int = 0
    min_size: list[int] | None = None
    max_size: int = 1333
    crop_size: list[int] | None = None
    flip: bool = True
    color_jitter: float = 0.0
    gt_size: int | None = None


@dataclass
class SolverConfig:
    optimizer: str = "sgd"
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    images_per_batch: int = 16
    max_iter: int = 90000
    warmup_iters: int = 1000
    warmup_factor: float = 0.001
    schedule: str = "step"
    steps: list[int] = field(default_factory=lambda: [60000, 80000])
    gamma: float = 0.1
    poly_power: float = 0.9
    clip_grad_norm: float | None = None
    # mixed precision: fp16, bf16, true (fp16 on CUDA, bf16 on the CPU) or false
    amp: bool | str = False
    # micro-batches per optimizer step: each process runs images_per_batch / (processes x
    # accumulate_steps) images at a time, the step sees the same images_per_batch images
    accumulate_steps: int = 1


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train_data: DatasetConfig = field(default_factory=DatasetConfig)
    val_data: DatasetConfig | None = None
    solver: SolverConfig = field(default_factory=SolverConfig)
    output_dir: str = "outputs/train"
    seed: int = 0
    device: str = "auto"  # auto, cpu, cuda or cuda:N (see pointrend.engine.distributed)
    num_workers: int | None = None  # data loading processes per GPU/process; None: automatic
    sync_batchnorm: bool = False  # BatchNorm statistics across processes (CUDA, many processes)
    log_period: int = 20
    checkpoint_period: int = 5000
    eval_period: int = 0
    deterministic: bool = False


def _is_dataclass_type(tp) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _convert(value: Any, tp, where: str):
    """Check and convert a YAML value to the annotated type; ``where`` names the key and file."""
    inner = unwrap_optional(tp)
    if value is None:  # an empty section of a required one: its defaults
        return inner() if inner is tp and _is_dataclass_type(tp) else None
    tp = inner
    if _is_dataclass_type(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, where)
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, list | tuple):
            value = [value]
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if typing.get_origin(tp) in (typing.Union, types.UnionType):  # e.g. bool | str: as written
        if not isinstance(value, typing.get_args(tp)):
            names = " or ".join(t.__name__ for t in typing.get_args(tp))
            raise ConfigError(f"{where}: expected {names}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str) and NUMBER.match(value.strip()):
        return float(value)
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def _build(cls, values: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            f"known keys: {', '.join(sorted(names))}"
        )
    kwargs = {k: _convert(v, hints[k], f"{where}.{k}") for k, v in values.items()}
    return cls(**kwargs)


def config_to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)


def apply_overrides(values: dict, overrides: list[str], source: str = "--set") -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML) to a nested dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"{source}: override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        node = values
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{source}: {key!r}: {part!r} is not a mapping")
        node[parts[-1]] = yaml.safe_load(raw)
    return values


# (section, key, smallest allowed value): a zero batch or period would divide by zero later
_MINIMUM = (
    ("solver", "images_per_batch", 1),
    ("solver", "max_iter", 1),
    ("solver", "warmup_iters", 0),
    ("solver", "accumulate_steps", 1),
    ("", "log_period", 1),
    ("", "checkpoint_period", 0),
    ("", "eval_period", 0),
)


def _check_ranges(cfg: TrainConfig, where: str) -> TrainConfig:
    for section, key, least in _MINIMUM:
        value = getattr(getattr(cfg, section) if section else cfg, key)
        if value is None or value < least:
            name = f"{section}.{key}" if section else key
            raise ConfigError(f"{where}: {name} must be at least {least}, got {value}")
    if not cfg.solver.lr > 0:
        raise ConfigError(f"{where}: solver.lr must be positive, got {cfg.solver.lr}")
    if cfg.num_workers is not None and cfg.num_workers < 0:
        raise ConfigError(f"{where}: num_workers must be at least 0, got {cfg.num_workers}")
    try:
        check_device_name(cfg.device)
        resolve_amp(cfg.solver.amp, torch.device("cpu"))  # the spelling; the GPU's at run time
    except DeviceError as err:
        raise ConfigError(f"{where}: {err}") from err
    return cfg


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return values


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    values = _read_yaml(path) if path is not None else {}
    where = str(path) if path is not None else "defaults"
    values = apply_overrides(values, list(overrides or []))
    return _with_source(_check_ranges(_build(TrainConfig, values, where), where), where)


def config_from_dict(
    values: dict, overrides: list[str] | None = None, where: str = "checkpoint config"
) -> TrainConfig:
    """A :class:`TrainConfig` from a plain dict (e.g. the one a checkpoint holds), with overrides."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(values).__name__}")
    values = apply_overrides(copy.deepcopy(values), list(overrides or []))
    return _with_source(_check_ranges(_build(TrainConfig, values, where), where), where)


def require_train_data(cfg: TrainConfig, where: str = "the config") -> None:
    """Refuse a config that does not say what to train on (no ``train_data.format``)."""
    if cfg.train_data.format is None:
        raise ConfigError(
            f"{where}: train_data.format is not set: name the training data (format: coco, "
            "folder or cityscapes with its paths), or format: synthetic for generated images"
        )


def _flat(values: dict, prefix: str) -> dict:
    flat = {}
    for k, v in values.items():
        if isinstance(v, dict) and v:
            flat.update(_flat(v, f"{prefix}{k}."))
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def differences(
    first: dict, second: dict, prefix: str = "", names: tuple[str, str] = ("checkpoint", "config")
) -> list[str]:
    """``key: value in the <first>, value in the <second>`` for each (nested, dotted) key in
    which two plain config dicts differ; ``names`` say where each dict comes from."""
    a, b = _flat(first, prefix), _flat(second, prefix)

    def show(flat: dict, key: str) -> str:
        return repr(flat[key]) if key in flat else "unset"

    return [
        f"{k}: {show(a, k)} in the {names[0]}, {show(b, k)} in the {names[1]}"
        for k in sorted(set(a) | set(b))
        if k not in a or k not in b or a[k] != b[k]
    ]


def model_keys_written(path: str | Path) -> dict:
    """The dotted keys (``model.options.min_size``) and values a YAML config file itself sets
    in its model section (defaults left out)."""
    model = _read_yaml(path).get("model") or {}
    return _flat(model, "model.") if isinstance(model, dict) else {}


def model_differences(stored: ModelConfig, given: ModelConfig) -> list[str]:
    """The model keys in which a checkpoint's model config and a given one differ."""
    return differences(dataclasses.asdict(stored), dataclasses.asdict(given), "model.")


def with_checkpoint_model(
    given: TrainConfig | None, stored: dict | None, where: str
) -> tuple[TrainConfig, list[str]]:
    """The config to rebuild a checkpoint's model with: the one rule of eval, predict and resume.

    The model section is the one the checkpoint was trained with (``stored``, the config a
    checkpoint holds; ``where`` names the checkpoint; options under their names of earlier
    releases are read under today's, :data:`~pointrend.options.RENAMED_OPTIONS`), everything
    else (data, solver, output)
    comes from ``given`` when there is one. Returns that config and the model keys in which
    ``given`` differed (``model_differences``; empty when they agree or one of them is missing).
    """
    if stored is None:
        if given is None:
            raise ConfigError(f"{where} holds no config: pass the training config")
        return given, []
    stored_cfg = config_from_dict(_current_names(stored, where), where=f"config in {where}")
    if given is None:
        return stored_cfg, []
    diffs = model_differences(stored_cfg.model, given.model)
    return dataclasses.replace(given, model=copy.deepcopy(stored_cfg.model)), diffs


def _current_names(stored: dict, where: str) -> dict:
    """A checkpoint's stored config with its model options under today's names."""
    model = stored.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("options"), dict):
        return stored
    try:
        options = current_option_names(model["options"], f"config in {where}: model.options")
    except ValueError as err:
        raise ConfigError(str(err)) from err
    return {**stored, "model": {**model, "options": options}}


def _with_source(cfg: TrainConfig, where: str) -> TrainConfig:
    """Remember where the model config was read (an attribute, not a field: checkpoints do not
    store it), so that errors in ``model.options`` can name the file; type its options."""
    cfg.model.source = where
    types = option_types(cfg.model)
    cfg.model.options = {
        key: option_value(value, types.get(key), f"{where}: model.options.{key}")
        for key, value in cfg.model.options.items()
    }
    return cfg
