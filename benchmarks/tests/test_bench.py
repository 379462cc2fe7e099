"""``python -m benchmarks``: the report pipeline end to end (``--quick``) and its memory meter.
The figures are checked for their keys, shapes and ranges only: no timing is compared."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch

from benchmarks import run
from benchmarks.accuracy import FACTORS, ROWS
from benchmarks.common import PeakMemory, store_section
from benchmarks.run import main


def _finite(value) -> bool:
    if isinstance(value, dict | list):
        return all(_finite(v) for v in (value.values() if isinstance(value, dict) else value))
    return not isinstance(value, float) or math.isfinite(value)


def test_quick_bench_then_one_section_again(tmp_path, monkeypatch):
    """The whole pipeline at tiny sizes, every model trained here (no weights in the weights
    folder); then one section measured again: the others' figures and other keys are kept."""
    (tmp_path / "none").mkdir()
    out = tmp_path / "out"
    argv = ["--quick", "--out", str(out), "--weights-dir", str(tmp_path / "none")]
    assert main([*argv, "--work-dir", str(tmp_path / "work")]) == 0
    results = json.loads((out / "results.json").read_text())
    assert (out / "accuracy_by_resolution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (out / "REPORT.md").read_text()
    for heading in ("## Instance mask branch", "## Semantic cost", "## Accuracy", "## Ablations"):
        assert heading in report
    assert "Quick mode" in report and "(accuracy_by_resolution.png)" in report
    s = results["sections"]
    assert set(s) == {"cost", "semantic", "accuracy", "ablation"} and _finite(s)
    parts = [s["cost"], s["semantic"], s["accuracy"], s["ablation"]["training"]]
    assert all(part["measured"]["machine"]["torch"] == torch.__version__ for part in parts)
    assert list(s["cost"]["sweep"]) == ["28", "56", "112"]
    assert set(s["cost"]["per_box"]) == {"4x conv 28", "4x conv 224", "PointRend 224"}
    full = s["semantic"]["full_models"]
    assert (full["image"], full["backbone"]) == ([64, 96], "resnet18") and len(full["rows"]) == 5
    assert set(full["refinement"]) == {"fpn_pointrend", "deeplab_os16_pointrend"}
    assert full["rows"]["fpn_pointrend"]["points_per_image"] > 0
    instance = s["accuracy"]["instance"]
    assert all(m["trained_in_this_run"] for m in instance["models"].values())
    for row in instance["rows"].values():
        assert all(0 <= row[k] <= 100 for k in ("mask_AP", "mask_AP75", "boundary_AP", "box_AP"))
    by_size = instance["by_resolution"]["rows"]
    assert list(by_size) == [str(instance["image_size"] * f) for f in FACTORS]
    assert all(list(rows) == ROWS for rows in by_size.values())
    assert len(s["ablation"]["training"]["rows"]) == 4

    figures = copy.deepcopy(s["semantic"])
    figures["full_models"]["rows"]["fpn"]["time_s"] = 12.345
    runners = {k: lambda *args, k=k: pytest.fail(f"{k} ran") for k in run.RUNNERS}
    monkeypatch.setattr(run, "RUNNERS", runners | {"semantic": lambda *args: figures})
    store_section(out / "results.json", "frozen_norm_speed", {"kept": 1})
    assert main(["--quick", "--out", str(out), "--sections", "semantic"]) == 0
    after = json.loads((out / "results.json").read_text())
    assert all(after["sections"][k] == s[k] for k in ("cost", "accuracy", "ablation"))
    assert after["sections"]["semantic"]["full_models"]["rows"]["fpn"]["time_s"] == 12.345
    assert after["frozen_norm_speed"] == {"kept": 1}
    assert "| 12.3 |" in (out / "REPORT.md").read_text()


def test_section_names_and_an_unknown_one(tmp_path, capsys):
    assert run._parts(["ablation"]) == ["ablation.training"]
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
