"""``python -m benchmarks``: the report pipeline end to end (``--quick``) and its meters. The
figures are checked for their keys, shapes and ranges only: no timing is compared."""

from __future__ import annotations

import copy
import json
import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from benchmarks import run
from benchmarks.accuracy import FACTORS, ROWS
from benchmarks.common import PeakMemory, store_section
from benchmarks.learning import boundary_iou, star_images, star_mask
from benchmarks.run import main
from benchmarks.semantic import dense_point_head, semantic_renderer


def _finite(value) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    return not isinstance(value, float) or math.isfinite(value)


def test_quick_bench_writes_report_json_and_plot(quick_bench):
    out, results = quick_bench
    assert (out / "accuracy_by_resolution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "REPORT.md").read_text()
    for heading in ("## Instance mask branch", "## Semantic cost", "## Accuracy", "## Ablations"):
        assert heading in report
    assert "Quick mode" in report and "(accuracy_by_resolution.png)" in report
    sections = results["sections"]
    assert set(sections) == {"cost", "semantic", "accuracy", "ablation", "learning"}
    for part in [*sections.values(), *sections["ablation"].values()]:
        assert part.get("measured", {"machine": {"torch": torch.__version__}})["machine"]["torch"]
    assert _finite(sections["cost"]["per_box"]) and _finite(sections["semantic"]["rows"])


def test_quick_bench_figures(quick_bench):
    _, results = quick_bench
    s = results["sections"]
    sweep = s["cost"]["sweep"]
    assert list(sweep) == ["28", "56", "112"]
    assert [r["pointrend_point_predictions_per_box"] for r in sweep.values()] == [784, 1568, 2352]
    assert all(r["pointrend_s"] > 0 and r["dense_peak_mb_per_box"] > 0 for r in sweep.values())
    rows = s["semantic"]["rows"]
    assert rows["upsampled"]["multiply_adds"] == 0 < rows["pointrend"]["multiply_adds"]
    full = s["semantic"]["full_models"]
    assert (full["image"], full["backbone"]) == ([64, 96], "resnet18") and len(full["rows"]) == 5
    assert (
        set(full["refinement"])
        == set(full["targets"])
        == {"fpn_pointrend", "deeplab_os16_pointrend"}
    )
    instance = s["accuracy"]["instance"]
    assert all(
        m["trained_in_this_run"] and m["iteration"] == 2 for m in instance["models"].values()
    )
    for row in instance["rows"].values():
        assert all(0 <= row[k] <= 100 for k in ("mask_AP", "mask_AP75", "boundary_AP", "box_AP"))
    table = results["accuracy_by_resolution"]
    assert list(table) == [str(instance["image_size"] * f) for f in FACTORS]
    assert all(list(rows) == ROWS for rows in table.values())
    inference = s["ablation"]["inference"]["rows"]
    assert [r["point_predictions_per_box"] for r in inference.values()] == [784, 3136, 980, 9408]
    assert len(s["ablation"]["training"]["rows"]) == 4
    learning = s["learning"]["rows"]
    assert set(learning) == {"PointRend", "Mask R-CNN 4x conv"}
    assert all(0 <= r["boundary_iou"] <= 1 and 0 <= r["mask_iou"] <= 1 for r in learning.values())


def test_one_section_is_measured_again_and_the_others_kept(quick_bench, tmp_path, monkeypatch):
    source, before = quick_bench
    out = tmp_path / "out"
    shutil.copytree(source, out)
    figures = copy.deepcopy(before["sections"]["semantic"])
    figures["rows"]["pointrend"]["time_s"] = 12.345
    runners = {k: lambda *args, k=k: pytest.fail(f"{k} ran") for k in run.RUNNERS}
    monkeypatch.setattr(run, "RUNNERS", runners | {"semantic": lambda *args: figures})
    store_section(out / "results.json", "frozen_norm_speed", {"kept": 1})
    assert main(["--quick", "--out", str(out), "--sections", "semantic"]) == 0
    after = json.loads((out / "results.json").read_text())
    for name in ("cost", "accuracy", "ablation", "learning"):
        assert after["sections"][name] == before["sections"][name]
    assert after["sections"]["semantic"]["rows"]["pointrend"]["time_s"] == 12.345
    assert after["frozen_norm_speed"] == {"kept": 1}
    assert "| pointrend | " in (out / "REPORT.md").read_text()


def test_section_names_and_an_unknown_one(tmp_path, capsys):
    assert run._parts(["ablation"]) == ["ablation.inference", "ablation.training"]
    assert run._parts(["ablation.training", "cost"]) == ["cost", "ablation.training"]
    assert main(["--quick", "--out", str(tmp_path), "--sections", "cost,speed"]) == 1
    assert "speed" in capsys.readouterr().err


def test_a_quick_run_never_replaces_the_stored_figures(monkeypatch):
    asked = []
    monkeypatch.setattr(run, "run_bench", lambda args, parts, command: asked.append(args.out))
    assert main(["--quick", "--sections", "cost"]) == 0 and main([]) == 0
    assert asked == ["outputs/bench-quick", "benchmarks/results"]


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
        torch.testing.assert_close(banded, every.render(fine, coarse))


def test_boundary_iou_needs_the_contour_and_stars_match_their_boxes():
    gt = star_mask(64, 64, 40, 20, 5, 0.0, 128)[None]
    assert boundary_iou(gt, gt, 4).tolist() == [1.0]
    blurred = F.avg_pool2d(gt.float()[None], 9, 1, 4)[0] >= 0.5  # rounded spikes
    assert boundary_iou(blurred, gt, 4).item() < 0.9
    assert ((blurred & gt).sum() / (blurred | gt).sum()) > 0.9  # mask IoU barely notices
    images, targets = star_images(64)
    assert len(images) == 4 and images[0].shape == (3, 64, 64)
    for t in targets:
        masks = t["masks"].bool()
        assert not (masks[0] & masks[1]).any()  # the second star is cut by the first
        first = torch.stack([masks.any(1).float().argmax(1), masks.any(2).float().argmax(1)], 1)
        torch.testing.assert_close(t["boxes"][:, :2], first.float())
