"""`python -m benchmarks`: the report pipeline end to end (--quick), its measuring tools, and the
training point-selection options the ablation needs."""

from __future__ import annotations

import copy
import functools
import json
import shutil
from pathlib import Path

import pytest
import torch

from benchmarks import plots, run
from benchmarks.__main__ import main
from benchmarks.meters import PeakMemory
from benchmarks.resolution import FACTORS, ROWS
from benchmarks.run import _parts
from benchmarks.semantic_cost import dense_point_head, semantic_renderer
from pointrend.engine import load_config
from pointrend.engine.build import build_model
from pointrend.instance import PointRendMaskBranch, PointRendMaskConfig
from pointrend.models import maskrcnn, pointrend_maskrcnn
from pointrend.points import generate_regular_grid_point_coords
from pointrend.settings import replace_options

PNGS = [
    "cost_vs_resolution.png",
    "semantic_cost.png",
    "accuracy.png",
    "accuracy_by_resolution.png",
    "inference_ablation.png",
    "training_ablation.png",
]


@pytest.fixture
def bench(quick_bench):
    return quick_bench


def test_quick_bench_writes_report_json_and_plots(bench):
    out, results = bench
    for name in PNGS:
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, name
    report = (out / "REPORT.md").read_text()
    headings = ("## 1. Cost", "## 2. Instance", "## 3. Ablations", "## 4. Semantic", "## 5. ")
    for heading in headings:
        assert heading in report
    for name in PNGS:
        assert f"({name})" in report
    assert results["machine"]["cpu"] in report and "Quick mode" in report
    assert results["settings"]["quick"] is True
    assert set(results["sections"]) == {"cost", "semantic", "accuracy", "ablation", "learning"}
    parts = dict(results["sections"])
    parts.update(parts.pop("ablation"))  # measured in two parts: inference, training
    for part in parts.values():
        assert part["measured"]["machine"]["torch"] == torch.__version__


def _increasing(values):
    return all(b > a for a, b in zip(values, values[1:]))


def test_instance_cost_figures_are_measurements(bench):
    _, results = bench
    cost = results["sections"]["cost"]
    table = cost["per_box"]
    # the counts are the paper's (shapes, not timing): within 10% of its table
    assert table["4x conv 224"]["multiply_adds_per_box"] == pytest.approx(34e9, rel=0.1)
    assert table["PointRend 224"]["multiply_adds_per_box"] == pytest.approx(0.9e9, rel=0.1)
    sweep = [cost["sweep"][s] for s in sorted(cost["sweep"], key=int)]
    assert len(sweep) >= 3
    for key in (
        "dense_multiply_adds_per_box",
        "pointrend_multiply_adds_per_box",
        "pointrend_point_predictions_per_box",
        "dense_peak_mb_per_box",
    ):
        assert _increasing([row[key] for row in sweep]), key
    assert sweep[-1]["dense_4xconv_s"] > sweep[0]["dense_4xconv_s"]
    assert sweep[-1]["speedup_pointrend"] > sweep[0]["speedup_pointrend"]
    for row in sweep:
        assert len(row["pointrend_samples_s"]) == cost["repeats"]
        assert row["pointrend_s"] in row["pointrend_samples_s"]  # the median of odd repeats


def test_semantic_cost_figures_are_measurements(bench):
    _, results = bench
    rows = results["sections"]["semantic"]["rows"]
    up, ours, dense = rows["upsampled"], rows["pointrend"], rows["dense_point_head"]
    assert up["multiply_adds"] == 0 < ours["multiply_adds"] < dense["multiply_adds"]
    assert up["peak_mb"] < dense["peak_mb"]
    assert dense["time_s"] > ours["time_s"]
    assert ours["time_vs_pointrend"] == 1.0


def test_semantic_full_models_in_results_and_report(bench):
    out, results = bench
    full = results["sections"]["semantic"]["full_models"]
    assert full["image"] == [64, 96] and full["backbone"] == "resnet18"
    assert len(full["rows"]) == 5 and set(full["refinement"]) == set(full["targets"])
    assert all(row["time_s"] > 0 and row["peak_mb"] > 0 for row in full["rows"].values())
    assert "### Full models at 64 x 96" in (out / "REPORT.md").read_text()


def _scores(row, keys=("mask_AP", "mask_AP75", "boundary_AP", "box_AP")):
    return [row[k] for k in keys]


def test_accuracy_figures_come_from_evaluation(bench):
    _, results = bench
    acc = results["sections"]["accuracy"]
    instance, semantic = acc["instance"], acc["semantic"]
    for model in (*instance["models"].values(), *semantic["models"].values()):
        assert model["trained_in_this_run"] and model["iteration"] == 2
    assert instance["val_images"] == 2
    for name, row in instance["rows"].items():
        assert all(0 <= v <= 100 for v in _scores(row)), name
    # the oracle (ground truth resampled in its box) is scored by the same evaluator
    oracle = instance["rows"]["oracle: ground truth at 224x224"]
    assert oracle["mask_AP"] > 50 and oracle["boundary_AP"] > 50
    for row in semantic["rows"].values():
        assert 0 <= row["mIoU"] <= 100 and 0 <= row["boundary_F"] <= 100
        assert row["images"] == 2


