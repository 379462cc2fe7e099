"""What two or more benchmarks share: meters, alternated timing, the command line, JSON.

* :class:`ActivationCounter`: elements written by conv / linear operators, per phase;
  :class:`PointCounter`: also the points a point head predicts; :class:`PeakMemory`: the peak
  of live intermediate tensors allocated inside a ``with`` block.
* :func:`alternate`: every contender once per round, several rounds.
* :func:`arguments` / :func:`parse`: the options every stand-alone module has;
  :func:`machine_info`, :func:`command_line`, :func:`write_json` (strict JSON),
  :func:`store_section` (one key of ``results.json``, the report rendered again).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import shlex
import statistics
import sys
import time
import weakref
from collections.abc import Callable
from pathlib import Path

import torch
import torchvision
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from pointrend._fused_head import FusedPointHead

LAYER_OPS = {"convolution", "addmm", "mm", "bmm", "_convolution", "mkldnn_convolution"}
INPUT_OPS = {"grid_sampler_2d", "roi_align"}  # features sampled for the head (its input)
RESULTS = Path("benchmarks/results/results.json")


class ActivationCounter(TorchDispatchMode):
    """Elements written by conv / linear ops, per phase (``counter.phase = name``); ``inputs``
    counts the features sampled for the head (RoIAlign / grid_sample outputs) apart."""

    def __init__(self):
        super().__init__()
        self.phase = "all"
        self.counts: dict[str, int] = {}
        self.inputs: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0]
        if isinstance(out, torch.Tensor) and name in LAYER_OPS | INPUT_OPS:
            table = self.counts if name in LAYER_OPS else self.inputs
            table[self.phase] = table.get(self.phase, 0) + out.numel()
        return out


class PointCounter(ActivationCounter):
    """Also counts the points ``head`` predicts (the ``P`` of its ``N x C x P`` inputs, summed
    over calls, its fused copy's calls included) and starts a phase per call: ``step 1`` ...
    (before the first call: ``coarse``)."""

    def __init__(self, head: torch.nn.Module | None):
        super().__init__()
        self.head, self.points, self.calls = head, 0, 0

    def _step(self, module, args) -> None:
        if module is self.head or isinstance(module, FusedPointHead):
            self.calls += 1
            self.points += args[0].shape[-1]
            self.phase = f"step {self.calls}"

    def __enter__(self):
        self.phase, self.calls, self.points = "coarse", 0, 0
        self._hook = register_module_forward_pre_hook(self._step)
        return super().__enter__()

    def __exit__(self, *exc):
        self._hook.remove()
        return super().__exit__(*exc)


class PeakMemory(TorchDispatchMode):
    """Peak bytes of the tensors allocated inside the ``with`` block and still alive.

    Each operator output's storage counts once while any tensor viewing it lives (weak
    references): memory held before the block (weights, inputs) is not counted.
    """

    def __init__(self):
        super().__init__()
        self.live: dict[int, list[int]] = {}
        self.current = self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is not None:
            entry[1] -= 1
            if entry[1] == 0:
                self.current -= entry[0]
                del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        inputs = {t.untyped_storage().data_ptr() for t in tensors if t.device.type != "meta"}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or t.device.type == "meta":
                continue
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key == 0 or (key in inputs and key not in self.live):
                continue  # a view of (or in place on) memory that existed before the block
            if key not in self.live:
                self.live[key] = [storage.nbytes(), 0]
                self.current += storage.nbytes()
                self.peak = max(self.peak, self.current)
            self.live[key][1] += 1
            weakref.finalize(t, self._release, key)
        return out


log = functools.partial(print, flush=True)  # progress lines, shown as they come


def alternate(
    contenders: dict[str, Callable[[], object]],
    repeats: int,
    warmup: bool = True,
    clock: Callable[[], float] = time.perf_counter,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, list[float]]:
    """Seconds of each contender once per round, ``repeats`` rounds (after a warm-up round):
    alternating spreads any change of the machine's load over all alike. ``clock``:
    ``time.process_time`` for CPU seconds; ``sync`` waits for a device."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    with torch.no_grad():
        for fn in contenders.values() if warmup else ():
            fn()
        for _ in range(repeats):
            for name, fn in contenders.items():
                sync()
                start = clock()
                fn()
                sync()
                samples[name].append(clock() - start)
    return samples


def medians(samples: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in samples.items()}


def arguments(
    module: str, doc: str, out: Path | str = RESULTS, **counts
) -> argparse.ArgumentParser:
    """The parser of ``python -m benchmarks.<module>``: ``--out``, ``--threads`` (default 1) and
    an ``int`` option per ``counts`` item (``rounds=3``: ``--rounds``, default 3)."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{module}", description=doc)
    parser.add_argument("--out", default=str(out), help=f"where the figures go (default {out})")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    for name, default in counts.items():
        parser.add_argument(f"--{name}", type=int, default=default, help=f"default {default}")
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The parsed arguments, with torch set to ``--threads`` threads."""
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    return args


def machine_info() -> dict:
    """Where the figures were measured: platform, CPU model, threads, library versions."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return {
        "platform": platform.platform(),
        "cpu": names[0] if names else platform.processor() or platform.machine(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "python": platform.python_version(),
        "load_average": list(os.getloadavg()),
    }


def command_line(module: str, argv: list[str] | None = None) -> str:
    """The command that ran ``python -m module`` with ``argv`` (default: this process's)."""
    argv = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m", module, *map(shlex.quote, argv)])


def clean_json(value):
    """NaN / inf -> ``None`` (strict JSON), tuples -> lists, keys -> strings."""
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return None if isinstance(value, float) and not math.isfinite(value) else value


def write_json(result: dict, path: str | Path) -> Path:
    """``result`` as indented strict JSON at ``path`` (folders made)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(clean_json(result), indent=1) + "\n")
    return path


def read_json(path: Path) -> dict:
    """The JSON object in ``path``, or ``{}`` when there is none."""
    return json.loads(Path(path).read_text()) if Path(path).is_file() else {}


def store_section(path: Path, key: str, section: dict, module: str | None = None, argv=None) -> str:
    """Write a stand-alone benchmark's ``section`` (with the command ``python -m module argv``
    and the machine, when ``module`` is given) under ``key`` of ``path``, the other keys kept,
    then render ``REPORT.md`` beside it again. Returns what was written, for the log."""
    from .report import write_report  # the report imports this module

    if module:
        section = {**section, "command": command_line(module, argv), "machine": machine_info()}
    results = read_json(path) | {key: section}
    write_report(results, Path(path).parent)
    return f"{path} [{key!r}] and {Path(path).parent / 'REPORT.md'}"


def standard_error(row: dict, key: str) -> float | None:
    """Standard error of ``row[key]`` over ``row["folds"]`` (``None`` with fewer than 2)."""
    values = [f[key] for f in row.get("folds") or []]
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return None
    return statistics.stdev(values) / math.sqrt(len(values))
