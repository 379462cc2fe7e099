"""Pictures: overlays of masks and label maps, the subdivision steps, side-by-side comparisons.

Arrays here are numpy ``H x W x 3`` uint8 images (RGB); masks ``N x H x W`` bool; label maps
``H x W`` ints. The figure functions draw with matplotlib (Agg, no screen) and write PNGs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "palette",
    "label_edges",
    "instance_id_map",
    "to_uint8_image",
    "colorize_labels",
    "overlay_instances",
    "overlay_ranked",
    "overlay_labels",
    "plot_subdivision_steps",
    "plot_panels",
    "require_matplotlib",
    "label_instances",
]


def palette(n: int, seed: int = 3) -> np.ndarray:
    """``n x 3`` uint8 colours, bright and well apart (golden-ratio hues)."""
    import colorsys

    hues = (np.arange(n) * 0.618033988749895 + seed * 0.1) % 1.0
    rgb = [colorsys.hsv_to_rgb(h, 0.75, 0.95) for h in hues]
    return (np.asarray(rgb).reshape(n, 3) * 255).astype(np.uint8)


def to_uint8_image(image: torch.Tensor | np.ndarray) -> np.ndarray:
    """A ``3 x H x W`` tensor (float in [0, 1], or uint8) or an ``H x W x 3`` array ->
    ``H x W x 3`` uint8."""
    if torch.is_tensor(image):
        if image.dtype == torch.uint8:
            return np.ascontiguousarray(image.detach().cpu().permute(1, 2, 0).numpy())
        image = image.detach().cpu().float().clamp(0, 1).permute(1, 2, 0).numpy()
        return (image * 255 + 0.5).astype(np.uint8)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        image = (np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8)
    return image


def label_edges(ids: np.ndarray) -> np.ndarray:
    """Pixels of an ``H x W`` id map (0 = nothing) on the inner side of a change of id."""
    edge = np.zeros(ids.shape, dtype=bool)
    diff_x = ids[:, 1:] != ids[:, :-1]
    diff_y = ids[1:, :] != ids[:-1, :]
    edge[:, 1:] |= diff_x & (ids[:, 1:] > 0)
    edge[:, :-1] |= diff_x & (ids[:, :-1] > 0) & (ids[:, 1:] == 0)
    edge[1:, :] |= diff_y & (ids[1:, :] > 0)
    edge[:-1, :] |= diff_y & (ids[:-1, :] > 0) & (ids[1:, :] == 0)
    return edge


def colorize_labels(labels: np.ndarray, num_classes: int, ignore_index: int = 255) -> np.ndarray:
    """``H x W`` class indices -> ``H x W x 3`` colours (class 0 black, ignored grey)."""
    colours = np.concatenate([np.zeros((1, 3), np.uint8), palette(max(num_classes - 1, 1))])
    labels = np.asarray(labels)
    out = colours[np.clip(labels, 0, len(colours) - 1)]
    out[labels == ignore_index] = 128
    return out


def _blend(
    image: np.ndarray,
    ids: np.ndarray,
    colour_of,
    alpha: float,
    rows: int = 64,
    in_place: bool = False,
) -> np.ndarray:
    """``image`` (``H x W x 3`` uint8) with the pixels of nonzero ``ids`` (``H x W``) blended
    with their colours ``colour_of(ids)`` (``... x 3`` uint8), ``rows`` rows at a time: the
    float work covers one strip, never the whole image. ``in_place``: into ``image`` itself."""
    out = image if in_place else image.copy()
    for start in range(0, ids.shape[0], rows):
        strip, painted = out[start : start + rows], ids[start : start + rows]
        colours = colour_of(painted).astype(np.float32)
        mixed = ((1 - alpha) * strip.astype(np.float32) + alpha * colours).astype(np.uint8)
        np.copyto(strip, mixed, where=(painted > 0)[..., None])
    return out


def _paint_edges(out: np.ndarray, ids: np.ndarray, rows: int = 512) -> None:
    """``out[label_edges(ids)] = 255``, ``rows`` rows at a time (each strip read with one row
    of its neighbours above and below)."""
    for start in range(0, ids.shape[0], rows):
        above = max(start - 1, 0)
        edges = label_edges(ids[above : start + rows + 1])[start - above :][:rows]
        out[start : start + rows][edges] = 255


def instance_id_map(masks: np.ndarray) -> np.ndarray:
    """``N x H x W`` bool masks -> ``H x W`` ids: ``i + 1`` for the last mask covering a pixel
    (masks drawn in order, a later one on top), 0 where none does."""
    masks = np.asarray(masks, dtype=bool)
    if masks.shape[0] == 0:
        return np.zeros(masks.shape[1:], dtype=np.int64)
    return np.where(masks.any(0), masks.shape[0] - np.argmax(masks[::-1], axis=0), 0)


def overlay_instances(image: np.ndarray, masks: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Instances painted over the image, each in its own colour, with white outlines.

    ``masks`` is ``N x H x W`` bool, drawn in order (a later instance covers an earlier one).
    """
    masks = np.asarray(masks, dtype=bool)
    return overlay_ranked(image, instance_id_map(masks), masks.shape[0], alpha)


