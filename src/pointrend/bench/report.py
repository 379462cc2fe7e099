"""``REPORT.md``, ``results.json`` and the plots from the bench's figures; the machine."""

from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

import torch
import torchvision

from . import plots
from .markdown import render_markdown

__all__ = ["machine_info", "write_report", "clean_json"]


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


def write_report(results: dict, out: Path) -> dict:
    """Write ``results.json``, the PNGs and ``REPORT.md`` into ``out``; return the file names."""
    out = Path(out)
    sections = results["sections"]
    ablation = sections.get("ablation", {})
    plans = {
        "cost": (plots.plot_cost_vs_resolution, sections.get("cost")),
        "semantic": (plots.plot_semantic_cost, sections.get("semantic")),
        "accuracy": (plots.plot_accuracy, sections.get("accuracy")),
        "inference": (plots.plot_inference_ablation, ablation.get("inference")),
        "training": (plots.plot_training_ablation, ablation.get("training")),
    }
    figures = {name: plot(part, out) if part else None for name, (plot, part) in plans.items()}
    (out / "results.json").write_text(json.dumps(clean_json(results), indent=1) + "\n")
    (out / "REPORT.md").write_text(render_markdown(results, figures))
    return figures
