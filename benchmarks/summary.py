"""The report's summary: the headline comparisons, computed from the figures.

Only statements that follow from the numbers: ratios, differences with their standard errors
over the validation folds, and whether the paper's pattern shows. Differences are in AP points;
the relative change is given too, as AP values on this small CPU budget are low.
"""

from __future__ import annotations

import math
import statistics

__all__ = ["delta", "standard_error", "pm", "summary_md"]


def delta(a: dict, b: dict, key: str) -> tuple[float, float | None]:
    """``a[key] - b[key]`` and the standard error of the per-fold differences (or ``None``)."""
    d = a[key] - b[key]
    folds = list(zip(a.get("folds") or [], b.get("folds") or []))
    if len(folds) < 2:
        return d, None
    per_fold = [fa[key] - fb[key] for fa, fb in folds]
    return d, statistics.stdev(per_fold) / math.sqrt(len(per_fold))


def standard_error(row: dict, key: str) -> float | None:
    """Standard error of ``row[key]`` over its folds (``None`` with fewer than 2)."""
    values = [f[key] for f in row.get("folds") or []]
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return None
    return statistics.stdev(values) / math.sqrt(len(values))


def pm(d: float, se: float | None) -> str:
    if se is None:
        return f"{d:+.1f}"
    return f"{d:+.1f} ± {se:.1f}" if se >= 0.1 else f"{d:+.2f} ± {se:.2f}"


def _relative(a: dict, b: dict, key: str) -> str:
    return f"{(a[key] / b[key] - 1) * 100:+.0f}%" if b.get(key) else "n/a"


def _cost_lines(cost: dict) -> list[str]:
    table = cost.get("per_box", {})
    out = []
    if "PointRend 224" in table and "4x conv 224" in table:
        ours, dense = table["PointRend 224"], table["4x conv 224"]
        ratio = dense["multiply_adds_per_box"] / ours["multiply_adds_per_box"]
        out.append(
            f"- **Cost per box at 224x224**: PointRend {ours['multiply_adds_per_box'] / 1e9:.2f}B "
            f"multiply-adds vs {dense['multiply_adds_per_box'] / 1e9:.1f}B for the dense 4x conv "
            f"head ({ratio:.0f}x fewer; the paper: 0.9B vs 34B)."
        )
    sweep = cost.get("sweep", {})
    if sweep:
        largest = max(sweep, key=int)
        r = sweep[largest]
        out.append(
            f"- **CPU time and memory against resolution**: the dense head / PointRend time ratio "
            f"goes from {sweep[min(sweep, key=int)]['speedup_pointrend']:.1f}x at "
            f"{min(sweep, key=int)} to {r['speedup_pointrend']:.1f}x at {largest}; peak memory "
            f"per box at {largest}: {r['pointrend_peak_mb_per_box']:.1f} MB vs "
            f"{r['dense_peak_mb_per_box']:.0f} MB."
        )
    return out


def _semantic_cost_lines(semantic: dict) -> list[str]:
    rows = semantic.get("rows", {})
    if not {"pointrend", "dense_point_head", "upsampled"} <= set(rows):
        return []
    ours, dense, up = rows["pointrend"], rows["dense_point_head"], rows["upsampled"]
    h, w = semantic["image"]
    return [
        f"- **Semantic, {h}x{w} logits**: PointRend takes {ours['time_s']:.2f} s "
        f"({ours['time_s'] / up['time_s']:.0f}x the bilinear upsampling), the same point head at "
        f"every pixel {dense['time_vs_pointrend']:.1f}x PointRend's time and "
        f"{dense['multiply_adds'] / max(ours['multiply_adds'], 1):.0f}x its multiply-adds."
    ]


def _semantic_models_lines(full: dict) -> list[str]:
    rows, parts = full["rows"], full["refinement"]
    h, w = full["image"]
    shares = ", ".join(
        f"{rows[o]['label'][:3]} {100 * p['over_coarse_model']:.0f}%" for o, p in parts.items()
    )
    peaks = ", ".join(f"{rows[o]['label'][:3]} {rows[o]['peak_mb']:.0f} MB" for o in parts)
    points = ", ".join(f"{rows[o]['label'][:3]} {rows[o]['points_per_image']}" for o in parts)
    return [
        f"- **Semantic full models, {h}x{w}, {full['backbone']}**: PointRend's refinement takes "
        f"{shares} of the coarse model's time (target <= "
        f"{100 * full['max_refinement_share']:.0f}%); peak memory {peaks} vs "
        f"{rows['deeplab_os8']['peak_mb']:.0f} MB for DeepLabV3-OS-8; points per image "
        f"{points} (paper: ~{full['paper_points_per_image'] // 1024}k)."
    ]


