"""``REPORT.md`` from ``results.json``: one template, a table per measurement.

The report states what was measured and the figures, nothing more: differences between models
come with the standard error of their per-fold values (the validation set in equal parts), a
rough guide to what a difference is worth. Sections missing from the results are left out.
"""

from __future__ import annotations

import math
from pathlib import Path

from .common import delta, standard_error, write_json

RULES = ("per_box", "final_side", "step_side")  # the point-budget rules with a k


def num(value, digits: int = 3) -> str:
    """A figure: ``n/a`` when missing, 33.9B / 29.7M from a million, else ``digits``
    significant digits (whole numbers from 100)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g}{suffix}"
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.{digits}g}"


def pm(d: float, se: float | None, sign: str = "+") -> str:
    """A figure and its standard error: ``+2.1 ± 0.4`` (two decimals below 0.1)."""
    if se is None:
        return f"{d:{sign}.2f}"
    return f"{d:{sign}.1f} ± {se:.1f}" if se >= 0.1 else f"{d:{sign}.2f} ± {se:.2f}"


def with_se(row: dict, key: str) -> str:
    se = standard_error(row, key)
    return f"{row[key]:.1f}" + (f" ± {se:.1f}" if se is not None else "")


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows] + [""]


def measured(section: dict) -> list[str]:
    """When, by which command and on what load a section was measured."""
    m = section.get("measured") or section
    load = m.get("load_average_at_start", (m.get("machine") or {}).get("load_average", [None])[0])
    at = f" {m['at']}" if "at" in m else ""
    return [f"_Measured{at} by `{m.get('command', '?')}` (load average {num(load, 2)})._", ""]


def rows_table(rows: dict, keys: list[str], digits: int = 3) -> list[str]:
    return table(
        ["", *keys], [[n, *(num(r.get(k), digits) for k in keys)] for n, r in rows.items()]
    )


def differences(rows: dict, pairs: list[tuple[str, str]], keys: list[str]) -> list[str]:
    """``a minus b`` per key with its standard error over folds, one row per pair."""
    cells = [[f"{a} minus {b}", *(pm(*delta(rows[a], rows[b], k)) for k in keys)] for a, b in pairs]
    return table(["difference (± s.e. over folds)", *keys], cells)


def cost_md(cost: dict) -> list[str]:
    per_box = cost["per_box"]
    out = ["## Instance mask branch cost", "", *measured(cost)]
    keys = ["multiply_adds_per_box", "paper_multiply_adds", "activations_peak_per_box"]
    out += rows_table(per_box, [*keys, "activations_peak_with_sampled_inputs_per_box"])
    sweep = cost["sweep"]
    keys = ["pointrend_s", "dense_4xconv_s", "speedup_pointrend", "pointrend_peak_mb_per_box"]
    keys += ["dense_peak_mb_per_box", "pointrend_point_predictions_per_box"]
    out += [f"Mask branch on {cost['boxes']} boxes, by output side:", ""] + rows_table(sweep, keys)
    e2e = cost.get("end_to_end")
    if e2e:
        out += [
            f"End to end, ResNet-50-FPN, {e2e['image']}, {e2e['boxes']} boxes forced: torchvision "
            f"{e2e['torchvision_s']:.2f} s, PointRend {e2e['pointrend_s']:.2f} s, ratio "
            f"{e2e['ratio']:.2f}.",
            "",
        ]
    return out


def semantic_cost_md(sem: dict) -> list[str]:
    out = ["## Semantic cost at full resolution", "", *measured(sem)]
    keys = ["multiply_adds", "activations", "peak_mb", "time_s", "time_vs_pointrend"]
    out += [
        f"Logits of {sem['image']}, K = {sem['num_classes']}:",
        "",
        *rows_table(sem["rows"], keys),
    ]
    full = sem.get("full_models")
    if full:
        rows = {r["label"]: r for r in [*full["rows"].values(), *full["refinement"].values()]}
        keys = ["time_s", "vs_coarse_model", "over_coarse_model", "peak_mb", "peak_vs_deeplab_os8"]
        out += [f"Full models, {full['backbone']}, {full['image']}:", ""]
        out += rows_table(rows, [*keys, "points_per_image", "multiply_adds"])
    return out


def accuracy_md(acc: dict) -> list[str]:
    inst, sem = acc.get("instance"), acc.get("semantic")
    out = ["## Accuracy at equal training budget", "", *measured(acc)]
    if inst:
        rows, base = inst["rows"], "Mask R-CNN 4x conv, 28x28"
        keys = ["mask_AP", "mask_AP50", "mask_AP75", "boundary_AP", "boundary_AP75", "box_AP"]
        models = ", ".join(
            f"{k}: `{m['weights']}` ({m['iteration']} it.)" for k, m in inst["models"].items()
        )
        out += [f"{inst['val_images']} synthetic images of {inst['image_size']} px; {models}.", ""]
        out += rows_table(rows, keys)
        pairs = [(n, base) for n in rows if n.startswith("PointRend")]
        out += differences(rows, [*pairs, ("PointRend, 224x224", "PointRend, 28x28")], keys)
        if inst.get("by_resolution"):
            out += resolution_md(inst["by_resolution"])
    if sem:
        (base, _), (ours, _) = sem["rows"].items()
        keys = ["mIoU", "boundary_F", "boundary_IoU"]
        out += ["### Semantic", "", *rows_table(sem["rows"], keys)]
        out += differences(sem["rows"], [(ours, base)], keys)
    return out


def resolution_md(section: dict) -> list[str]:
    sizes, rows = [str(s) for s in section["sizes"]], section["rows"]
    out = [
        "### Accuracy by evaluation resolution",
        "",
        f"The same detections (models fed {section['model_input_size']} px) pasted at each size, "
        "scored against ground truth rendered exactly there; `oracleM`: the ground truth through "
        "M x M in its box (the ceiling of an M x M mask); ± one standard error over folds.",
        "",
    ]
    for key in ("mask_AP", "mask_AP75", "boundary_AP"):
        cells = [[n, *(with_se(rows[s][n], key) for s in sizes)] for n in rows[sizes[0]]]
        out += [f"{key}:", "", *table(["row", *(f"{s} px" for s in sizes)], cells)]
    pairs = [("pointrend224", "maskrcnn"), ("pointrend224", "pointrend28")]
    pairs += [("pointrend_box", "pointrend224")] if "pointrend_box" in rows[sizes[0]] else []
    cells = [
        [f"{a} minus {b}", *(pm(*delta(rows[s][a], rows[s][b], "boundary_AP")) for s in sizes)]
        for a, b in pairs
    ]
    out += table(["Boundary AP difference", *(f"{s} px" for s in sizes)], cells)
    return out + ["![Boundary AP by evaluation resolution](accuracy_by_resolution.png)", ""]


def ablation_md(abl: dict) -> list[str]:
    out = ["## Ablations", ""]
    inf, tr = abl.get("inference"), abl.get("training")
    if inf:
        keys = ["output_size", "subdivision_num_points", "mask_AP", "mask_AP75", "boundary_AP"]
        keys += ["render_ms_per_box", "point_predictions_per_box", "multiply_adds_per_box"]
        out += ["### Inference settings, same weights", "", *measured(inf)]
        out += rows_table(inf["rows"], keys)
    if tr:
        keys = ["mask_AP", "mask_AP75", "boundary_AP", "box_AP"]
        out += ["### Training point selection", "", *measured(tr)]
        out += [f"Each variant trained {tr['train_iters']} iterations, scored at 224x224.", ""]
        out += rows_table(tr["rows"], keys)
        ref = next(n for n in tr["rows"] if n.startswith("mildly"))
        out += differences(tr["rows"], [(n, ref) for n in tr["rows"] if n != ref], keys)
    return out


def learning_md(learning: dict) -> list[str]:
    return [
        "## Boundaries learned from scratch on a tiny problem",
        "",
        *measured(learning),
        f"{learning['steps']} Adam steps on {learning['images']} star images of "
        f"{learning['image_size']} px, ground-truth boxes as detections:",
        "",
        *rows_table(learning["rows"], ["boundary_iou", "mask_iou"]),
    ]


def by_mode(section: dict, keys: list[str]) -> list[str]:
    """A table of figures stored by mode (``section[key][mode]``): a row per mode."""
    rows = [[m, *(num(section[k].get(m)) for k in keys)] for m in section[keys[0]]]
    return table(["", *keys], rows)


def per_box_md(results: dict) -> list[str]:
    out = ["## Per-box mask resolution", ""]
    cost, budget, scale = (
        results.get(k) for k in ("per_box_resolution", "point_budget", "per_box_scale")
    )
    if cost:
        out += measured(cost) + by_mode(cost, ["mask_branch_s", "peak_mb", "end_to_end_s"])
        t, e2e = cost["mask_branch_s"], cost["end_to_end_s"]
        out += [
            f"Per-box / fixed 224 mask branch {t['box'] / t['fixed224']:.2f}x; end to end / "
            f"torchvision 28x28: per-box {e2e['box'] / e2e['torchvision28']:.2f}x, fixed 224 "
            f"{e2e['fixed224'] / e2e['torchvision28']:.2f}x. {len(cost['box_grids'])} grids "
            f"(H x W: boxes): {cost['box_grids']}.",
            "",
        ]
        if "boundary_ap" in cost:
            sizes = list(cost["boundary_ap"])
            rows = [
                [
                    f"{key}, {m}",
                    *(
                        f"{cost[key][s][m]['value']:.2f} ± {cost[key][s][m]['se']:.2f}"
                        for s in sizes
                    ),
                ]
                for key in ("boundary_ap", "mask_ap")
                for m in ("fixed224", "box")
            ]
            out += table(["", *(f"{s} px" for s in sizes)], rows)
    if budget:
        rules = ["fixed224", "per_box", "final_side", "step_side", "no_refinement"]
        rows = []
        for side, r in budget["by_size"].items():
            cells = [
                r[rule].get("3.5") or next(iter(r[rule].values())) if rule in RULES else r[rule]
                for rule in rules
            ]
            rows.append(
                [
                    side,
                    *(
                        f"{pm(c['boundary_iou']['value'], c['boundary_iou']['se'])[1:]} ({c['points_per_box']})"
                        for c in cells
                    ),
                ]
            )
        out += measured(budget) + ["Oracle point head: Boundary IoU (points per box), k = 3.5:", ""]
        out += table(["M", *rules], rows)
    if scale:
        keys = ["grid", "mask_iou", "boundary_iou", "mask_s", "render_s", "paste_s", "peak_mb"]
        out += measured(scale) + by_mode(scale, keys)
        out += ["Detections scoring above 0.5:", ""] + by_mode(
            scale["score_above_0.5"], ["mask_s", "peak_mb"]
        )
        ceiling = ", ".join(f"{s}: {r['boundary_iou']:.3f}" for s, r in scale["oracle"].items())
        out += [f"Ground truth through a grid of each side (Boundary IoU): {ceiling}.", ""]
    return out if len(out) > 2 else []


def render(results: dict) -> str:
    sections = results.get("sections", {})
    m = results.get("machine") or {}
    out = [
        "# PointRend benchmarks",
        "",
        "Written by `python -m benchmarks` (and the stand-alone modules, each section names its "
        "command) from `results.json`.",
        "",
        f"Machine: {m.get('cpu')}, {m.get('logical_cpus')} CPUs, torch {m.get('torch')}.",
        "",
    ]
    if results.get("settings", {}).get("quick"):
        out += ["**Quick mode**: tiny sizes; the figures prove the pipeline only.", ""]
    parts = [
        (cost_md, sections.get("cost")),
        (semantic_cost_md, sections.get("semantic")),
        (accuracy_md, sections.get("accuracy")),
        (ablation_md, sections.get("ablation")),
        (learning_md, sections.get("learning")),
        (per_box_md, results),
    ]
    for write, part in parts:
        out += write(part) if part else []
    return "\n".join(out).rstrip() + "\n"


def write_report(results: dict, out: Path) -> None:
    """Write ``results.json``, the plot the README shows and ``REPORT.md`` into ``out``."""
    from .plots import plot_accuracy_by_resolution  # matplotlib only where a report is drawn

    out = Path(out)
    by_resolution = results.get("sections", {}).get("accuracy", {}).get("instance", {})
    if by_resolution.get("by_resolution"):
        plot_accuracy_by_resolution(by_resolution["by_resolution"], out)
    write_json(results, out / "results.json")
    (out / "REPORT.md").write_text(render(results))