def label_instances(
    overlay: np.ndarray, boxes: torch.Tensor, texts: list[str], colours: np.ndarray
) -> np.ndarray:
    """Boxes and their texts (e.g. ``"dog 0.97"``) drawn into an ``H x W x 3`` uint8 overlay, in
    place and in the order given (the last on top); line width and font size grow with the
    image, so that a 6000 x 4000 photo's labels are readable. ``colours``: ``N x 3`` uint8, one
    per box. Each label is a small patch drawn by PIL (text in the box's colour band); only the
    box outlines and the label patches are written, the photo is not copied."""
    from PIL import Image, ImageDraw

    H, W = overlay.shape[:2]
    side = max(H, W)
    width, font = max(1, round(side / 500)), _label_font(max(10, round(side / 45)))
    pad = max(1, width)
    for (x0, y0, x1, y1), text, colour in zip(_pixel_boxes(boxes, H, W), texts, colours):
        colour = tuple(int(v) for v in colour)
        for rows, cols in (
            (slice(y0, min(y0 + width, y1)), slice(x0, x1)),
            (slice(max(y1 - width, y0), y1), slice(x0, x1)),
            (slice(y0, y1), slice(x0, min(x0 + width, x1))),
            (slice(y0, y1), slice(max(x1 - width, x0), x1)),
        ):
            overlay[rows, cols] = colour
        left, top, right, bottom = font.getbbox(text)
        patch = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), colour)
        ImageDraw.Draw(patch).text((pad - left, pad - top), text, fill=(0, 0, 0), font=font)
        h, w = min(patch.height, H - y0), min(patch.width, W - x0)
        overlay[y0 : y0 + h, x0 : x0 + w] = np.asarray(patch)[:h, :w]
    return overlay


def _pixel_boxes(boxes: torch.Tensor, H: int, W: int) -> list[list[int]]:
    """``N x 4`` boxes as integer pixel ranges clipped to the image (at least one pixel)."""
    b = boxes.to(torch.float32).round().to(torch.int64)
    x0, x1 = b[:, 0].clamp(0, W - 1), b[:, 2].clamp(1, W)
    y0, y1 = b[:, 1].clamp(0, H - 1), b[:, 3].clamp(1, H)
    return torch.stack([x0, y0, torch.maximum(x1, x0 + 1), torch.maximum(y1, y0 + 1)], 1).tolist()


def _label_font(size: int):
    """A TrueType font of ``size`` pixels for the labels: matplotlib's DejaVu Sans, else PIL's
    own scalable default, else its fixed bitmap font."""
    from PIL import ImageFont

    try:
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError):
        try:
            return ImageFont.load_default(size=size)
        except TypeError:  # Pillow < 10.1
            return ImageFont.load_default()


