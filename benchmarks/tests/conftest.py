"""One quick run of the whole bench pipeline, shared by the tests that read its figures.

Those tests carry ``pytest.mark.xdist_group("quick_bench")``: with ``pytest -n N --dist
loadgroup`` (``make test``) they run in one worker, so the pipeline runs once.
"""

from __future__ import annotations

import json

import pytest
import torch

from benchmarks.__main__ import main


@pytest.fixture(scope="session")
def quick_bench(tmp_path_factory):
    """``python -m benchmarks --quick`` with no shipped weights (an empty folder), so every model
    is trained here; returns the output folder and its ``results.json``."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("bench")
    (root / "no_weights").mkdir()
    argv = ["--quick", "--out", str(root / "out"), "--weights-dir", str(root / "no_weights")]
    assert main([*argv, "--work-dir", str(root / "work")]) == 0
    results = json.loads((root / "out" / "results.json").read_text())
    return root / "out", results
