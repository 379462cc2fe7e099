"""Benchmarks of the paper's claims and of this library's speed (not installed with the package).

``python -m benchmarks`` (``make bench``; sections ``cost``, ``semantic``, ``accuracy``,
``ablation``) writes ``results.json``, ``REPORT.md`` (:mod:`.report`) and the plot
the README shows. Stand-alone measurements, each with its own command and JSON (a key of
``results.json`` or its own file): ``python -m benchmarks.cost`` (``instance_cost.json``),
``benchmarks.semantic`` (``semantic_models.json``), ``benchmarks.per_box cost | budget | scale``,
``benchmarks.big_images``, ``benchmarks.frozen_norm_speed``, ``benchmarks.export_latency``
(``export_latency.json``), ``benchmarks.semantic_rendering_gain`` (printed) and
``benchmarks.gpu_check`` (``gpu.json``). Shared meters and JSON helpers: :mod:`.common`.
Nothing is imported here, so that ``python -m benchmarks.<module>`` runs that module alone.
"""
