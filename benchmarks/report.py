"""``REPORT.md`` from ``results.json``: one template whose slots are tables of the figures.

The report states what was measured and the figures, nothing more: a figure over validation
folds (the validation set in equal parts) comes with its standard error, and so do differences
between models, a rough guide to what a difference is worth. A section missing from the results
reads "Not measured.".
"""

from __future__ import annotations

import math
from pathlib import Path

from .common import standard_error, write_json

TEMPLATE = """# PointRend benchmarks

Written by `python -m benchmarks` and the stand-alone modules (each section names its command)
from `results.json`. Machine: {cpu}, {logical_cpus} CPUs, torch {torch}.{quick}

## Instance mask branch cost

{cost}## Semantic cost at full resolution

{semantic}## Accuracy at equal training budget

{accuracy}## Ablations

{ablation}## Per-box mask resolution

{per_box}"""
QUICK = "\n\n**Quick mode**: tiny sizes; the figures prove the pipeline only."
AP = "mask_AP mask_AP75 boundary_AP".split()
PAIRS = [("pointrend224", "maskrcnn"), ("pointrend224", "pointrend28")]
PAIRS.append(("pointrend_box", "pointrend224"))


def num(value, digits: int = 3) -> str:
    """A figure: ``n/a`` when missing, 33.9B / 29.7M from a million, else ``digits``
    significant digits (whole numbers from 100); anything else as ``str``."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.{digits}g}"


def cell(row: dict, key: str) -> str:
    """``row[key]`` with its standard error where it has one: ``{"value", "se"}``, or over
    ``row["folds"]``."""
    value = row.get(key)
    if isinstance(value, dict) and "value" in value:
        value, se = value["value"], value["se"]
    else:
        se = standard_error(row, key) if key in (row.get("folds") or [{}])[0] else None
    return num(value) if se is None else f"{value:.2f} ± {se:.2f}"


def table(rows: dict[str, dict], keys: str | list[str], caption: str = "") -> str:
    """A Markdown table: a row per item of ``rows``, a column per key (``keys``: a list, or
    names separated by spaces), after ``caption``."""
    keys = keys.split() if isinstance(keys, str) else keys
    lines = [caption, ""] if caption else []
    lines += ["| | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    lines += [f"| {n} | " + " | ".join(cell(r, k) for k in keys) + " |" for n, r in rows.items()]
    return "\n".join(lines) + "\n\n"


def differences(rows: dict, pairs: list[tuple[str, str]], keys: str) -> dict:
    """``{"a minus b": {key: "+d ± se"}}``: the standard error is of the per-fold differences."""
    out = {}
    for a, b in pairs:
        folds = [
            {k: x[k] - y[k] for k in keys.split()}
            for x, y in zip(*(rows[a]["folds"], rows[b]["folds"]))
        ]
        diff = {k: rows[a][k] - rows[b][k] for k in keys.split()} | {"folds": folds}
        se = {k: standard_error(diff, k) or 0.0 for k in keys.split()}
        out[f"{a} minus {b}"] = {k: f"{diff[k]:+.2f} ± {se[k]:.2f}" for k in keys.split()}
    return out


def by_key(section: dict, keys: str) -> dict:
    """Figures stored by key, then by row (``section[key][row]``), as rows."""
    keys = keys.split()
    return {row: {k: section[k].get(row) for k in keys} for row in section[keys[0]]}


def measured(section: dict) -> str:
    """When, by which command and under what load a section was measured."""
    m = section.get("measured") or section
    load = m.get("load_average_at_start", (m.get("machine") or {}).get("load_average", [None])[0])
    at = f" {m['at']}" if "at" in m else ""
    return f"_Measured{at} by `{m.get('command')}` (load average {num(load, 2)})._\n\n"


def instance_tables(s: dict) -> dict[str, str]:
    """The slots of the ``cost``, ``semantic`` and ``ablation`` sections (``s``: the sections)."""
    out = {}
    if "cost" in s:
        c = s["cost"]
        keys = "multiply_adds_per_box paper_multiply_adds activations_peak_per_box"
        keys += " activations_peak_with_sampled_inputs_per_box"
        out["cost"] = measured(c) + table(c["per_box"], keys, "Per box:")
        caption = f"Mask branch on {c['boxes']} boxes, by output side:"
        out["cost"] += table(c["sweep"], "pointrend_s dense_4xconv_s speedup_pointrend", caption)
        if "end_to_end" in c:
            rows = {f"R50-FPN, {c['end_to_end']['image']}": c["end_to_end"]}
            out["cost"] += table(rows, "torchvision_s pointrend_s ratio", "End to end:")
    if "semantic" in s:
        full = s["semantic"]["full_models"]
        rows = {r["label"]: r for r in [*full["rows"].values(), *full["refinement"].values()]}
        keys = "time_s vs_coarse_model over_coarse_model peak_mb points_per_image"
        caption = f"Full models, {full['backbone']}, {full['image']}:"
        out["semantic"] = measured(s["semantic"]) + table(rows, keys, caption)
    training = s.get("ablation", {}).get("training")
    if training:
        rows, keys = training["rows"], "mask_AP mask_AP75 boundary_AP box_AP"
        ref = next(n for n in rows if n.startswith("mildly"))
        rows = rows | differences(rows, [(n, ref) for n in rows if n != ref], keys)
        caption = f"Training point selection, {training['train_iters']} iterations each:"
        out["ablation"] = measured(training) + table(rows, keys, caption)
    return out


def accuracy_tables(acc: dict) -> str:
    """The ``accuracy`` slot: instances, and by evaluation resolution."""
    out, inst = measured(acc), acc.get("instance")
    if inst:
        rows, keys = inst["rows"], "mask_AP mask_AP75 boundary_AP boundary_AP75 box_AP"
        out += table(rows, keys, f"{inst['val_images']} images of {inst['image_size']} px:")
        pairs = [(n, "Mask R-CNN 4x conv, 28x28") for n in rows if n.startswith("PointRend")]
        pairs.append(("PointRend, 224x224", "PointRend, 28x28"))
        out += table(differences(rows, pairs, keys), keys)
        res = inst.get("by_resolution") or {}
        sizes, rows = [str(s) for s in res.get("sizes", [])], res.get("rows")
        columns = [f"{s} px" for s in sizes]
        for key in AP if res else ():
            grid = {n: {f"{s} px": cell(rows[s][n], key) for s in sizes} for n in rows[sizes[0]]}
            out += table(grid, columns, f"{key} by evaluation resolution:")
        if res:
            diff = {s: differences(rows[s], PAIRS, "boundary_AP") for s in sizes}
            grid = {
                n: {f"{s} px": diff[s][n]["boundary_AP"] for s in sizes} for n in diff[sizes[0]]
            }
            out += table(grid, columns, "Boundary AP differences:")
            out += "![Boundary AP by evaluation resolution](accuracy_by_resolution.png)\n\n"
    return out


def at_k(figures: dict) -> dict:
    """A point-budget rule's figures: at k = 3.5 (else its first k) for a rule with a k."""
    return figures if "boundary_iou" in figures else figures.get("3.5") or [*figures.values()][0]