def overlay_ranked(
    image, drawn: np.ndarray, count: int, alpha: float = 0.5, in_place: bool = False
) -> np.ndarray:
    """:func:`overlay_instances` from the id map: ``drawn`` (``H x W`` ints) is ``i + 1`` where
    instance ``i`` (of ``count``, in drawing order) is on top, 0 where none is. ``in_place``:
    drawn into the memory of a uint8 ``image`` (``H x W x 3``, or a ``3 x H x W`` view of
    channels-last memory) when :func:`to_uint8_image` gives a view of it, saving a copy."""
    image = to_uint8_image(image)
    if count == 0:
        return image if in_place else image.copy()
    colours = np.concatenate([np.zeros((1, 3), np.uint8), palette(count)])
    out = _blend(image, drawn, lambda ids: colours[ids], alpha, in_place=in_place)
    _paint_edges(out, drawn)
    return out


def overlay_labels(
    image: np.ndarray, labels: np.ndarray, num_classes: int, alpha: float = 0.55
) -> np.ndarray:
    """A semantic label map painted over the image (class 0 left clear), class edges in white."""
    image = to_uint8_image(image)
    labels = np.asarray(labels)
    out = _blend(image, labels, lambda ids: colorize_labels(ids, num_classes), alpha)
    _paint_edges(out, labels)
    return out


def require_matplotlib() -> None:
    """An ``ImportError`` saying what to install when matplotlib is missing (before any work
    whose figures could not be drawn)."""
    _pyplot()


def _pyplot():
    """``matplotlib.pyplot`` on the Agg backend, imported only when drawing."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("drawing figures needs matplotlib: pip install matplotlib") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(rows: int, cols: int, size: float = 2.6):
    plt = _pyplot()
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    return fig, axes


def _save(fig, path: str | Path, dpi: int = 110) -> Path:
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_subdivision_steps(
    coarse: np.ndarray,
    steps: Sequence[tuple[np.ndarray, np.ndarray | None]],
    path: str | Path,
    title: str = "",
) -> Path:
    """The paper's picture: the coarse mask, then each step's map with the points it chose.

    Args:
        coarse: ``h x w`` probabilities of the coarse prediction.
        steps: per step, ``(map, points)``: the ``H x W`` probabilities after the step and the
            chosen points ``P x 2`` as (x, y) in [0, 1] of the map, or ``None`` for a step that
            predicted every cell.
    """
    fig, axes = _figure(1, len(steps) + 1)
    panels = [(coarse, None, f"coarse {coarse.shape[0]}x{coarse.shape[1]}")]
    for prob, points in steps:
        label = f"{prob.shape[0]}x{prob.shape[1]}"
        label += " (every cell)" if points is None else f", {len(points)} points"
        panels.append((prob, points, label))
    for ax, (prob, points, label) in zip(axes[0], panels):
        h, w = prob.shape
        ax.imshow(prob, cmap="gray", vmin=0, vmax=1, extent=(0, w, h, 0), interpolation="nearest")
        if points is not None and len(points):
            ax.scatter(points[:, 0] * w, points[:, 1] * h, s=1.5, c="red", linewidths=0)
        ax.set_title(label, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_panels(
    rows: Sequence[Sequence[np.ndarray]],
    titles: Sequence[str],
    path: str | Path,
    row_labels: Sequence[str] | None = None,
    size: float = 2.6,
) -> Path:
    """A grid of pictures: ``rows[i][j]`` is an ``H x W x 3`` image, ``titles`` head the columns."""
    fig, axes = _figure(len(rows), len(titles), size)
    for i, row in enumerate(rows):
        for j, picture in enumerate(row):
            axes[i, j].imshow(picture, interpolation="nearest")
            if i == 0:
                axes[i, j].set_title(titles[j], fontsize=9)
        if row_labels:
            axes[i, 0].text(
                -0.04,
                0.5,
                row_labels[i],
                transform=axes[i, 0].transAxes,
                ha="right",
                va="center",
                rotation=90,
                fontsize=9,
            )
    return _save(fig, path)
