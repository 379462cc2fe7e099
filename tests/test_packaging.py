"""The wheel holds the package, its shipped weights and the license, and nothing else of the
repository; the version has one source; a release's description renders off the repository."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import pointrend
from scripts.release_source import absolute_links, main, write_release_source

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = "https://github.com/example/pointrend"


def test_the_wheel_holds_the_package_weights_and_license(tmp_path):
    # The release source is a copy (building writes build/ and egg-info beside the sources).
    source = write_release_source(tmp_path / "source", REPOSITORY, "v1")
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
    assert f"Project-URL: Source, {REPOSITORY}" in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert images and all(i.startswith(f"{REPOSITORY}/raw/v1/") for i in images)
    assert "](docs/" not in text


def test_release_links_are_absolute_and_others_untouched():
    text = "![a](docs/a.png) [b](./docs/b.md) [c](https://x.org/c) [d](#usage) ![e](/e.png)"
    assert absolute_links(text, "https://h.org/o/r/", "v2") == (
        "![a](https://h.org/o/r/raw/v2/docs/a.png) [b](https://h.org/o/r/blob/v2/docs/b.md) "
        "[c](https://x.org/c) [d](#usage) ![e](/e.png)"
    )


def test_release_source_refuses_a_bad_address_or_an_existing_folder(tmp_path, capsys):
    assert main([str(tmp_path / "a"), "--repository", "github.com/o/r", "--ref", "v1"]) == 2
    assert "--repository must be an https:// address" in capsys.readouterr().err
    assert main([str(tmp_path), "--repository", REPOSITORY, "--ref", "v1"]) == 2
    assert "exists" in capsys.readouterr().err
    with pytest.raises(FileExistsError):
        write_release_source(tmp_path, REPOSITORY, "v1")


def test_the_command_line_reports_the_package_version(capsys):
    from pointrend.cli import main

    try:
        main(["--version"])
    except SystemExit:
        pass
    assert capsys.readouterr().out.strip() == f"pointrend {pointrend.__version__}"
