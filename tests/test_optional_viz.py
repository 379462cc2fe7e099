"""matplotlib is imported only to draw: the core, the models and the commands that draw nothing
work without it (an environment that removed it); drawing says what to install. The benchmarks
are not in the package."""

import importlib.util
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from pointrend import viz

WITHOUT_MATPLOTLIB = textwrap.dedent(
    """
    import sys
    sys.modules["matplotlib"] = None  # any import of matplotlib now raises ImportError
    import torch
    import pointrend
    from pointrend.cli import main
    from pointrend.models import pointrend_maskrcnn

    model = pointrend_maskrcnn("resnet18", 3, box_head_dim=32, min_size=64, max_size=64).eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])
    assert set(out[0]) >= {"boxes", "masks"}
    args = ["data", "synth", "--task", "semantic", "--num-images", "1", "--size", "32"]
    assert main([*args, "--out", sys.argv[1]]) == 0
    import numpy as np
    from pointrend import viz
    try:
        viz.plot_panels([[np.zeros((4, 4, 3), np.uint8)]], ["x"], sys.argv[1] + "/x.png")
    except ImportError as err:
        print("ImportError:", err)
    print("matplotlib loaded:", "matplotlib.pyplot" in sys.modules)
    """
)


def test_core_models_and_commands_work_without_matplotlib(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_MATPLOTLIB, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "needs matplotlib: pip install matplotlib" in done.stdout
    assert "matplotlib loaded: False" in done.stdout
    assert any(tmp_path.iterdir())  # the synthetic dataset was written


def test_a_demo_without_matplotlib_is_one_line(monkeypatch, tmp_path, capsys):
    from pointrend.cli import main

    monkeypatch.setitem(sys.modules, "matplotlib", None)
    args = ["demo", "--out", str(tmp_path), "--instance-images", "1", "--semantic-images", "1"]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err == "pointrend demo: error: drawing figures needs matplotlib: pip install matplotlib"


def test_drawing_without_matplotlib_names_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match=r"needs matplotlib: pip install matplotlib"):
        viz.plot_panels([[np.zeros((4, 4, 3), np.uint8)]], ["x"], tmp_path / "x.png")
    assert viz.overlay_labels(np.zeros((4, 4, 3)), np.ones((4, 4), int), 3).shape == (4, 4, 3)


def test_the_package_holds_no_benchmark_code():
    assert importlib.util.find_spec("pointrend.bench") is None