def test_accuracy_by_resolution_table(bench):
    """The same predictions scored at 1x, 2x, 4x the input size against exact ground truth."""
    out, results = bench
    instance = results["sections"]["accuracy"]["instance"]
    base = instance["image_size"]
    table = results["accuracy_by_resolution"]
    assert list(table) == [str(base * f) for f in FACTORS]
    for rows in table.values():
        assert list(rows) == ROWS
        for row in rows.values():
            assert set(row) == {"mask_ap", "ap75", "boundary_ap"}
            assert all(0 <= v <= 100 for v in row.values())
    # at the input size the rows are the section's own: the same predictions, the same scorer
    same = table[str(base)]
    assert same["pointrend28"]["boundary_ap"] == instance["rows"]["PointRend, 28x28"]["boundary_AP"]
    assert same["maskrcnn"]["mask_ap"] == instance["rows"]["Mask R-CNN 4x conv, 28x28"]["mask_AP"]
    assert (
        same["oracle28"]["ap75"] == instance["rows"]["oracle: ground truth at 28x28"]["mask_AP75"]
    )
    # a 28x28 mask holds less of the boundary of objects 4x larger: its ceiling drops
    largest = table[str(base * FACTORS[-1])]
    assert largest["oracle28"]["boundary_ap"] < same["oracle28"]["boundary_ap"]
    assert largest["oracle224"]["boundary_ap"] > largest["oracle28"]["boundary_ap"]
    section = instance["by_resolution"]
    assert len(section["rows"][str(base)]["maskrcnn"]["folds"]) == instance["folds"]
    assert "### Accuracy by evaluation resolution" in (out / "REPORT.md").read_text()


def test_ablation_figures_vary_with_the_setting(bench):
    _, results = bench
    inference = results["sections"]["ablation"]["inference"]
    rows = inference["rows"]
    by_points = [rows[n] for n in inference["points_per_step"]]
    by_size = [rows[n] for n in inference["output_sizes"]]
    for series in (by_points, by_size):
        assert _increasing([r["point_predictions_per_box"] for r in series])
        assert _increasing([r["multiply_adds_per_box"] for r in series])
    # more points per step cost more time (14^2 vs 56^2 points: ~10x the point predictions)
    assert by_points[-1]["render_ms_per_box"] > by_points[0]["render_ms_per_box"]
    assert by_size[-1]["render_ms_per_box"] > by_size[0]["render_ms_per_box"]
    for row in rows.values():
        assert all(0 <= v <= 100 for v in _scores(row))
    training = results["sections"]["ablation"]["training"]
    assert len(training["rows"]) == 4
    for row in training["rows"].values():
        assert row["iteration"] == 2 and all(0 <= v <= 100 for v in _scores(row))
    grid = training["rows"]["regular grid"]["options"]
    assert grid == {"train_point_sampling": "grid"}


def _not_asked_for(name, *args):
    raise AssertionError(f"{name} ran, but its section was not asked for")


def test_one_section_is_measured_again_and_the_others_kept(bench, tmp_path, monkeypatch):
    """``--sections semantic`` runs that section alone (here a stand-in returning known figures)
    and rewrites the report from it and the figures the others kept."""
    source, before = bench
    out = tmp_path / "out"
    shutil.copytree(source, out)
    first = before["sections"]["semantic"]
    figures = copy.deepcopy({k: v for k, v in first.items() if k != "measured"})
    figures["rows"]["pointrend"]["time_s"] = 12.345
    calls = []
    monkeypatch.setattr(run, "_semantic_cost", lambda sizes: calls.append(sizes) or figures)
    for name in plots.__all__:  # drawn in the test of the whole run
        monkeypatch.setattr(plots, name, lambda part, out: None)
    for name in ("_cost", "_accuracy", "_inference_ablation", "_training_ablation", "_learning"):
        monkeypatch.setattr(run, name, functools.partial(_not_asked_for, name))
    assert main(["--quick", "--out", str(out), "--sections", "semantic"]) == 0
    after = json.loads((out / "results.json").read_text())
    assert len(calls) == 1
    for name in ("cost", "accuracy", "ablation", "learning"):
        assert after["sections"][name] == before["sections"][name]
    again = after["sections"]["semantic"]
    assert again["measured"]["at"] >= first["measured"]["at"]
    assert again["rows"]["pointrend"]["time_s"] == 12.345
    report = (out / "REPORT.md").read_text()
    assert "12.345 s" in report and "## 3. Ablations" in report


def test_bench_section_names():
    assert _parts(["ablation"]) == ["ablation.inference", "ablation.training"]
    assert _parts(["ablation.training", "cost"]) == ["cost", "ablation.training"]


def test_bench_rejects_an_unknown_section(tmp_path, capsys):
    assert main(["--quick", "--out", str(tmp_path), "--sections", "cost,speed"]) == 1
    assert "speed" in capsys.readouterr().err


