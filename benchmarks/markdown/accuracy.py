"""The report's accuracy sections: instances (section 2), ablations (3), semantic (4).

Differences between models come with the standard error of their per-fold values (the
validation set in equal parts): a rough guide to what a difference is worth, not a test.
"""

from __future__ import annotations

from ..summary import delta, pm
from .cells import boundary_note, count, measured, number, table
from .resolution import resolution_md

__all__ = ["accuracy_md", "ablation_md", "semantic_md", "learning_md"]


def _ap_rows(rows: dict, keys: list[str]) -> list[list[str]]:
    return [[name, *[number(r.get(k)) for k in keys]] for name, r in rows.items()]


def _delta_sentence(rows: dict, ours: str, base: str, keys: list[str]) -> str:
    if ours not in rows or base not in rows:
        return ""
    parts = [f"{k} {pm(*delta(rows[ours], rows[base], k))}" for k in keys]
    n = len(rows[ours].get("folds") or [])
    se = f" (± one standard error over {n} folds)" if n > 1 else ""
    return f"{ours} minus {base}: " + ", ".join(parts) + f" points{se}."


def _stricter(d: dict, measure: str) -> str:
    """Which of AP75 / Boundary AP gain more than AP by measure ``d`` (points or relative)."""
    more = [k for k in ("mask_AP75", "boundary_AP") if d[k] > d["mask_AP"]]
    less = [k for k in ("mask_AP75", "boundary_AP") if d[k] <= d["mask_AP"]]
    if not less:
        return f"{measure}, more so on both stricter measures"
    if not more:
        return f"{measure}, not more so on either stricter measure"
    return f"{measure}, more so on {more[0]} but not on {less[0]}"


def _pattern(rows: dict, ours: str, base: str) -> str:
    """Is PointRend ahead, and more so on AP75 and Boundary AP than on AP (the paper's Table 1
    pattern)? Judged in AP points and relative to the baseline, both stated."""
    if ours not in rows or base not in rows:
        return ""
    keys = ("mask_AP", "mask_AP75", "boundary_AP")
    a, b = rows[ours], rows[base]
    ds = {k: delta(a, b, k) for k in keys}
    d = {k: v[0] for k, v in ds.items()}
    if not all(v > 0 for v in d.values()):
        behind = [k for k, v in d.items() if v <= 0]
        verdict = f"the paper's pattern does not show: not ahead on {', '.join(behind)}"
    else:
        rel = {k: (a[k] / b[k] - 1) if b[k] else 0.0 for k in keys}
        verdict = (
            f"ahead on all three; {_stricter(d, 'in AP points')}; "
            f"{_stricter(rel, 'relative to the baseline')}"
        )
    small = [k for k, (v, se) in ds.items() if se is not None and abs(v) < 2 * se]
    if small:
        verdict += f" (within two standard errors of no difference: {', '.join(small)})"
    return f"{ours} vs {base}: {verdict}."


def _models_line(models: dict) -> str:
    parts = []
    for key, m in models.items():
        how = "trained in this run" if m["trained_in_this_run"] else "checkpoint"
        parts.append(f"{key}: `{m['weights']}` (iteration {m['iteration']}, {how})")
    return "Models: " + "; ".join(parts) + "."


def accuracy_md(acc: dict, figures: dict) -> list[str]:
    out = ["## 2. Instance accuracy at equal training budget", "", measured(acc), ""]
    out += boundary_note(acc)
    inst = acc.get("instance")
    keys = ["mask_AP", "mask_AP50", "mask_AP75", "boundary_AP", "boundary_AP75", "box_AP"]
    if inst:
        rows = inst["rows"]
        out += [
            f"{inst['val_images']} fresh synthetic images of {inst['image_size']} px "
            f"(seed {inst['val_seed']}). {_models_line(inst['models'])} Both PointRend rows are "
            "the same weights rendered at two resolutions.",
            "",
            table(["model", *keys], _ap_rows(rows, keys)),
            "",
        ]
        base = "Mask R-CNN 4x conv, 28x28"
        for ours in ("PointRend, 28x28", "PointRend, 224x224"):
            out.append(
                "- " + _delta_sentence(rows, ours, base, ["mask_AP", "mask_AP75", "boundary_AP"])
            )
            out.append("- " + _pattern(rows, ours, base))
        out += [
            "- The oracle rows score the ground truth itself after resampling each mask to M x M "
            "in its box: the most a mask of that resolution can reach here.",
            "",
        ]
    if figures.get("accuracy"):
        out += [f"![accuracy]({figures['accuracy']})", ""]
    if inst and inst.get("by_resolution"):
        out += resolution_md(inst["by_resolution"], figures)
    return out


