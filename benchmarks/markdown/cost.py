"""The report's cost sections: instance mask branch (section 1), semantic refinement and full
semantic models."""

from __future__ import annotations

from .cells import count, measured, met, number, table

__all__ = ["cost_md", "semantic_cost_md", "semantic_models_md"]


def _per_box_md(per_box: dict) -> list[str]:
    """The paper's cost table: multiply-adds and activations per box of the three heads."""
    rows = []
    for name, r in per_box.items():
        head, size = name.rsplit(" ", 1)
        peak = count(r["activations_peak_per_box"])
        with_inputs = count(r["activations_peak_with_sampled_inputs_per_box"])
        rows.append(
            [
                head,
                f"{size}x{size}",
                count(r["multiply_adds_per_box"]),
                count(r["paper_multiply_adds"]),
                f"{peak} / {with_inputs}",
                count(r["paper_activations"]),
            ]
        )
    header = ["head", "output", "multiply-adds", "paper", "activations (peak / +inputs)", "paper"]
    return [
        "### Mask head per box (K = 80, the paper's table)",
        "",
        table(header, rows),
        "",
        "Multiply-adds: `FlopCounterMode` / 2. Activations: elements written by the heads' conv "
        "and linear layers (PointRend: its largest step; +inputs adds the sampled features).",
        "",
    ]


def _sweep_md(cost: dict) -> list[str]:
    """Time, memory, multiply-adds and points per box of both branches at every output size."""
    sweep = cost["sweep"]
    h, w = cost["image"]
    header = ["output", "PointRend", "dense 4x conv", "dense / PointRend", "MB/box PR"]
    header += ["MB/box dense", "mult-adds/box PR", "mult-adds/box dense", "points/box PR"]
    rows = []
    for size, r in sweep.items():
        n = r["dense_timed_on_boxes"]
        scaled = "" if n == cost["boxes"] else f" (on {n}, scaled)"
        rows.append(
            [
                f"{size}x{size}",
                number(r["pointrend_s"], 3, " s"),
                number(r["dense_4xconv_s"], 3, " s") + scaled,
                number(r["speedup_pointrend"], 1, "x"),
                number(r["pointrend_peak_mb_per_box"], 2),
                number(r["dense_peak_mb_per_box"], 2),
                count(r["pointrend_multiply_adds_per_box"]),
                count(r["dense_multiply_adds_per_box"]),
                str(r["pointrend_point_predictions_per_box"]),
            ]
        )
    return [
        f"### Against output resolution ({cost['boxes']} boxes of a {h} x {w} image)",
        "",
        table(header, rows),
        "",
        f"Times: median of {cost['repeats']} rounds, the two branches alternated in each round. "
        "Memory: the peak of live intermediate tensors of one call on "
        f"{next(iter(sweep.values()))['memory_boxes']} boxes, per box (inputs and weights not "
        "counted).",
        "",
    ]


def cost_md(cost: dict, figures: dict) -> list[str]:
    """Section 1: the instance mask branch's cost per box, against resolution, end to end."""
    out = ["## 1. Cost", "", measured(cost), "", *_per_box_md(cost["per_box"]), *_sweep_md(cost)]
    if figures.get("cost"):
        out += [f"![cost against output resolution]({figures['cost']})", ""]
    e2e = cost.get("end_to_end")
    if e2e:
        out += [
            "### End to end, ResNet-50-FPN, one 800 x 1333 image, the same 100 boxes forced",
            "",
            f"torchvision Mask R-CNN {number(e2e['torchvision_s'], 2, ' s')}, PointRend Mask "
            f"R-CNN {number(e2e['pointrend_s'], 2, ' s')} (224x224 masks): ratio "
            f"{number(e2e['ratio'], 2)} (median, alternated).",
            "",
        ]
    return out


def semantic_cost_md(semantic: dict, figures: dict) -> list[str]:
    """The semantic refinement at full resolution vs upsampling and a dense point head."""
    h, w = semantic["image"]
    out = [
        f"### Semantic, full resolution ({h} x {w}, K = {semantic['num_classes']}, "
        f"{semantic['subdivision_num_points']} points a step)",
        "",
        measured(semantic),
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
            count(r["multiply_adds"]),
            count(r["activations"]),
            number(r["peak_mb"], 1),
            number(r["time_s"], 3, " s"),
            number(r["time_vs_pointrend"], 2, "x"),
        ]
        for k, r in semantic["rows"].items()
    ]
    out += [
        table(
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
        f"{count(semantic['semantic_fpn_head_multiply_adds'])} multiply-adds. Interpolation and "
        "point sampling count 0 multiply-adds in `FlopCounterMode`; the dense head runs in bands "
        f"of {semantic['dense_rows_per_band']} rows. Times: median of {semantic['repeats']} "
        "alternated rounds.",
        "",
    ]
    if figures.get("semantic"):
        out += [f"![semantic cost]({figures['semantic']})", ""]
    if semantic.get("full_models"):
        out += semantic_models_md(semantic["full_models"])
    return out


def semantic_models_md(full: dict) -> list[str]:
    """The table of :mod:`benchmarks.semantic_models`: five full models, refinement alone."""
    h, w = full["image"]
    rows = full["rows"]
    cells = [
        [
            r["label"],
            number(r["time_s"], 3, " s"),
            number(r.get("vs_coarse_model"), 2, "x") if "vs_coarse_model" in r else "",
            number(r["peak_mb"], 1),
            number(r["peak_vs_deeplab_os8"], 2, "x"),
            str(r["points_per_image"]),
            "n/a" if r["multiply_adds"] is None else count(r["multiply_adds"]),
        ]
        for r in rows.values()
    ]
    share = 100 * full["max_refinement_share"]
    for ours, part in full["refinement"].items():
        targets = full["targets"][ours]
        cells.append(
            [
                f"{part['label']} alone",
                number(part["time_s"], 3, " s"),
                f"{number(100 * part['over_coarse_model'], 1, '%')} of coarse "
                f"(<= {share:.0f}%: {met(targets['refinement_at_most_25pct_of_coarse'])})",
                number(part["peak_mb"], 1),
                number(part["peak_vs_deeplab_os8"], 2, "x"),
                str(part["points_per_image"]),
                "n/a" if part["multiply_adds"] is None else count(part["multiply_adds"]),
            ]
        )
    header = ["model", "time", "vs coarse model", "peak MB", "peak vs OS-8", "points/image"]
    peaks = ", ".join(
        f"{rows[o]['label'][:3]} {met(t['peak_below_deeplab_os8'])}"
        for o, t in full["targets"].items()
    )
    return [
        f"### Full models at {h} x {w} (K = {full['num_classes']}, {full['backbone']}, "
        f"{full['subdivision_num_points']} points a step)",
        "",
        table([*header, "mult-adds"], cells),
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
