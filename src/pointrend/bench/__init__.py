"""Benchmarks of the paper's claims: cost (instance and semantic), accuracy, ablations.

``pointrend bench`` (:func:`run_bench`) writes ``REPORT.md``, ``results.json`` and PNG plots.
The modules: :mod:`.cost` (instance mask branch), :mod:`.semantic_cost`, :mod:`.accuracy`,
:mod:`.ablation`, :mod:`.report` / :mod:`.plots`, :mod:`.run`.
"""

from .run import SECTIONS, BenchOptions, default_weights_dir, run_bench

__all__ = ["SECTIONS", "BenchOptions", "default_weights_dir", "run_bench"]
