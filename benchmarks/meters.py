"""Meters of the benchmarks: multiply-adds and activations, peak memory, alternated timing.

* :class:`ActivationCounter`: elements written by conv / linear operators, per phase.
* :class:`PeakMemory`: the peak of live intermediate tensors allocated inside a ``with`` block.
* :class:`ModuleSeconds`: seconds spent inside some modules' forward (hooks).
* :func:`count_call`: multiply-adds (``FlopCounterMode`` counts 2 FLOPs per multiply-add, halved
  here) and activations of one call.
* :func:`alternate`: every contender timed once per round, several rounds.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "ActivationCounter",
    "PeakMemory",
    "ModuleSeconds",
    "count_call",
    "peak_bytes",
    "timed",
    "alternate",
]

LAYER_OPS = {"convolution", "addmm", "mm", "bmm", "_convolution", "mkldnn_convolution"}
INPUT_OPS = {"grid_sampler_2d", "roi_align"}  # features sampled for the head (its input)


class ActivationCounter(TorchDispatchMode):
    """Elements written by conv / linear ops, per phase (``counter.phase = name``).

    ``inputs`` counts, per phase, the features sampled for the head (RoIAlign / grid_sample
    outputs) separately.
    """

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


class PeakMemory(TorchDispatchMode):
    """Peak bytes of the tensors allocated inside the ``with`` block and still alive.

    Every operator output's storage is counted once while any tensor viewing it lives (tracked
    with weak references), so the figure is the largest total of live intermediate results:
    memory held before the block (weights, inputs) is not counted. ``peak`` in bytes.
    """

    def __init__(self):
        super().__init__()
        self.live: dict[int, list[int]] = {}
        self.current = 0
        self.peak = 0

    def _release(self, key: int) -> None:
        entry = self.live.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self.live[key]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {
            t.untyped_storage().data_ptr()
            for t in tree_flatten((args, kwargs))[0]
            if isinstance(t, torch.Tensor) and t.device.type != "meta"
        }
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


class ModuleSeconds:
    """Seconds spent inside the forward of some (not nested) modules, summed until taken."""

    def __init__(self, modules):
        self.seconds, self._start = 0.0, 0.0
        self.handles = [m.register_forward_pre_hook(self._enter) for m in modules]
        self.handles += [m.register_forward_hook(self._leave) for m in modules]

    def _enter(self, module, args) -> None:
        self._start = time.perf_counter()

    def _leave(self, module, args, output) -> None:
        self.seconds += time.perf_counter() - self._start

    def take(self) -> float:
        """The seconds so far, and start again from 0."""
        seconds, self.seconds = self.seconds, 0.0
        return seconds

    def remove(self) -> None:
        """Remove the hooks."""
        for handle in self.handles:
            handle.remove()


def count_call(run: Callable[[], object], counter: ActivationCounter) -> float:
    """Run ``run()`` twice (FLOP counter, then ``counter``); return the multiply-adds."""
    with torch.no_grad():
        flops = FlopCounterMode(display=False)
        with flops:
            run()
        with counter:
            run()
    return flops.get_total_flops() / 2


def peak_bytes(run: Callable[[], object]) -> int:
    """Peak bytes of live intermediate tensors during ``run()`` (no autograd)."""
    meter = PeakMemory()
    with torch.no_grad(), meter:
        run()
    return meter.peak


def timed(fn, *args) -> float:
    """Seconds of one call ``fn(*args)``."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def alternate(
    contenders: dict[str, Callable[[], object]], repeats: int, warmup: bool = True
) -> dict[str, list]:
    """Time every contender once per round, ``repeats`` rounds (after one warm-up round).

    Alternating spreads any change of the machine's load over all contenders alike.
    """
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    with torch.no_grad():
        for fn in contenders.values() if warmup else ():
            fn()
        for _ in range(repeats):
            for name, fn in contenders.items():
                samples[name].append(timed(fn))
    return samples
