"""Benchmarks of the paper's claims: cost (instance and semantic), accuracy, ablations.

Not part of the installed ``pointrend`` package: run from a checkout of the repository
(``make bench``, or ``python -m benchmarks --help``). :func:`.run.run_bench` writes ``REPORT.md``,
``results.json`` and PNG plots. Modules: :mod:`.cost` (instance mask branch), :mod:`.semantic_cost`
(semantic refinement), :mod:`.semantic_models` (full semantic models), :mod:`.accuracy`,
:mod:`.ablation`, :mod:`.learning` (a tiny problem learned from scratch), :mod:`.meters`,
:mod:`.report` / :mod:`.markdown` / :mod:`.plots`, :mod:`.run`. Measurements with their own
JSON file and command: ``python -m benchmarks.instance_cost``, ``benchmarks.semantic_models``,
``benchmarks.export_latency``, ``benchmarks.semantic_rendering_gain``.
"""

# Nothing is imported here: ``python -m benchmarks.<module>`` then runs that module alone.
