"""The report's table of instance accuracy by evaluation resolution (part of section 2)."""

from __future__ import annotations

from ..resolution import ROWS
from ..summary import delta, pm, standard_error
from .cells import number, table

__all__ = ["resolution_md"]

METRICS = {"mask_AP": "mask AP", "mask_AP75": "AP75", "boundary_AP": "Boundary AP"}


def _cell(row: dict, key: str) -> str:
    se = standard_error(row, key)
    return number(row[key]) + (f" ± {se:.1f}" if se is not None else "")


def _reading(rows: dict, sizes: list[str]) -> list[str]:
    """What the figures say at the smallest and largest size, computed from them."""
    low, high = sizes[0], sizes[-1]
    out = []
    pairs = [("pointrend224", "maskrcnn"), ("pointrend224", "pointrend28")]
    if "pointrend_box" in rows[low]:
        pairs.append(("pointrend_box", "pointrend224"))
    for ours, base in pairs:
        parts = [
            f"{size} px {pm(*delta(rows[size][ours], rows[size][base], 'boundary_AP'))}"
            for size in (low, high)
        ]
        out.append(f"- Boundary AP, {ours} minus {base}: " + ", ".join(parts) + " points.")
    for size in (low, high):
        o28, o224 = rows[size]["oracle28"], rows[size]["oracle224"]
        out.append(
            f"- Ceiling at {size} px: the ground truth through 28x28 scores Boundary AP "
            f"{o28['boundary_AP']:.1f}, through 224x224 {o224['boundary_AP']:.1f}; the trained "
            f"models reach {rows[size]['maskrcnn']['boundary_AP']:.1f} (Mask R-CNN) and "
            f"{rows[size]['pointrend224']['boundary_AP']:.1f} (PointRend 224)."
        )
    gain = {
        size: delta(rows[size]["pointrend224"], rows[size]["maskrcnn"], "boundary_AP")[0]
        for size in (low, high)
    }
    ahead = "widens" if gain[high] > gain[low] else "does not widen"
    out.append(
        f"- PointRend's Boundary AP lead over Mask R-CNN {ahead} from {low} to {high} px "
        f"({gain[low]:+.1f} to {gain[high]:+.1f} points)."
    )
    return out


def resolution_md(section: dict, figures: dict) -> list[str]:
    """``### Accuracy by evaluation resolution``: one table per metric, sizes as columns."""
    sizes = [str(s) for s in section["sizes"]]
    rows = section["rows"]
    out = [
        "### Accuracy by evaluation resolution",
        "",
        f"The same detections (models fed {section['model_input_size']} px images) pasted into "
        f"images of {', '.join(sizes)} px and scored against the synthetic scenes' ground truth "
        f"rendered exactly at that size (not upsampled); {section['val_images']} images, ± one "
        f"standard error over {section['folds']} folds. Rows `oracleM`: the ground truth at that "
        "size resampled through M x M in its box and pasted back (the ceiling of an M x M "
        "output); `maskrcnn`: 28x28 masks; `pointrendM`: the PointRend weights rendered at M x M; "
        "`pointrend_box`: the same weights, each mask at about its box's size in that image. "
        "COCO's size ranges are absolute pixels, so APs/m/l are not comparable across sizes.",
        "",
    ]
    for key, label in METRICS.items():
        names = [name for name in ROWS if name in rows[sizes[0]]]
        cells = [[name, *[_cell(rows[s][name], key) for s in sizes]] for name in names]
        out += [f"{label}:", "", table(["row", *[f"{s} px" for s in sizes]], cells), ""]
    out += _reading(rows, sizes) + [""]
    if figures.get("resolution"):
        out += [f"![Boundary AP by evaluation resolution]({figures['resolution']})", ""]
    return out
