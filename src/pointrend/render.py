"""Adaptive subdivision: the one inference loop of every PointRend task.

From coarse logits, each step upsamples the current logits 2x (bilinear, ``align_corners=False``),
measures uncertainty, picks the ``num_points`` most uncertain cells, predicts them with the point
head at their centres and writes the predictions back. Cells not picked keep their interpolated
value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._tracing import any_symbolic, as_size, is_recording
from .points import get_uncertain_point_coords_on_grid, grid_cell_centres

__all__ = [
    "SubdivisionStep",
    "subdivision_sizes",
    "shortcut_steps",
    "subdivision_inference",
    "dense_point_prediction",
]

PointPredictor = Callable[[Tensor], Tensor]
UncertaintyFunc = Callable[[Tensor], Tensor]


@dataclass
class SubdivisionStep:
    """What one step did (kept only when asked for: figures and tests).

    ``logits`` is the map after the step (``R x K x H x W``); ``point_indices`` (``R x P``, flat
    row-major) and ``point_coords`` (``R x P x 2``) are the cells the step predicted. A dense
    step (the shortcut) has every cell.
    """

    size: tuple[int, int]
    point_indices: Tensor
    point_coords: Tensor
    logits: Tensor


def subdivision_sizes(
    coarse_size: Sequence[int], steps: int | None = None, output_size: Sequence[int] | None = None
) -> list[tuple[int, int]]:
    """Map sizes after each step: doubling ``steps`` times, or until ``output_size`` is reached.

    With ``output_size`` each step doubles the size but never passes the output, so the last map
    is exactly ``output_size`` (input sizes that are not a multiple of the stride included).

    Without ``output_size`` the sizes are kept as given: traced sizes (0-dim tensors under
    ``torch.jit.trace`` / ONNX export) stay symbolic, so an exported model follows its input size.
    """
    h, w = as_size(coarse_size[0]), as_size(coarse_size[1])
    sizes = []
    if output_size is None:
        if steps is None:
            raise ValueError("give `steps` or `output_size`")
        for _ in range(steps):
            h, w = 2 * h, 2 * w
            sizes.append((h, w))
        return sizes
    h, w = int(h), int(w)
    out_h, out_w = int(output_size[0]), int(output_size[1])
    if out_h < h or out_w < w:
        raise ValueError(f"output_size {(out_h, out_w)} is smaller than the coarse map {(h, w)}")
    while (h, w) != (out_h, out_w) and (steps is None or len(sizes) < steps):
        h, w = min(2 * h, out_h), min(2 * w, out_w)
        sizes.append((h, w))
    return sizes


def shortcut_steps(sizes: Sequence[Sequence[int]], points: Sequence[int]) -> int:
    """How many first steps the shortcut of :func:`subdivision_inference` replaces: those whose
    maps (``sizes``, ``(H, W)`` after each step) have at most their ``points`` cells."""
    first = 0
    while first < len(sizes) and sizes[first][0] * sizes[first][1] <= points[first]:
        first += 1
    return first


def subdivision_inference(
    coarse_logits: Tensor,
    point_predictor: PointPredictor,
    uncertainty_func: UncertaintyFunc,
    steps: int | None,
    num_points: int | Sequence[int],
    output_size: Sequence[int] | None = None,
    shortcut: bool = True,
    return_steps: bool = False,
) -> Tensor | tuple[Tensor, list[SubdivisionStep]]:
    """Refine coarse logits by adaptive subdivision.

    Args:
        coarse_logits: ``R x K x h x w``.
        point_predictor: maps points ``R x P x 2`` (cell centres in ``[0, 1]`` of the region) to
            logits ``R x K x P``. It samples whatever it needs (fine features, the coarse
            prediction) at those points itself.
        uncertainty_func: maps logits ``R x K x H x W`` to uncertainty ``R x 1 x H x W``.
        steps: number of 2x steps (output ``h * 2**steps``); with ``output_size`` it may be
            ``None`` (step until the output size is reached).
        num_points: points predicted per step (capped at ``H * W``), or one count per step.
        output_size: optional exact final ``(H, W)``; each step doubles but stops at it.
        shortcut: start from the last of the first steps whose maps have at most their
            ``num_points`` cells by predicting every cell of that map densely. The plain loop
            would pick every cell of those steps anyway, so the result is the same, with fewer
            point predictions.
        return_steps: also return a :class:`SubdivisionStep` per step.

    Returns:
        The refined logits ``R x K x H x W`` (and the list of steps when asked).
    """
    sizes = subdivision_sizes(coarse_logits.shape[-2:], steps, output_size)
    points = [num_points] * len(sizes) if isinstance(num_points, int) else list(num_points)
    if len(points) != len(sizes):
        raise ValueError(f"{len(points)} point counts given for {len(sizes)} steps")
    R, K = coarse_logits.shape[:2]
    logits = coarse_logits
    history: list[SubdivisionStep] = []

    first = 0
    # The shortcut is chosen from the map sizes in Python: with symbolic sizes (traced) the plain
    # loop picks every cell of those steps itself (P = min(H * W, num_points)), the same result.
    if shortcut and not any_symbolic(sizes):
        first = shortcut_steps(sizes, points)
        if first:
            h, w = sizes[first - 1]
            logits = dense_point_prediction(point_predictor, R, (h, w), logits.device)
            logits = logits.to(coarse_logits.dtype)
            if return_steps:
                indices = torch.arange(h * w, device=logits.device).unsqueeze(0).expand(R, -1)
                coords = grid_cell_centres(h, w, device=logits.device).expand(R, -1, -1)
                history.append(SubdivisionStep((h, w), indices, coords, logits))

    for (h, w), count in zip(sizes[first:], points[first:]):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        indices, coords = get_uncertain_point_coords_on_grid(uncertainty_func(logits), count)
        predictions = point_predictor(coords).to(logits.dtype)
        flat = logits.reshape(R, K, h * w)
        index = indices.unsqueeze(1).expand(-1, K, -1)
        if is_recording():
            flat = flat.scatter(2, index, predictions)
        else:  # the upsampled map is this step's own: write into it (one full map, not two)
            flat.scatter_(2, index, predictions)
        logits = flat.view(R, K, h, w)
        if return_steps:
            history.append(SubdivisionStep((h, w), indices, coords, logits))

    return (logits, history) if return_steps else logits


def dense_point_prediction(
    point_predictor: PointPredictor, R: int, size: Sequence[int], device=None
) -> Tensor:
    """Predict every cell of an ``H x W`` map with ``point_predictor`` -> ``R x K x H x W``."""
    h, w = int(size[0]), int(size[1])
    coords = grid_cell_centres(h, w, device=device).unsqueeze(0).expand(R, -1, -1)
    out = point_predictor(coords)
    return out.reshape(R, out.shape[1], h, w)