def _instance_lines(instance: dict) -> list[str]:
    rows = instance["rows"]
    base, ours = rows.get("Mask R-CNN 4x conv, 28x28"), rows.get("PointRend, 224x224")
    if not base or not ours:
        return []
    keys = ("mask_AP", "mask_AP75", "boundary_AP")
    parts = [f"{k} {pm(*delta(ours, base, k))} ({_relative(ours, base, k)})" for k in keys]
    out = [
        f"- **Instances, equal budget** ({instance['val_images']} images): PointRend 224x224 vs "
        f"Mask R-CNN 28x28: {', '.join(parts)}."
    ]
    d, se = delta(ours, base, "box_AP")
    out.append(
        f"- Box AP differs by {pm(d, se)} as well: the two detectors are trained whole, so part "
        "of the mask AP difference comes from the boxes; Boundary AP and AP75 weigh the masks more."
    )
    low = rows.get("PointRend, 28x28")
    if low:
        d, se = delta(ours, low, "boundary_AP")
        out.append(
            f"- Same PointRend weights, 224x224 vs 28x28: Boundary AP {pm(d, se)}, mask AP "
            f"{pm(*delta(ours, low, 'mask_AP'))}."
        )
    oracle = rows.get("oracle: ground truth at 28x28")
    if oracle:
        out.append(
            f"- Headroom: the ground truth itself resampled to 28x28 scores Boundary AP "
            f"{oracle['boundary_AP']:.1f} (mask AP {oracle['mask_AP']:.1f}); the trained models "
            f"reach {ours['boundary_AP']:.1f}."
        )
    return out


def _resolution_lines(section: dict) -> list[str]:
    """Boundary AP of PointRend 224 vs Mask R-CNN at the smallest and largest evaluation size."""
    sizes = [str(s) for s in section["sizes"]]
    rows = section["rows"]
    parts = []
    for size in (sizes[0], sizes[-1]):
        ours, base, ceiling = (rows[size][k] for k in ("pointrend224", "maskrcnn", "oracle28"))
        d = pm(*delta(ours, base, "boundary_AP"))
        parts.append(f"{d} at {size} px (28x28 ceiling {ceiling['boundary_AP']:.1f})")
    return [
        "- **Evaluated at larger sizes** (exact ground truth, the same detections): PointRend "
        "224x224 minus Mask R-CNN in Boundary AP " + ", ".join(parts) + "."
    ]


def _semantic_lines(semantic: dict) -> list[str]:
    rows = semantic["rows"]
    if len(rows) != 2:
        return []
    (base_name, base), (ours_name, ours) = rows.items()
    parts = [f"{k} {pm(*delta(ours, base, k))}" for k in ("mIoU", "boundary_F")]
    return [f"- **Semantic, equal budget**: {ours_name} vs {base_name}: {', '.join(parts)}."]


def _training_lines(training: dict) -> list[str]:
    rows = training["rows"]
    if not rows:
        return []
    best = max(rows, key=lambda n: rows[n]["mask_AP"])
    ranked = sorted(rows, key=lambda n: -rows[n]["mask_AP"])
    order = " > ".join(f"{n} {rows[n]['mask_AP']:.1f}" for n in ranked)
    return [
        f"- **Training points** (mask AP, {training['train_iters']} iterations): {order}; "
        f"best: {best}."
    ]


def _learning_lines(learning: dict) -> list[str]:
    ours, base = learning["rows"]["PointRend"], learning["rows"]["Mask R-CNN 4x conv"]
    return [
        f"- **Boundaries learned from scratch** (tiny problem, {learning['steps']} steps): "
        f"Boundary IoU {ours['boundary_iou']:.3f} for PointRend vs {base['boundary_iou']:.3f} "
        f"for the 4x conv head (mask IoU {ours['mask_iou']:.3f} vs {base['mask_iou']:.3f})."
    ]


def summary_md(sections: dict) -> list[str]:
    """``## Summary`` bullets for the sections present."""
    out: list[str] = []
    if "cost" in sections:
        out += _cost_lines(sections["cost"])
    if "semantic" in sections:
        out += _semantic_cost_lines(sections["semantic"])
        if sections["semantic"].get("full_models"):
            out += _semantic_models_lines(sections["semantic"]["full_models"])
    accuracy = sections.get("accuracy", {})
    if accuracy.get("instance"):
        out += _instance_lines(accuracy["instance"])
        if accuracy["instance"].get("by_resolution"):
            out += _resolution_lines(accuracy["instance"]["by_resolution"])
    if sections.get("ablation", {}).get("training"):
        out += _training_lines(sections["ablation"]["training"])
    if accuracy.get("semantic"):
        out += _semantic_lines(accuracy["semantic"])
    if "learning" in sections:
        out += _learning_lines(sections["learning"])
    if not out:
        return []
    return [
        "## Summary",
        "",
        *out,
        "",
        "Differences: AP points ± one standard error over the "
        "validation folds (relative change in brackets).",
        "",
    ]
