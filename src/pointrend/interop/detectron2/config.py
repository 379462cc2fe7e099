"""detectron2 configs, read as data: the merged ``config.yaml`` detectron2 writes into its output
folder, or the settings pointrend stores for each model-zoo entry.

A detectron2 config is a tree of upper-case keys (``MODEL.RESNETS.DEPTH``). :class:`D2Config`
reads it by dotted key; a key the importer needs and the config lacks is an error naming the key
and the file, never a silent default.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

__all__ = ["D2Config", "D2ImportError"]

_MISSING = object()


class D2ImportError(ValueError):
    """A detectron2 checkpoint or config cannot be imported; the message says which and why."""


class D2Config:
    """Dotted-key access to a detectron2 config.

    Args:
        values: the config as a nested mapping (``{"MODEL": {"RESNETS": {"DEPTH": 50}}}``) or a
            flat one (``{"MODEL.RESNETS.DEPTH": 50}``); both may be mixed.
        source: where it came from, for error messages.
    """

    def __init__(self, values: Mapping[str, Any], source: str = "detectron2 config"):
        self.source = source
        self._flat: dict[str, Any] = {}
        _flatten(values, "", self._flat)

    @classmethod
    def from_yaml(cls, path: str | Path) -> D2Config:
        """Read a detectron2 ``config.yaml`` (plain YAML: no code is run)."""
        path = Path(path)
        if not path.is_file():
            raise D2ImportError(f"detectron2 config not found: {path}")
        try:
            values = yaml.safe_load(path.read_text())
        except UnicodeDecodeError as err:
            raise D2ImportError(
                f"{path}: not a text file (byte {err.start} is not UTF-8): pass the config.yaml "
                "detectron2 wrote, not the weights"
            ) from err
        except yaml.YAMLError as err:
            text = " ".join(str(err).split())
            raise D2ImportError(f"{path}: not valid YAML: {text}") from err
        if not isinstance(values, dict):
            raise D2ImportError(f"{path}: not a detectron2 config (the top level is not a mapping)")
        if "_BASE_" in values:
            raise D2ImportError(
                f"{path}: has _BASE_ (a model-zoo config file, not the merged config.yaml a "
                "detectron2 run writes): pass --zoo NAME, or the config.yaml of the run"
            )
        return cls(values, str(path))

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value at a dotted key; without ``default`` a missing key is a :class:`D2ImportError`,
        and so is a value of the wrong type for a key detectron2 types (:data:`_INTEGERS`,
        :data:`_NUMBERS`)."""
        if key in self._flat:
            return _checked(key, self._flat[key], self.source)
        if default is _MISSING:
            raise D2ImportError(f"{self.source}: {key} is not set (the importer needs it)")
        return default

    def __contains__(self, key: str) -> bool:
        return key in self._flat


# keys (their last part) whose value detectron2 reads as an integer, or as any number
_INTEGERS = frozenset(
    "DEPTH NUM_GROUPS WIDTH_PER_GROUP NUM_CLASSES FREEZE_AT OUT_CHANNELS CONVS_DIM COMMON_STRIDE "
    "MIN_SIZE_TEST MAX_SIZE_TEST FC_DIM NUM_FC CONV_DIM NUM_CONV POOLER_RESOLUTION "
    "POOLER_SAMPLING_RATIO SUBDIVISION_STEPS SUBDIVISION_NUM_POINTS TRAIN_NUM_POINTS "
    "PRE_NMS_TOPK_TEST POST_NMS_TOPK_TEST DETECTIONS_PER_IMAGE OUTPUT_SIDE_RESOLUTION "
    "STEM_OUT_CHANNELS RES2_OUT_CHANNELS RES5_DILATION IGNORE_VALUE".split()
)
_NUMBERS = frozenset(
    "SCORE_THRESH_TEST NMS_THRESH_TEST NMS_THRESH OVERSAMPLE_RATIO IMPORTANCE_SAMPLE_RATIO".split()
)


def _checked(key: str, value: Any, source: str) -> Any:
    name = key.rsplit(".", 1)[-1]
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if name in _INTEGERS and not (number and float(value).is_integer()):
        raise D2ImportError(f"{source}: {key} = {value!r}: expected an integer")
    if name in _NUMBERS and not number:
        raise D2ImportError(f"{source}: {key} = {value!r}: expected a number")
    return value


def _flatten(values: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            _flatten(value, f"{name}.", out)
        else:
            out[name] = value
