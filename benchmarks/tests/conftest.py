"""One quick run of the whole bench pipeline, shared by the tests that read its figures.

Under pytest-xdist every worker asks for it: the first one runs it in the session's common
temporary folder while holding a lock, the others wait for it and read what it wrote, so the
pipeline runs once per test session either way.
"""

from __future__ import annotations

import fcntl
import json
import os

import pytest
import torch

from benchmarks.run import main


@pytest.fixture(scope="session")
def quick_bench(tmp_path_factory):
    """``python -m benchmarks --quick`` with no shipped weights (an empty folder), so every model
    is trained here; returns the output folder and its ``results.json``."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "quick_bench"
    root.mkdir(exist_ok=True)
    out = root / "out"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / "REPORT.md").is_file():
            torch.set_num_threads(1)
            (root / "no_weights").mkdir(exist_ok=True)
            argv = ["--quick", "--out", str(out), "--weights-dir", str(root / "no_weights")]
            assert main([*argv, "--work-dir", str(root / "work")]) == 0
    return out, json.loads((out / "results.json").read_text())
