"""The Markdown of ``REPORT.md``, from the figures of ``results.json``.

It states what was measured and what the numbers say, nothing more: every comparison with the
paper's pattern is computed from the figures, whatever they turn out to be. Differences between
models come with the standard error of their per-fold values (the validation set in equal
parts): a rough guide to what a difference is worth, not a test.
"""

from __future__ import annotations

import math

from .summary import delta, pm, summary_md

__all__ = ["render_markdown"]


def _f(value, digits: int = 1, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{value:.{digits}f}{unit}"


def _g(value: float) -> str:
    """Counts as 1.31T / 0.53B / 33.9M / 12.0k."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _measured(section: dict) -> str:
    m = section.get("measured", {})
    machine = m.get("machine", {})
    return (
        f"_Measured {m.get('at', '?')} in {m.get('seconds', '?')} s "
        f"(load average {_f(m.get('load_average_at_start'), 2)} at start, "
        f"{_f(m.get('load_average_at_end'), 2)} at end; {machine.get('cpu', '?')}, "
        f"{machine.get('torch_threads', '?')} thread(s)) by `{m.get('command', '?')}`._"
    )


def _cost_md(cost: dict, figures: dict) -> list[str]:
    out = [
        "## 1. Cost",
        "",
        _measured(cost),
        "",
        "### Mask head per box (K = 80, the paper's table)",
        "",
    ]
    rows = []
    for name, r in cost["per_box"].items():
        head, size = name.rsplit(" ", 1)
        rows.append(
            [
                head,
                f"{size}x{size}",
                _g(r["multiply_adds_per_box"]),
                _g(r["paper_multiply_adds"]),
                f"{_g(r['activations_peak_per_box'])} / {_g(r['activations_peak_with_sampled_inputs_per_box'])}",
                _g(r["paper_activations"]),
            ]
        )
    out += [
        _table(
            ["head", "output", "multiply-adds", "paper", "activations (peak / +inputs)", "paper"],
            rows,
        ),
        "",
        "Multiply-adds: `FlopCounterMode` / 2. Activations: elements written by the heads' conv "
        "and linear layers (PointRend: its largest step; +inputs adds the sampled features).",
        "",
    ]
    sweep = cost["sweep"]
    h, w = cost["image"]
    out += [
        f"### Against output resolution ({cost['boxes']} boxes of a {h} x {w} image)",
        "",
    ]
    header = ["output", "PointRend", "dense 4x conv", "dense / PointRend"]
    header += [
        "MB/box PR",
        "MB/box dense",
        "mult-adds/box PR",
        "mult-adds/box dense",
        "points/box PR",
    ]
    rows = []
    for size, r in sweep.items():
        n = r["dense_timed_on_boxes"]
        scaled = "" if n == cost["boxes"] else f" (on {n}, scaled)"
        rows.append(
            [
                f"{size}x{size}",
                _f(r["pointrend_s"], 3, " s"),
                _f(r["dense_4xconv_s"], 3, " s") + scaled,
                _f(r["speedup_pointrend"], 1, "x"),
                _f(r["pointrend_peak_mb_per_box"], 2),
                _f(r["dense_peak_mb_per_box"], 2),
                _g(r["pointrend_multiply_adds_per_box"]),
                _g(r["dense_multiply_adds_per_box"]),
                str(r["pointrend_point_predictions_per_box"]),
            ]
        )
    out += [
        _table(header, rows),
        "",
        f"Times: median of {cost['repeats']} rounds, the two branches alternated in each round. "
        "Memory: the peak of live intermediate tensors of one call on "
        f"{next(iter(sweep.values()))['memory_boxes']} boxes, per box (inputs and weights not "
        "counted).",
        "",
    ]
    if figures.get("cost"):
        out += [f"![cost against output resolution]({figures['cost']})", ""]
    e2e = cost.get("end_to_end")
    if e2e:
        out += [
            "### End to end, ResNet-50-FPN, one 800 x 1333 image, the same 100 boxes forced",
            "",
            f"torchvision Mask R-CNN {_f(e2e['torchvision_s'], 2, ' s')}, PointRend Mask R-CNN "
            f"{_f(e2e['pointrend_s'], 2, ' s')} (224x224 masks): ratio {_f(e2e['ratio'], 2)} "
            "(median, alternated).",
            "",
        ]
    return out


def _semantic_cost_md(semantic: dict, figures: dict) -> list[str]:
    h, w = semantic["image"]
    out = [
        f"### Semantic, full resolution ({h} x {w}, K = {semantic['num_classes']}, "
        f"{semantic['subdivision_num_points']} points a step)",
        "",
        _measured(semantic),
        "",
    ]
    names = {
        "upsampled": "stride-4 logits upsampled",
        "pointrend": f"PointRend ({semantic['subdivision_steps']} steps)",
        "dense_point_head": "point head at every pixel",
    }
    rows = [
        [
            names.get(k, k),
            _g(r["multiply_adds"]),
            _g(r["activations"]),
            _f(r["peak_mb"], 1),
            _f(r["time_s"], 3, " s"),
            _f(r["time_vs_pointrend"], 2, "x"),
        ]
        for k, r in semantic["rows"].items()
    ]
    out += [
        _table(
            [
                "full-resolution logits",
                "mult-adds",
                "activations",
                "peak MB",
                "time",
                "vs PointRend",
            ],
            rows,
        ),
        "",
        f"The Semantic FPN head that makes the stride-4 logits: "
        f"{_g(semantic['semantic_fpn_head_multiply_adds'])} multiply-adds. Interpolation and "
        "point sampling count 0 multiply-adds in `FlopCounterMode`; the dense head runs in bands "
        f"of {semantic['dense_rows_per_band']} rows. Times: median of {semantic['repeats']} "
        "alternated rounds.",
        "",
    ]
    if figures.get("semantic"):
        out += [f"![semantic cost]({figures['semantic']})", ""]
    if semantic.get("full_models"):
        out += _semantic_models_md(semantic["full_models"])
    return out


def _yes(flag: bool) -> str:
    return "met" if flag else "**not met**"


def _semantic_models_md(full: dict) -> list[str]:
    """The table of :mod:`pointrend.bench.semantic_models`: five full models, refinement alone."""
    h, w = full["image"]
    rows = full["rows"]
    table = [
        [
            r["label"],
            _f(r["time_s"], 3, " s"),
            _f(r.get("vs_coarse_model"), 2, "x") if "vs_coarse_model" in r else "",
            _f(r["peak_mb"], 1),
            _f(r["peak_vs_deeplab_os8"], 2, "x"),
            str(r["points_per_image"]),
            "n/a" if r["multiply_adds"] is None else _g(r["multiply_adds"]),
        ]
        for r in rows.values()
    ]
    share = 100 * full["max_refinement_share"]
    for ours, part in full["refinement"].items():
        met = full["targets"][ours]
        table.append(
            [
                f"{part['label']} alone",
                _f(part["time_s"], 3, " s"),
                f"{_f(100 * part['over_coarse_model'], 1, '%')} of coarse "
                f"(<= {share:.0f}%: {_yes(met['refinement_at_most_25pct_of_coarse'])})",
                _f(part["peak_mb"], 1),
                _f(part["peak_vs_deeplab_os8"], 2, "x"),
                str(part["points_per_image"]),
                "n/a" if part["multiply_adds"] is None else _g(part["multiply_adds"]),
            ]
        )
    header = ["model", "time", "vs coarse model", "peak MB", "peak vs OS-8", "points/image"]
    peaks = ", ".join(
        f"{rows[o]['label'][:3]} {_yes(t['peak_below_deeplab_os8'])}"
        for o, t in full["targets"].items()
    )
    return [
        f"### Full models at {h} x {w} (K = {full['num_classes']}, {full['backbone']}, "
        f"{full['subdivision_num_points']} points a step)",
        "",
        _table([*header, "mult-adds"], table),
        "",
        f"One random image, random weights, {full['threads']} thread(s); every row (the "
        f"refinements too) alternated in each of {full['repeats']} rounds, median. The coarse "
        "model of (b) / (d) is (a) / (c), upsampling included; the refinement is the PointRend "
        "model's subdivision on its precomputed coarse logits and fine features. Peak MB: live "
        "tensors allocated during one call (weights and the image not counted). Points/image: "
        f"the point head's inputs (the paper: about {full['paper_points_per_image'] // 1024}k "
        f"for 1024 x 2048). PointRend's peak memory below DeepLabV3-OS-8's: {peaks}.",
        "",
    ]


def _ap_rows(rows: dict, keys: list[str]) -> list[list[str]]:
    return [[name, *[_f(r.get(k)) for k in keys]] for name, r in rows.items()]


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


def _accuracy_md(acc: dict, figures: dict) -> list[str]:
    out = ["## 2. Instance accuracy at equal training budget", "", _measured(acc), ""]
    inst = acc.get("instance")
    keys = ["mask_AP", "mask_AP50", "mask_AP75", "boundary_AP", "boundary_AP75", "box_AP"]
    if inst:
        rows = inst["rows"]
        out += [
            f"{inst['val_images']} fresh synthetic images of {inst['image_size']} px "
            f"(seed {inst['val_seed']}). {_models_line(inst['models'])} Both PointRend rows are "
            "the same weights rendered at two resolutions.",
            "",
            _table(["model", *keys], _ap_rows(rows, keys)),
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
    return out


def _semantic_md(acc: dict) -> list[str]:
    out = []
    sem = acc.get("semantic")
    if sem:
        rows = sem["rows"]
        out += [
            "## 4. Semantic at equal training budget",
            "",
            _measured(acc),
            "",
            f"{sem['val_images']} fresh synthetic images of {sem['image_size']} px; coarse "
            f"logits at stride {sem.get('coarse_stride', '?')}. {_models_line(sem['models'])}",
            "",
            _table(
                ["model", "mIoU", "boundary F", "boundary IoU"],
                _ap_rows(rows, ["mIoU", "boundary_F", "boundary_IoU"]),
            ),
            "",
        ]
        names = list(rows)
        if len(names) == 2:
            keys = ["mIoU", "boundary_F", "boundary_IoU"]
            out += ["- " + _delta_sentence(rows, names[1], names[0], keys), ""]
    return out


def _ablation_md(abl: dict, figures: dict) -> list[str]:
    out = ["## 3. Ablations", ""]
    inf = abl.get("inference")
    if inf:
        t = inf["timing"]
        out += [
            "### Inference settings, same weights",
            "",
            _measured(inf),
            "",
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
                *[_f(r[k]) for k in keys],
                _f(r["render_ms_per_box"], 2),
                str(r["point_predictions_per_box"]),
                _g(r["multiply_adds_per_box"]),
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
        out += [_table(header, rows), ""]
        if figures.get("inference"):
            out += [f"![inference ablation]({figures['inference']})", ""]
    tr = abl.get("training")
    if tr:
        keys = ["mask_AP", "mask_AP75", "boundary_AP", "box_AP"]
        out += [
            "### Training point selection",
            "",
            _measured(tr),
            "",
            f"Each variant trained here from the PointRend CPU recipe for {tr['train_iters']} "
            f"iterations ({_schedule(tr.get('schedule'))}), the same seed and data order; "
            f"evaluated at 224x224 on {tr['val_images']} validation images. The paper: uniform "
            "and the regular grid are worse than mildly biased; heavily biased is much worse.",
            "",
            _table(
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


def render_markdown(results: dict, figures: dict) -> str:
    m, s = results["machine"], results["settings"]
    sections = results["sections"]
    out = [
        "# PointRend benchmarks: the paper's claims measured here",
        "",
        "Written by `pointrend bench` (regenerate with `make bench`; `pointrend bench --quick` "
        "for a minutes-long check). Raw figures: `results.json`.",
        "",
        f"Machine: {m['cpu']}, {m['logical_cpus']} logical CPUs, torch {m['torch']} with "
        f"{m['torch_threads']} thread(s), torchvision {m['torchvision']}, Python {m['python']}, "
        f"{m['platform']}.",
        "",
    ]
    if s["quick"]:
        out += [
            "**Quick mode**: tiny sizes and models trained for a few iterations. These figures "
            "prove the pipeline works; they say nothing about the paper's claims.",
            "",
        ]
    out += summary_md(sections)
    if "cost" in sections:
        out += _cost_md(sections["cost"], figures)
    if "semantic" in sections:
        out += _semantic_cost_md(sections["semantic"], figures)
    if "accuracy" in sections:
        out += _accuracy_md(sections["accuracy"], figures)
    if "ablation" in sections:
        out += _ablation_md(sections["ablation"], figures)
    if "accuracy" in sections:
        out += _semantic_md(sections["accuracy"])
    return "\n".join(out).rstrip() + "\n"
