"""The report's section on per-box mask resolution (``python -m benchmarks.per_box`` and the
stand-alone modules around it), from ``results.json``'s top-level keys."""

from __future__ import annotations

from .cells import number, table

__all__ = ["per_box_md"]

NAMES = {
    "box": "per-box (`mask_resolution: box`)",
    "fixed224": "fixed 224x224",
    "torchvision28": "torchvision's 28x28 head",
}


def _cost_md(section: dict) -> list[str]:
    branch, peak, e2e = section["mask_branch_s"], section["peak_mb"], section["end_to_end_s"]
    rows = [[NAMES[k], f"{branch[k]:.2f} s", f"{peak[k]:.0f} MB", f"{e2e[k]:.2f} s"] for k in NAMES]
    extra = [k for k in branch if k not in NAMES]
    rows += [[f"`{k}`", f"{branch[k]:.2f} s", f"{peak[k]:.0f} MB", "-"] for k in extra]
    grids = section.get("box_grids") or section.get("box_grid_sides", {})
    ratio = branch["box"] / branch["fixed224"]
    e2e_ratio = e2e["box"] / e2e["torchvision28"]
    return [
        f"{section['boxes']} boxes, each side log-uniform from 16 to 600 pixels, on a "
        f"{section['image'][0]}x{section['image'][1]} image, ResNet-50-FPN, "
        f"{section['threads']} thread(s), medians of {section['rounds']} alternated rounds "
        f"(`{section['command']}`; load average at the end "
        f"{', '.join(f'{v:.1f}' for v in section['machine']['load_average'])}):",
        "",
        table(["mask branch", "time", "peak memory", "end to end"], rows),
        "",
        f"- Per-box / fixed 224 mask branch: {ratio:.2f}x; per-box end to end / torchvision's "
        f"Mask R-CNN: {e2e_ratio:.2f}x; fixed 224 end to end / torchvision: "
        f"{e2e['fixed224'] / e2e['torchvision28']:.2f}x.",
        f"- Per-box grids (H x W: boxes), {len(grids)} batched calls: "
        + ", ".join(f"{g}: {n}" for g, n in grids.items())
        + ".",
        "",
    ]


def _accuracy_md(section: dict) -> list[str]:
    sizes = list(section["boundary_ap"])
    rows = []
    for key, label in (("boundary_ap", "Boundary AP"), ("mask_ap", "mask AP")):
        for name in ("fixed224", "box"):
            cells = [section[key][s][name] for s in sizes]
            rows.append(
                [
                    f"{label}, {NAMES[name]}",
                    *[f"{number(c['value'])} ± {c['se']:.2f}" for c in cells],
                ]
            )
    return [
        f"The shipped synthetic PointRend model on {section['accuracy_val_images']} validation "
        f"images, the same detections scored against exact ground truth at each size (± one "
        f"standard error over {section['accuracy_folds']} folds):",
        "",
        table(["", *[f"{s} px" for s in sizes]], rows),
        "",
    ]


def per_box_md(results: dict) -> list[str]:
    """``## Per-box mask resolution`` from the stand-alone keys present (``[]`` if none)."""
    section = results.get("per_box_resolution")
    if not section:
        return []
    out = ["## Per-box mask resolution", "", "### Cost", "", *_cost_md(section)]
    if "boundary_ap" in section:
        out += ["### Accuracy", "", *_accuracy_md(section)]
    return out
