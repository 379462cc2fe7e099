"""Where and how figures were measured, and writing them as strict JSON."""

from __future__ import annotations

import json
import math
import os
import platform
import shlex
import sys
from pathlib import Path

import torch
import torchvision

__all__ = ["machine_info", "clean_json", "write_json", "command_line"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """Where the figures were measured: platform, CPU model, threads, library versions."""
    return {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()),
    }


def clean_json(value):
    """NaN / inf -> ``None`` (strict JSON), tuples -> lists, keys -> strings."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def command_line(module: str, argv: list[str] | None = None) -> str:
    """The command that ran ``python -m module`` with ``argv`` (default: this process's)."""
    argv = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m", module, *map(shlex.quote, argv)])


def write_json(result: dict, path: str | Path) -> Path:
    """``result`` as indented strict JSON at ``path`` (folders made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean_json(result), indent=1) + "\n")
    return path
