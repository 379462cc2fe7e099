"""The report's figures (PNG, matplotlib's Agg backend: no display needed).

Each ``plot_*`` function but the last takes one section of ``results.json`` and writes one file;
it returns the file name, or ``None`` when the section has nothing to plot.
:func:`plot_boundary_crop` draws masks themselves (a crop at 100 %).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pointrend.evaluation.boundary import boundary_region  # noqa: E402

from .summary import standard_error  # noqa: E402

__all__ = [
    "plot_cost_vs_resolution",
    "plot_semantic_cost",
    "plot_accuracy",
    "plot_accuracy_by_resolution",
    "plot_inference_ablation",
    "plot_training_ablation",
    "plot_boundary_crop",
]

COLOURS = {"pointrend": "tab:blue", "dense": "tab:orange", "other": "tab:gray"}


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def plot_cost_vs_resolution(cost: dict, out: Path) -> str | None:
    """Time, peak memory and multiply-adds of both mask branches against output size."""
    rows = cost.get("sweep")
    if not rows:
        return None
    sizes = [int(s) for s in rows]
    panels = [
        (f"CPU time, {cost['boxes']} boxes (s)", "pointrend_s", "dense_4xconv_s"),
        ("peak memory per box (MB)", "pointrend_peak_mb_per_box", "dense_peak_mb_per_box"),
        (
            "multiply-adds per box",
            "pointrend_multiply_adds_per_box",
            "dense_multiply_adds_per_box",
        ),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, (title, ours, dense) in zip(axes, panels):
        ax.plot(sizes, [rows[str(s)][ours] for s in sizes], "o-", label="PointRend")
        ax.plot(sizes, [rows[str(s)][dense] for s in sizes], "s-", label="dense 4x conv")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_xlabel("mask output size (side, pixels)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend()
    return _save(fig, out / "cost_vs_resolution.png")


def plot_semantic_cost(semantic: dict, out: Path) -> str | None:
    rows = semantic.get("rows")
    if not rows:
        return None
    names = list(rows)
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    for ax, (key, title) in zip(
        axes,
        [
            ("time_s", "CPU time (s)"),
            ("peak_mb", "peak memory (MB)"),
            ("multiply_adds", "mult-adds"),
        ],
    ):
        values = [rows[n][key] for n in names]
        shown = [v if v > 0 else float("nan") for v in values]  # log scale: no bar for a zero
        bars = ax.bar(range(len(names)), shown, color=["tab:gray", "tab:blue", "tab:orange"])
        ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], fontsize=7)
        ax.set_xticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=8)
        ax.set_yscale("log")
        ax.set_title(title, fontsize=10)
    h, w = semantic["image"]
    fig.suptitle(f"full-resolution semantic logits, {h} x {w}, K = {semantic['num_classes']}")
    return _save(fig, out / "semantic_cost.png")


def _bars(ax, rows: dict, metrics: list[str], title: str) -> None:
    names = list(rows)
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [j + i * width for j in range(len(metrics))]
        values = [rows[name].get(m) or 0.0 for m in metrics]
        bars = ax.bar(xs, values, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks([j + width * (len(names) - 1) / 2 for j in range(len(metrics))], metrics)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)


def plot_accuracy(accuracy: dict, out: Path) -> str | None:
    """Instance (mask AP, AP75, Boundary AP) and semantic (mIoU, boundary F) bars."""
    instance, semantic = accuracy.get("instance"), accuracy.get("semantic")
    if not instance and not semantic:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(13, 4), gridspec_kw={"width_ratios": [3, 2]})
    if instance:
        models = {k: v for k, v in instance["rows"].items() if not k.startswith("oracle")}
        _bars(axes[0], models, ["mask_AP", "mask_AP75", "boundary_AP"], "instances (%)")
    if semantic:
        _bars(axes[1], semantic["rows"], ["mIoU", "boundary_F"], "semantic (%)")
    return _save(fig, out / "accuracy.png")


RESOLUTION_STYLES = {
    "oracle28": ("k", ":", "oracle 28x28"),
    "oracle56": ("0.45", ":", "oracle 56x56"),
    "oracle224": ("k", "--", "oracle 224x224"),
    "maskrcnn": (COLOURS["dense"], "-", "Mask R-CNN 28x28"),
    "pointrend28": ("tab:cyan", "-", "PointRend 28x28"),
    "pointrend224": (COLOURS["pointrend"], "-", "PointRend 224x224"),
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
    return _save(fig, out / "accuracy_by_resolution.png")


def plot_inference_ablation(inference: dict, out: Path) -> str | None:
    """Accuracy and time per box against output size and against points per step."""
    rows = inference.get("rows")
    if not rows:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    series = [
        (axes[0], inference["output_sizes"], "output_size", "mask output size (side)"),
        (axes[1], inference["points_per_step"], "subdivision_num_points", "points per step"),
    ]
    for ax, names, key, label in series:
        xs = [rows[n][key] for n in names]
        for metric, marker in (("mask_AP", "o-"), ("mask_AP75", "^-"), ("boundary_AP", "s-")):
            ax.plot(xs, [rows[n][metric] for n in names], marker, label=metric)
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel(label)
        ax.set_ylabel("AP (%)")
        twin = ax.twinx()
        twin.plot(xs, [rows[n]["render_ms_per_box"] for n in names], "k--", label="ms per box")
        twin.set_ylabel("mask branch ms per box (dashed)")
        ax.legend(fontsize=8, loc="center right")
        ax.grid(True, alpha=0.3)
    return _save(fig, out / "inference_ablation.png")


def plot_training_ablation(training: dict, out: Path) -> str | None:
    rows = training.get("rows")
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(10, 4))
    _bars(ax, rows, ["mask_AP", "mask_AP75", "boundary_AP"], "training point selection (%)")
    return _save(fig, out / "training_ablation.png")


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
