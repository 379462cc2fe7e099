"""Instance accuracy by evaluation resolution: where the rendering resolution can matter.

The models see each validation image at their input size ``s`` (160 px for the shipped ones);
their detections are pasted into images of ``s``, ``2s`` and ``4s`` pixels and scored against
the synthetic scene's ground truth rendered exactly at that size (the shapes are exact
functions: rendered larger, not upsampled). At ``s`` a 28 x 28 mask already holds most of a
small object's boundary; at ``4s`` every object spans 4x as many pixels, which a fixed 28 x 28
mask cannot follow and a mask rendered at 224 x 224 can.

Rows (the keys of ``results.json``'s ``"accuracy_by_resolution"``):

* ``oracle28`` .. ``oracle224``: the ground truth at that size resampled through an M x M mask in
  its box and pasted back, the ceiling of an M x M output at that evaluation size;
* ``maskrcnn``: torchvision's Mask R-CNN (4x conv head, 28 x 28 masks);
* ``pointrend28`` .. ``pointrend224``: PointRend rendered at M x M (the same weights);
* ``pointrend_box``: the same weights with ``mask_resolution="box"``, each mask rendered at
  about its box's size in the image it is pasted into (so a different grid at each size).

Each row has mask AP, AP75 and Boundary AP (percent), overall and per fold.
"""

from __future__ import annotations

from collections.abc import Callable

from .scoring import ValSet, mask_settings, oracle_scores, predict_at_sizes, score_results

__all__ = ["FACTORS", "MASK_SIZES", "ROWS", "by_resolution", "resolution_table"]

FACTORS = (1, 2, 4)  # evaluation size / model input size
MASK_SIZES = (28, 56, 112, 224)
ROWS = [
    *(f"oracle{m}" for m in MASK_SIZES),
    "maskrcnn",
    *(f"pointrend{m}" for m in MASK_SIZES),
    "pointrend_box",
]
TABLE_KEYS = {"mask_ap": "mask_AP", "ap75": "mask_AP75", "boundary_ap": "boundary_AP"}


def _model_rows(model, vals: dict[int, ValSet]) -> dict[int, dict]:
    """``{size: scores}`` of one model's predictions, made once, pasted at every size."""
    base = vals[min(vals)]
    results = predict_at_sizes(model, base.dataset, sorted(vals))
    return {size: score_results(vals[size], results[size]) for size in vals}


def by_resolution(
    pointrend, baseline, vals: dict[int, ValSet], log: Callable | None = print
) -> dict:
    """The section's figures: ``{"sizes", "model_input_size", "rows": {size: {row: scores}}}``.

    ``vals`` maps each evaluation size to the validation set whose ground truth is rendered at
    that size (the same images); ``pointrend`` and ``baseline`` are the trained models.
    """
    rows: dict[int, dict] = {size: {} for size in vals}
    for size in sorted(vals):
        for m in MASK_SIZES:
            rows[size][f"oracle{m}"] = oracle_scores(vals[size], m)
    for size, scores in _model_rows(baseline, vals).items():
        rows[size]["maskrcnn"] = scores
    for m in MASK_SIZES:
        with mask_settings(pointrend, output_size=m):
            for size, scores in _model_rows(pointrend, vals).items():
                rows[size][f"pointrend{m}"] = scores
    with mask_settings(pointrend, mask_resolution="box"):
        for size, scores in _model_rows(pointrend, vals).items():
            rows[size]["pointrend_box"] = scores
    if log:
        for size in sorted(vals):
            cells = "  ".join(f"{k} {rows[size][k]['boundary_AP']:5.1f}" for k in ROWS)
            log(f"  Boundary AP at {size} px: {cells}")
    base = vals[min(vals)]
    return {
        "sizes": sorted(vals),
        "model_input_size": base.image_size,
        "val_images": len(base.dataset),
        "folds": len(base.folds),
        "rows": {str(size): {k: rows[size][k] for k in ROWS} for size in sorted(vals)},
    }


def resolution_table(section: dict) -> dict:
    """``{"160": {row: {"mask_ap", "ap75", "boundary_ap"}}, ...}``: the figures a script reads
    (``results.json``'s ``"accuracy_by_resolution"``); standard errors stay in the section."""
    return {
        size: {
            row: {key: scores[name] for key, name in TABLE_KEYS.items()}
            for row, scores in rows.items()
        }
        for size, rows in section["rows"].items()
    }
