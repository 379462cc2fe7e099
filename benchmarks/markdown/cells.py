"""Cells of the report's Markdown: numbers, counts, tables, the "measured" line of a section."""

from __future__ import annotations

import math

__all__ = ["number", "count", "table", "measured", "boundary_note", "met"]


def number(value, digits: int = 1, unit: str = "") -> str:
    """``value`` with ``digits`` decimals and ``unit``; ``n/a`` when missing or not finite."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def count(value: float) -> str:
    """Counts as 1.31T / 0.53B / 33.9M / 12.0k."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def table(header: list[str], rows: list[list[str]]) -> str:
    """A Markdown table of string cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def measured(section: dict) -> str:
    """When, how long, on what and by which command a section was measured."""
    m = section.get("measured", {})
    machine = m.get("machine", {})
    return (
        f"_Measured {m.get('at', '?')} in {m.get('seconds', '?')} s "
        f"(load average {number(m.get('load_average_at_start'), 2)} at start, "
        f"{number(m.get('load_average_at_end'), 2)} at end; {machine.get('cpu', '?')}, "
        f"{machine.get('torch_threads', '?')} thread(s)) by `{m.get('command', '?')}`._"
    )


def boundary_note(section: dict) -> list[str]:
    """A warning for a section measured before Boundary AP / IoU followed the published
    definition (its ``measured`` record names no ``boundary_definition``), else nothing."""
    if "boundary_definition" in section.get("measured", {}):
        return []
    return [
        "**Boundary AP / Boundary IoU in this section were measured with an earlier definition** "
        "(the image border not counted as a contour, which scores objects that touch the border "
        "lower): not comparable with the other sections' boundary figures or the papers'. "
        "The models are not available to measure them again.",
        "",
    ]


def met(flag: bool) -> str:
    """A target's verdict: ``met`` or a bold ``not met``."""
    return "met" if flag else "**not met**"
