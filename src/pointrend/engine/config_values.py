"""Config values as people write them: numbers in any spelling, and the typed options of
``model.options`` (checked against what the named builder declares).

Numbers such as ``5e-2`` or ``1e1`` are strings to PyYAML; here they become numbers. An option
the builder annotates as ``bool`` / ``int`` / ``float`` / ``str`` must have that type, and no
number may be NaN or infinite; errors name the key and the file.
"""

from __future__ import annotations

import math
import re
import sys
import types
import typing
from typing import Any

__all__ = ["ConfigError", "NUMBER", "unwrap_optional", "option_types", "option_value"]

# a decimal number as people write it: 1, -2.5, .5, 1e-4, 1E4, +3.
NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class ConfigError(ValueError):
    """A config file or override is wrong; the message names the key and the file."""


def unwrap_optional(tp):
    """``X`` of ``X | None`` (any other annotation as it is)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


_SCALARS = (bool, int, float, str)


def option_types(model) -> dict[str, type]:
    """Option -> ``bool`` / ``int`` / ``float`` / ``str``, as the builder a
    :class:`~.config.ModelConfig` ``model`` names (and the functions and settings it passes its
    options to) annotate them; others are left out."""
    try:
        from .builders import model_builder

        builder = model_builder(model)
    except ValueError:  # a wrong name is reported when the model is built
        return {}
    module = sys.modules[builder.__module__]
    helpers = ("_instance_model", "_semantic_fpn_model", "_deeplabv3_model")
    sources = [getattr(module, name) for name in helpers if hasattr(module, name)]
    sources += [getattr(module, "PointRendSettings", None), builder]  # semantic point options
    types: dict[str, type] = {}
    for source in filter(None, sources):
        try:
            hints = typing.get_type_hints(source)
        except (NameError, TypeError):
            continue
        types.update({k: t for k, h in hints.items() if (t := unwrap_optional(h)) in _SCALARS})
    return types


def option_value(value: Any, tp: type | None, where: str) -> Any:
    """One option value: numbers written as people write them (``5e-2``, ``1e1``: strings to
    PyYAML) become numbers, non-finite numbers are refused, and a value of a typed option must
    have that type (an integral number is accepted for an ``int``)."""
    if isinstance(value, list | tuple):
        return [option_value(v, None, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: option_value(v, None, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, str) and tp is not str and NUMBER.match(value.strip()):
        value = float(value)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected a finite number, got {value}")
    if tp is None or tp is str and isinstance(value, str):
        return value
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, tp) and not (tp is not bool and isinstance(value, bool)):
        return value
    raise ConfigError(
        f"{where}: expected {'a' if tp is not int else 'an'} {tp.__name__}, got {value!r}"
    )
