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
        except yaml.YAMLError as err:
            raise D2ImportError(f"{path}: not valid YAML: {err}") from err
        if not isinstance(values, dict):
            raise D2ImportError(f"{path}: not a detectron2 config (the top level is not a mapping)")
        if "_BASE_" in values:
            raise D2ImportError(
                f"{path}: has _BASE_ (a model-zoo config file, not the merged config.yaml a "
                "detectron2 run writes): pass --zoo NAME, or the config.yaml of the run"
            )
        return cls(values, str(path))

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value at a dotted key; without ``default`` a missing key is a :class:`D2ImportError`."""
        if key in self._flat:
            return self._flat[key]
        if default is _MISSING:
            raise D2ImportError(f"{self.source}: {key} is not set (the importer needs it)")
        return default

    def __contains__(self, key: str) -> bool:
        return key in self._flat

    def as_flat_dict(self) -> dict[str, Any]:
        return dict(self._flat)


def _flatten(values: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            _flatten(value, f"{name}.", out)
        else:
            out[name] = value