# ---- measuring tools ---------------------------------------------------------------------


def test_peak_memory_counts_live_intermediates_only():
    weight = torch.randn(256, 256)  # allocated before: not counted, nor its views
    meter = PeakMemory()
    with meter:
        a = torch.randn(256, 256)
        b = a @ weight.t()
        c = torch.relu(b)
        del a, b
        d = c * 2
        d.add_(1)
    one = 256 * 256 * 4
    assert meter.peak == 3 * one  # a, b, c alive together; d came after a and b were freed
    assert meter.current == 2 * one  # c and d


def test_semantic_dense_head_equals_rendering_every_pixel():
    torch.manual_seed(0)
    fine, coarse = torch.randn(1, 256, 6, 10), torch.randn(1, 5, 6, 10)
    every = semantic_renderer(5, num_points=24 * 40)  # the shortcut predicts every pixel
    with torch.no_grad():
        banded = dense_point_head(every, fine, coarse, rows_per_band=7)
        rendered = every.render(fine, coarse)
    assert banded.shape == (1, 5, 24, 40)
    torch.testing.assert_close(banded, rendered)


# ---- training point selection (the ablation's options) -------------------------------------


def test_grid_training_points_are_the_regular_grid():
    branch = PointRendMaskBranch(
        8, 3, replace_options(PointRendMaskConfig(), train_point_sampling="grid")
    )
    points = branch.training_points(torch.randn(5, 1, 7, 7))
    torch.testing.assert_close(points, generate_regular_grid_point_coords(5, 14))


@pytest.mark.parametrize(
    "field, value",
    [
        ("train_point_sampling", "random"),
        ("oversample_ratio", 0.5),
        ("importance_sample_ratio", 1.5),
    ],
)
def test_mask_config_refuses_bad_training_options(field, value):
    with pytest.raises(ValueError, match=field):
        replace_options(PointRendMaskConfig(), **{field: value})


def test_builder_and_yaml_set_the_training_point_options():
    model = pointrend_maskrcnn(
        "resnet18",
        3,
        box_head_dim=32,
        train_point_sampling="grid",
        oversample_ratio=1,
        importance_sample_ratio=0.0,
        train_num_points=64,
    )
    config = model.roi_heads.mask_branch.config.pointrend
    assert (config.train_point_sampling, config.oversample_ratio) == ("grid", 1)
    assert (config.importance_sample_ratio, config.train_num_points) == (0.0, 64)
    with pytest.raises(ValueError, match="oversample_ratio"):
        maskrcnn("resnet18", 3, box_head_dim=32, oversample_ratio=1)

    cfg = load_config(
        Path(__file__).parents[2] / "configs" / "synthetic_instance_pointrend_r18.yaml",
        [
            "model.options.oversample_ratio=10",
            "model.options.importance_sample_ratio=1.0",
        ],
    )
    config = build_model(cfg.model, 8).roi_heads.mask_branch.config.pointrend
    assert config.oversample_ratio == 10 and config.importance_sample_ratio == 1.0
    assert config.train_point_sampling == "uncertain"


def test_a_quick_run_never_replaces_the_stored_figures(monkeypatch):
    import benchmarks.__main__ as cli

    asked = []
    monkeypatch.setattr(cli, "run_bench", asked.append)
    assert cli.main(["--quick", "--sections", "cost"]) == 0 and cli.main([]) == 0
    assert [o.out for o in asked] == [Path("outputs/bench-quick"), Path("benchmarks/results")]
    assert (
        asked[0].command
        == "python -m benchmarks --quick --sections cost --out outputs/bench-quick --threads 1"
    )


def test_the_bench_keeps_the_figures_stand_alone_modules_wrote(tmp_path):
    from benchmarks.run import standalone_results

    path = tmp_path / "results.json"
    kept = {"per_box_resolution": {"peak_mb": {"box": 1.5}}, "per_box_scale": {"mask_s": {}}}
    path.write_text(json.dumps({"sections": {}, **kept}))
    assert standalone_results(path) == kept
    assert standalone_results(tmp_path / "missing.json") == {}


def test_the_bench_removes_its_temporary_work_dir(monkeypatch, tmp_path):
    seen = []

    def accuracy(source, sizes):
        (source.work_dir / "model.pt").write_bytes(b"x")
        seen.append(source.work_dir)
        return {}

    monkeypatch.setattr(run, "_accuracy", accuracy)
    monkeypatch.setattr(run, "_merge_and_write", lambda out, options, sizes, measured: measured)
    measured = run.run_bench(run.BenchOptions(sections=("accuracy",), out=tmp_path, quick=True))
    assert set(measured) == {"accuracy"} and len(seen) == 1
    assert not seen[0].exists()

    kept = tmp_path / "work"
    kept.mkdir()
    options = run.BenchOptions(sections=("accuracy",), out=tmp_path, quick=True, work_dir=kept)
    run.run_bench(options)
    assert (kept / "model.pt").exists()