def semantic_md(acc: dict) -> list[str]:
    out = []
    sem = acc.get("semantic")
    if sem:
        rows = sem["rows"]
        keys = ["mIoU", "boundary_F", "boundary_IoU"]
        out += [
            "## 4. Semantic at equal training budget",
            "",
            measured(acc),
            "",
            *boundary_note(acc),
            f"{sem['val_images']} fresh synthetic images of {sem['image_size']} px; coarse "
            f"logits at stride {sem.get('coarse_stride', '?')}. {_models_line(sem['models'])}",
            "",
            table(
                ["model", "mIoU", "boundary F", "boundary IoU"],
                _ap_rows(rows, keys),
            ),
            "",
        ]
        names = list(rows)
        if len(names) == 2:
            out += ["- " + _delta_sentence(rows, names[1], names[0], keys), ""]
    return out


def ablation_md(abl: dict, figures: dict) -> list[str]:
    out = ["## 3. Ablations", ""]
    inf = abl.get("inference")
    if inf:
        t = inf["timing"]
        out += [
            "### Inference settings, same weights",
            "",
            measured(inf),
            "",
            *boundary_note(inf),
            f"Weights `{inf['model']['weights']}` (iteration {inf['model']['iteration']}); "
            f"{inf['val_images']} validation images. Time: the mask branch on the "
            f"{t['boxes']} ground-truth boxes of {t['images']} images, settings alternated, "
            f"median of {t['repeats']}.",
            "",
        ]
        keys = ["mask_AP", "mask_AP75", "boundary_AP"]
        rows = [
            [
                name,
                f"{r['output_size']}",
                f"{r['subdivision_num_points']}",
                *[number(r[k]) for k in keys],
                number(r["render_ms_per_box"], 2),
                str(r["point_predictions_per_box"]),
                count(r["multiply_adds_per_box"]),
            ]
            for name, r in inf["rows"].items()
        ]
        header = [
            "setting",
            "output",
            "points/step",
            *keys,
            "ms/box",
            "points/box",
            "mult-adds/box",
        ]
        out += [table(header, rows), ""]
        if figures.get("inference"):
            out += [f"![inference ablation]({figures['inference']})", ""]
    tr = abl.get("training")
    if tr:
        keys = ["mask_AP", "mask_AP75", "boundary_AP", "box_AP"]
        out += [
            "### Training point selection",
            "",
            measured(tr),
            "",
            *boundary_note(tr),
            f"Each variant trained here from the PointRend CPU recipe for {tr['train_iters']} "
            f"iterations ({_schedule(tr.get('schedule'))}), the same seed and data order; "
            f"evaluated at 224x224 on {tr['val_images']} validation images. The paper: uniform "
            "and the regular grid are worse than mildly biased; heavily biased is much worse.",
            "",
            table(
                ["training points", *keys, "mask AP vs mildly biased", "Boundary AP vs mildly"],
                _training_rows(tr["rows"], keys),
            ),
            "",
            "Differences: ± one standard error over the validation folds.",
            "",
        ]
        if figures.get("training"):
            out += [f"![training ablation]({figures['training']})", ""]
    return out


def _schedule(schedule: dict | None) -> str:
    if not schedule:
        return "schedule not recorded"
    steps = ", ".join(str(x) for x in schedule["steps"])
    return (
        f"LR {schedule['lr']}, {schedule['warmup_iters']} warm-up iterations, x0.1 at {steps}"
        if schedule["schedule"] == "step"
        else f"{schedule['schedule']} LR"
    )


def _training_rows(rows: dict, keys: list[str]) -> list[list[str]]:
    ref = next((r for n, r in rows.items() if n.startswith("mildly")), None)
    out = []
    for row, name in zip(_ap_rows(rows, keys), rows):
        extra = ["", ""]
        if ref is not None and rows[name] is not ref:
            extra = [pm(*delta(rows[name], ref, k)) for k in ("mask_AP", "boundary_AP")]
        out.append(row + extra)
    return out


def learning_md(learning: dict) -> list[str]:
    """Section 5: both mask branches learned from scratch on the same tiny problem."""
    rows = learning["rows"]
    cells = [
        [name, number(r["boundary_iou"], 3), number(r["mask_iou"], 3)] for name, r in rows.items()
    ]
    size = learning["image_size"]
    return [
        "## 5. Boundaries learned from scratch on a tiny problem",
        "",
        measured(learning),
        "",
        *boundary_note(learning),
        f"The same tiny ResNet-18-FPN Mask R-CNN with either mask branch, {learning['steps']} Adam "
        f"steps of 2 images from scratch on {learning['images']} synthetic {size} x {size} images "
        "of star-shaped objects (the ground-truth boxes, jittered, as proposals); masks scored "
        "on the same images with the ground-truth boxes as detections. Boundary IoU: band of 2% "
        "of the image diagonal, the image border counted as a contour (the published definition).",
        "",
        table(["mask branch", "Boundary IoU", "mask IoU"], cells),
        "",
    ]
