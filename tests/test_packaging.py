"""The wheel holds the package, its shipped weights and the license, and nothing else of the
repository; the version has one source."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pointrend

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_the_package_weights_and_license(tmp_path):
    source = tmp_path / "source"  # a copy: building writes build/ and egg-info beside the sources
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "src", source / "src", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
    done = subprocess.run(
        [*cmd, "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("pointrend-*.whl")
    assert wheel.name.startswith(f"pointrend-{pointrend.__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    weights = [n for n in names if n.startswith("pointrend/weights/") and n.endswith(".pt")]
    assert len(weights) == 4 and "pointrend/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert not [
        n for n in names if n.split("/")[0] in ("tests", "benchmarks", "scripts", "configs")
    ]
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: Apache-2.0" in text
    assert "Classifier: Programming Language :: Python :: 3.11" in text
    assert "Provides-Extra: tensorboard" in text


def test_the_command_line_reports_the_package_version(capsys):
    from pointrend.cli import main

    try:
        main(["--version"])
    except SystemExit:
        pass
    assert capsys.readouterr().out.strip() == f"pointrend {pointrend.__version__}"
