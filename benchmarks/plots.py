"""The plots the README shows (PNG, matplotlib's Agg backend: no display needed):
Boundary AP against evaluation size, and a crop of masks at 100 %."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pointrend.evaluation.boundary import boundary_region  # noqa: E402

from .common import standard_error  # noqa: E402

RESOLUTION_STYLES = {
    "oracle28": ("k", ":", "oracle 28x28"),
    "oracle56": ("0.45", ":", "oracle 56x56"),
    "oracle224": ("k", "--", "oracle 224x224"),
    "maskrcnn": ("tab:orange", "-", "Mask R-CNN 28x28"),
    "pointrend28": ("tab:cyan", "-", "PointRend 28x28"),
    "pointrend224": ("tab:blue", "-", "PointRend 224x224"),
    "pointrend_box": ("tab:purple", "--", "PointRend per-box grid"),
}


def plot_accuracy_by_resolution(section: dict, out: Path) -> str | None:
    """Boundary AP against evaluation size (± 1 SE): all rows, then the trained models alone."""
    rows = section.get("rows")
    if not rows:
        return None
    sizes = [str(s) for s in section["sizes"]]
    x = [int(s) for s in sizes]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, names in ((axes[0], list(RESOLUTION_STYLES)), (axes[1], list(RESOLUTION_STYLES)[3:])):
        for name in [n for n in names if n in rows[sizes[0]]]:
            colour, line, label = RESOLUTION_STYLES[name]
            values = [rows[s][name]["boundary_AP"] for s in sizes]
            errors = [standard_error(rows[s][name], "boundary_AP") or 0.0 for s in sizes]
            ax.errorbar(x, values, yerr=errors, color=colour, ls=line, marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(x, sizes)
        ax.set_xlabel(f"evaluation size (px; the models see {section['model_input_size']} px)")
        ax.set_ylabel("Boundary AP (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_title("ceilings (oracles) and trained models")
    axes[1].set_title("trained models only")
    fig.tight_layout()
    fig.savefig(out / "accuracy_by_resolution.png", dpi=110)
    plt.close(fig)
    return "accuracy_by_resolution.png"


def contour(mask: torch.Tensor) -> torch.Tensor:
    """``H x W`` bool: the mask's pixels next to a pixel outside it (the image border is not a
    contour)."""
    return boundary_region(mask, distance=1, border="replicate")


def crop_origin(mask: torch.Tensor, side: int) -> tuple[int, int]:
    """``(y, x)`` of the ``side x side`` window holding the most contour pixels of ``mask``
    (``H x W`` bool; windows on a grid of ``side / 8`` pixels)."""
    step = max(1, side // 8)
    counts = F.avg_pool2d(contour(mask)[None, None].float(), side, stride=step)[0, 0]
    y, x = divmod(int(counts.argmax()), counts.shape[1])
    return y * step, x * step


def _mask_panel(mask: torch.Tensor, outline: torch.Tensor | None) -> torch.Tensor:
    """``h x w x 3`` uint8: the mask light on dark, ``outline`` (bool) in red."""
    rgb = torch.where(mask, 225, 45).to(torch.uint8)[..., None].repeat(1, 1, 3)
    if outline is not None:
        rgb[outline] = torch.tensor([230, 20, 20], dtype=torch.uint8)
    return rgb


def plot_boundary_crop(predictions: dict, truth: torch.Tensor, path: Path, side: int) -> list[int]:
    """One crop of masks at 100 % (one mask pixel per image pixel): a panel per prediction
    (``{title: H x W bool}``), the ground truth's outline in red over it, then the ground truth
    (``H x W`` bool). The ``side x side`` crop (smaller if the masks are) is the window holding
    the most ground-truth contour pixels. Returns the crop ``[y, x, side]``."""
    side = min(side, *truth.shape)
    y, x = crop_origin(truth, side)
    window = (slice(y, y + side), slice(x, x + side))
    outline = contour(truth[window])
    panels = {title: _mask_panel(m[window], outline) for title, m in predictions.items()}
    panels["ground truth (exact)"] = _mask_panel(truth[window], None)
    gap, top, dpi = 12, 34, 100  # pixels
    width, height = len(panels) * (side + gap) + gap, side + top + gap
    fig = plt.figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    for i, (title, image) in enumerate(panels.items()):
        left = gap + i * (side + gap)
        ax = fig.add_axes((left / width, gap / height, side / width, side / height))
        ax.imshow(image.numpy(), interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title, fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)  # no tight layout: the axes keep their exact pixel size
    plt.close(fig)
    return [y, x, side]
