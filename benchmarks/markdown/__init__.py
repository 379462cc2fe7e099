"""The Markdown of ``REPORT.md``, from the figures of ``results.json``.

It states what was measured and what the numbers say, nothing more: every comparison with the
paper's pattern is computed from the figures, whatever they turn out to be.
"""

from __future__ import annotations

from ..summary import summary_md
from .accuracy import ablation_md, accuracy_md, learning_md, semantic_md
from .cost import cost_md, semantic_cost_md
from .per_box import per_box_md

__all__ = ["render_markdown"]


def render_markdown(results: dict, figures: dict) -> str:
    """The whole report; ``figures`` maps a plot's name to its PNG file (or ``None``)."""
    m, s = results["machine"], results["settings"]
    sections = results["sections"]
    out = [
        "# PointRend benchmarks: the paper's claims measured here",
        "",
        "Written by `python -m benchmarks` from a checkout of the repository (regenerate with "
        "`make bench`; `make bench-quick` for a minutes-long check of the pipeline; one section: "
        "`make bench ARGS='--sections cost'`). Raw figures: `results.json`.",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} with "
        f"{m['torch_threads']} thread(s), torchvision {m['torchvision']}, Python {m['python']}, "
        f"{m['platform']}.",
        "",
    ]
    if s["quick"]:
        out += [
            "**Quick mode**: tiny sizes and models trained for a few iterations. These figures "
            "prove the pipeline works; they say nothing about the paper's claims.",
            "",
        ]
    out += summary_md(sections)
    if "cost" in sections:
        out += cost_md(sections["cost"], figures)
    if "semantic" in sections:
        out += semantic_cost_md(sections["semantic"], figures)
    if "accuracy" in sections:
        out += accuracy_md(sections["accuracy"], figures)
    if "ablation" in sections:
        out += ablation_md(sections["ablation"], figures)
    if "accuracy" in sections:
        out += semantic_md(sections["accuracy"])
    if "learning" in sections:
        out += learning_md(sections["learning"])
    out += per_box_md(results)
    return "\n".join(out).rstrip() + "\n"
