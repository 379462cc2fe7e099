"""Benchmarks of the paper's claims: cost (instance and semantic), accuracy, ablations.

Not part of the installed ``pointrend`` package: run from a checkout of the repository
(``make bench``, or ``python -m benchmarks --help``). :func:`.run.run_bench` writes ``REPORT.md``,
``results.json`` and PNG plots. Modules: :mod:`.cost` (instance mask branch), :mod:`.semantic_cost`
(semantic refinement), :mod:`.semantic_models` (full semantic models), :mod:`.accuracy`,
:mod:`.ablation`, :mod:`.learning` (a tiny problem learned from scratch), :mod:`.meters`,
:mod:`.report` / :mod:`.markdown` / :mod:`.plots`, :mod:`.run`. Measurements with their own
JSON file and command: ``python -m benchmarks.instance_cost``, ``benchmarks.semantic_models``,
``benchmarks.export_latency``, ``benchmarks.semantic_rendering_gain``, ``benchmarks.detectron2_speed``.
Per-box mask resolution, each writing its own key of ``results.json`` and the report's per-box
section (:func:`.report.store_standalone`): ``python -m benchmarks.per_box`` (cost and accuracy),
``benchmarks.point_budget`` (an oracle study of the points per step), ``benchmarks.scale`` (one
4000 x 3000 output). ``python -m benchmarks.frozen_norm_speed`` (its own key): an imported
detectron2 model's backbone, transform and whole model against another commit's code.
Large photos: ``python -m benchmarks.big_images`` (peak memory and wall time
of ``pointrend predict`` / ``eval`` at 8000 x 6000, 2048 x 2048 and 4096 x 8192, key
``big_images``).
"""

# Nothing is imported here: ``python -m benchmarks.<module>`` then runs that module alone.
