"""The report's section on per-box mask resolution (``python -m benchmarks.per_box`` and the
stand-alone modules around it), from ``results.json``'s top-level keys."""

from __future__ import annotations

from .cells import table

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
    grids = section["box_grids"]
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
                    *[f"{c['value']:.2f} ± {c['se']:.2f}" for c in cells],
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


def _scale_md(section: dict) -> list[str]:
    h, w = section["output_image"]
    modes, oracle = section["modes"], section["oracle"]
    above = section["score_above_0.5"]["mask_s"]
    count = modes["box"]["detections"]
    rows = [
        [
            NAMES[m],
            "x".join(map(str, modes[m]["grid"])),
            f"{modes[m]['mask_iou']:.3f}",
            f"{modes[m]['boundary_iou']:.3f}",
            f"{section['mask_s'][m]:.2f} s ({section['render_s'][m]:.2f} + "
            f"{section['paste_s'][m]:.2f})",
            f"{section['peak_mb'][m]:.0f} MB",
            f"{above[m]:.2f} s",
        ]
        for m in ("fixed224", "box")
    ]
    ceilings = ", ".join(f"{side}: {v['boundary_iou']:.3f}" for side, v in oracle.items())
    return [
        f"One {w}x{h} output (`{section['command']}`): the shipped synthetic model on a "
        f"{section['input_image'][1]}x{section['input_image'][0]} scene, its masks pasted at "
        f"{w}x{h}; the big object ({section['scene']['category']}) is "
        f"{section['object_size_px']:.0f} px across, scored against ground truth rendered "
        f"exactly at that size:",
        "",
        table(
            [
                "masks",
                "object's grid",
                "mask IoU",
                "Boundary IoU",
                f"masks of {count} detections (render + paste)",
                "peak",
                "detections scoring > 0.5",
            ],
            rows,
        ),
        "",
        f"- The ground truth itself through a grid of each side in its box (Boundary IoU): "
        f"{ceilings}.",
        f"- Picture: `{section['picture']['file']}` (a {section['picture']['crop_y_x_side'][2]} "
        "px crop of the boundary at 100 %: fixed 224 | per-box | ground truth).",
        "",
    ]


def _budget_md(section: dict, k: str = "3.5") -> list[str]:
    def cell(c: dict) -> str:
        return f"{c['boundary_iou']['value']:.1f} ± {c['boundary_iou']['se']:.1f} ({c['points_per_box']})"

    rows = []
    for side, row in section["by_size"].items():
        smallest = row["smallest_k"]["of_best"]
        rows.append(
            [
                side,
                cell(row["fixed224"]),
                *(cell(row[rule][k]) for rule in ("per_box", "final_side", "step_side")),
                f"{row['no_refinement']['boundary_iou']['value']:.1f}",
                " / ".join(str(smallest.get(r)) for r in ("per_box", "final_side", "step_side")),
            ]
        )
    return [
        f"An oracle instead of the point head (`{section['command']}`): {section['shapes']} random "
        "shapes filling their box, coarse logits and point predictions from their exact coverage; "
        "Boundary IoU (points, ± s.e.) of the mask at the box's grid side M against the exact one, "
        f"with the point predictions per box in brackets; per-box, final side and step side at "
        f"k = {k} points per cell of the side:",
        "",
        table(
            [
                "M",
                "fixed 224, resampled",
                "per-box rule",
                "k x M every step",
                "k x step side",
                "no refinement",
                "smallest k within 0.5 of the best (per-box / final / step)",
            ],
            rows,
        ),
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
    if results.get("point_budget"):
        out += ["### Points per step", "", *_budget_md(results["point_budget"])]
    if results.get("per_box_scale"):
        out += ["### Scale", "", *_scale_md(results["per_box_scale"])]
    return out