def per_box_tables(results: dict) -> str:
    """The ``per_box`` slot: the three studies of :mod:`.per_box`."""
    out, cost = "", results.get("per_box_resolution")
    if cost:
        keys = "mask_branch_s peak_mb end_to_end_s"
        out += measured(cost) + table(by_key(cost, keys), keys)
        out += f"Grids (H x W: boxes): {cost['box_grids']}.\n\n"
    if "point_budget" in results:
        rules = "fixed224 per_box final_side step_side no_refinement"
        out += measured(results["point_budget"])
        for key in ("boundary_iou", "points_per_box"):
            rows = {
                side: {rule: at_k(row[rule])[key] for rule in rules.split()}
                for side, row in results["point_budget"]["by_size"].items()
            }
            out += table(rows, rules, f"Oracle point head, {key} (k = 3.5) by grid side M:")
    scale = results.get("per_box_scale")
    if scale:
        keys = "grid mask_iou boundary_iou mask_s render_s paste_s peak_mb"
        out += measured(scale) + table(by_key(scale, keys), keys)
        above = by_key(scale["score_above_0.5"], "mask_s peak_mb")
        out += table(above, "mask_s peak_mb", "Detections scoring above 0.5:")
        out += table(scale["oracle"], "boundary_iou", "Ground truth through a grid of each side:")
    return out


def render(results: dict) -> str:
    """``REPORT.md``'s text for ``results`` (the contents of ``results.json``)."""
    sections, machine = results.get("sections", {}), results.get("machine") or {}
    slots = {k: "" for k in ("cost", "semantic", "accuracy", "ablation")}
    slots |= instance_tables(sections) | {"per_box": per_box_tables(results)}
    if "accuracy" in sections:
        slots["accuracy"] = accuracy_tables(sections["accuracy"])
    slots = {k: v or "Not measured.\n\n" for k, v in slots.items()}
    quick = QUICK if results.get("settings", {}).get("quick") else ""
    facts = {k: machine.get(k) for k in ("cpu", "logical_cpus", "torch")}
    return TEMPLATE.format(**facts, **slots, quick=quick).rstrip() + "\n"


def write_report(results: dict, out: Path) -> None:
    """Write ``results.json``, the plot the README shows and ``REPORT.md`` into ``out``."""
    from .plots import plot_accuracy_by_resolution  # matplotlib only where a report is drawn

    out = Path(out)
    by_resolution = results.get("sections", {}).get("accuracy", {}).get("instance", {})
    if by_resolution.get("by_resolution"):
        plot_accuracy_by_resolution(by_resolution["by_resolution"], out)
    write_json(results, out / "results.json")
    (out / "REPORT.md").write_text(render(results))
