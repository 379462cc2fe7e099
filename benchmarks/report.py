"""``REPORT.md``, ``results.json`` and the plots from the bench's figures."""

from __future__ import annotations

import json
from pathlib import Path

from . import plots
from .machine import write_json
from .markdown import render_markdown

__all__ = ["write_report", "store_standalone"]


def write_report(results: dict, out: Path) -> dict:
    """Write ``results.json``, the PNGs and ``REPORT.md`` into ``out``; return the file names."""
    out = Path(out)
    sections = results["sections"]
    ablation = sections.get("ablation", {})
    plans = {
        "cost": (plots.plot_cost_vs_resolution, sections.get("cost")),
        "semantic": (plots.plot_semantic_cost, sections.get("semantic")),
        "accuracy": (plots.plot_accuracy, sections.get("accuracy")),
        "resolution": (
            plots.plot_accuracy_by_resolution,
            sections.get("accuracy", {}).get("instance", {}).get("by_resolution"),
        ),
        "inference": (plots.plot_inference_ablation, ablation.get("inference")),
        "training": (plots.plot_training_ablation, ablation.get("training")),
    }
    figures = {name: plot(part, out) if part else None for name, (plot, part) in plans.items()}
    write_json(results, out / "results.json")
    (out / "REPORT.md").write_text(render_markdown(results, figures))
    return figures


def store_standalone(results_json: Path, key: str, section: dict) -> str:
    """Write a stand-alone module's figures into ``results_json`` under ``key`` (the other keys
    kept), then render ``REPORT.md`` and the plots beside it again when the file holds a bench
    run. Returns what was written, for the log."""
    path = Path(results_json)
    results = json.loads(path.read_text()) if path.is_file() else {}
    results[key] = section
    write_json(results, path)
    if "sections" not in results or "machine" not in results:
        return f"{path} [{key!r}]"
    write_report(results, path.parent)
    return f"{path} [{key!r}] and {path.parent / 'REPORT.md'}"
