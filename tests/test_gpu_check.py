"""The GPU check runs on the CPU at small sizes, so that it cannot rot between GPU sessions."""

import json

from benchmarks.gpu_check import main


def test_the_gpu_check_runs_on_the_cpu_and_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "gpu.json"
    assert main(["--device", "cpu", "--quick", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["command"].startswith("python -m benchmarks.gpu_check --device cpu --quick")
    assert result["device"] == "cpu" and result["machine"]["torch"]
    assert all(result["checks"].values()) and len(result["checks"]) == 6
    parity = result["parity"]["detectron2_fixture"]["images"]
    assert len(parity) == 3 and all(r["count"] == r["other_count"] for r in parity)
    speed = result["speed"]["instance"]
    for name in ("pointrend_fixed", "pointrend_box", "torchvision_maskrcnn"):
        for precision in ("fp32", "amp"):
            row = speed[f"{name}_{precision}"]
            assert row["seconds"] > 0 and row["detections"] == 10
    assert speed["pointrend_box_amp"]["vs_torchvision"] > 0
    assert set(result["speed"]["semantic"]) == {
        f"pointrend_{m}_{p}" for m in ("semantic_fpn", "deeplabv3") for p in ("fp32", "amp")
    }
    assert result["speed"]["host_reads_per_forward"] > 0
    assert result["train_amp"]["precision"] == "bf16" and result["train_amp"]["iterations"] == 2
    assert result["torchrun"]["backend"] == "gloo" and result["torchrun"]["checkpoint_written"]
    assert "all checks passed" in capsys.readouterr().out
