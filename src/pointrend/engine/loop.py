"""The pieces of the training loop: run state, batches, one step, and the periodic actions.

:func:`pointrend.engine.train.train` strings them together. Periodic actions are small objects
with ``after_step(run, losses)`` and ``close()``: the progress bar, the metrics log, the
checkpoints and the evaluation.

Checkpoints hold only weights that proved finite: the checkpoint of iteration ``i`` is captured
after step ``i`` (RNG states and buffers as they are then) and written once the forward pass of
iteration ``i + 1`` gave finite losses on every process; the last one once the parameters are
finite. So the checkpoint a divergence error names is one that resumes.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .batches import QuantizedCollate, RunBatchSampler, SeededItems, move_batch
from .checkpoint import atomic_save, capture_rng_state, checkpoint_path
from .config import TrainConfig, config_to_dict
from .distributed import (
    all_gather_objects,
    default_num_workers,
    get_rank,
    get_world_size,
    is_distributed,
    is_main_process,
)
from .run_dir import MetricsLog

__all__ = [
    "NonFiniteLossError",
    "RunState",
    "run_batches",
    "forward_backward",
    "check_finite",
    "step",
    "Checkpointer",
    "LossLog",
    "PeriodicEvaluation",
    "ProgressBar",
]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the iteration, the term and the
    checkpoint to resume from."""


@dataclass
class RunState:
    """Everything a training run holds; ``iteration`` counts the optimizer steps done."""

    cfg: TrainConfig
    model: nn.Module  # the bare model (what checkpoints hold)
    wrapped: nn.Module  # the model the steps call (DistributedDataParallel with many processes)
    dataset: Dataset
    collate_fn: Callable | None
    evaluate_fn: Callable[[nn.Module, int], dict] | None
    device: torch.device
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None  # None: full precision
    out: Path
    facts: dict  # dataset facts stored in checkpoints (class count and names)
    iteration: int = 0
    seconds_before: float = 0.0  # training time of the runs this one resumes
    started: float = field(default_factory=time.perf_counter)
    last_good: Path | None = None  # the latest checkpoint that resumes
    losses: dict[str, float] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    def seconds(self) -> float:
        return round(self.seconds_before + time.perf_counter() - self.started, 3)

    def finished(self) -> bool:
        return self.iteration >= self.cfg.solver.max_iter


def run_batches(run: RunState) -> Iterator[list[tuple]]:
    """Each optimizer step's micro-batches ``[(images, targets), ...]`` on the run's device,
    from ``run.iteration`` until ``max_iter``: one DataLoader for the whole run."""
    cfg = run.cfg
    accumulate = cfg.solver.accumulate_steps
    batch_size = cfg.solver.images_per_batch // (get_world_size() * accumulate)
    sampler = RunBatchSampler(
        len(run.dataset), batch_size, cfg.seed, run.iteration, cfg.solver.max_iter, accumulate
    )
    workers = default_num_workers() if cfg.num_workers is None else cfg.num_workers
    loader = DataLoader(
        SeededItems(run.dataset),
        batch_sampler=sampler,
        collate_fn=QuantizedCollate(run.collate_fn),
        num_workers=workers,
        pin_memory=run.device.type == "cuda",
        # its own generator: starting the loader draws nothing from the global RNG
        generator=torch.Generator().manual_seed(cfg.seed * 100_003 + get_rank()),
    )
    step_batches = []
    for images, targets in loader:
        images = move_batch(images, run.device, images=True)
        step_batches.append((images, move_batch(targets, run.device)))
        if len(step_batches) == accumulate:
            yield step_batches
            step_batches = []


def forward_backward(run: RunState, micro_batches: list[tuple]) -> dict[str, torch.Tensor]:
    """Forward and backward of each micro-batch (each loss divided by their number, gradients
    summed; DDP synchronises after the last one); the detached mean of each loss term."""
    run.optimizer.zero_grad(set_to_none=True)
    n = len(micro_batches)
    means: dict[str, torch.Tensor] = {}
    for k, (images, targets) in enumerate(micro_batches):
        last = k == n - 1
        no_sync = getattr(run.wrapped, "no_sync", None)
        with contextlib.nullcontext() if last or no_sync is None else no_sync():
            with torch.autocast(
                run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None
            ):
                losses = run.wrapped(images, targets)
            run.scaler.scale(sum(losses.values()) / n).backward()
        for name, value in losses.items():
            means[name] = means.get(name, 0) + value.detach().float() / n
    return means


def check_finite(run: RunState, losses: dict[str, torch.Tensor]) -> None:
    """Record the step's losses in ``run.losses``; :class:`NonFiniteLossError` when any process
    got NaN/inf. One host-device synchronisation; the collective's tensor is on the run's
    device."""
    values = torch.stack(list(losses.values())).to(run.device)
    flag = (~torch.isfinite(values)).any().float().reshape(1)
    if is_distributed():
        torch.distributed.all_reduce(flag)
    numbers = torch.cat([flag, values.sum().reshape(1), values]).tolist()
    run.losses = {"loss": numbers[1]} | dict(zip(losses, numbers[2:]))
    if numbers[0] > 0:
        bad = {k: v for k, v in run.losses.items() if k != "loss" and not math.isfinite(v)}
        what = ", ".join(f"{k} = {v}" for k, v in bad.items()) or "on another process"
        raise NonFiniteLossError(
            f"non-finite loss at iteration {run.iteration}: {what}; training stopped, "
            f"{_resume_hint(run)}"
        )


def _resume_hint(run: RunState) -> str:
    if run.last_good is None:
        return "no checkpoint was written yet: lower solver.lr or set solver.clip_grad_norm"
    return (
        f"the last good checkpoint is {run.last_good}: resume from it (--resume) with a lower "
        "solver.lr or solver.clip_grad_norm"
    )


def step(run: RunState) -> None:
    """Gradient clipping (``solver.clip_grad_norm``), optimizer and schedule step."""
    if run.cfg.solver.clip_grad_norm:
        run.scaler.unscale_(run.optimizer)
        nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.solver.clip_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    run.iteration += 1


class Checkpointer:
    """``model_NNNNNNN.pt`` every ``checkpoint_period`` iterations and at the end, and
    ``model_final.pt``; each written only once its weights proved finite (see the module)."""

    def __init__(self, run: RunState):
        self.period = run.cfg.checkpoint_period
        self.pending: dict | None = None

    def after_step(self, run: RunState, losses: dict) -> None:
        if self.period and run.iteration % self.period == 0:
            self.pending = self._capture(run)

    def _capture(self, run: RunState) -> dict:
        return {
            "iteration": run.iteration,
            "rng": all_gather_objects(capture_rng_state()),  # every process calls this
            "buffers": {k: b.detach().clone() for k, b in run.model.named_buffers()},
            "seconds": run.seconds(),
        }

    def confirm(self, run: RunState) -> None:
        """The weights of the last step gave finite losses: write the checkpoint waiting."""
        if self.pending is not None:
            _check_parameters(run)
            self._write(run, self.pending)
            self.pending = None

    def _write(self, run: RunState, pending: dict) -> None:
        path = checkpoint_path(run.out, pending["iteration"])
        if is_main_process():
            model = run.model.state_dict()  # the buffers as they were after that step
            model.update({k: v for k, v in pending["buffers"].items() if k in model})
            atomic_save(
                {
                    "model": model,
                    "optimizer": run.optimizer.state_dict(),
                    "scheduler": run.scheduler.state_dict(),
                    "scaler": run.scaler.state_dict(),
                    "rng": pending["rng"],
                    "iteration": pending["iteration"],
                    "seconds": pending["seconds"],
                    "config": config_to_dict(run.cfg),
                    **run.facts,
                },
                path,
            )
        run.last_good = path

    def finish(self, run: RunState) -> Path:
        """The last checkpoint and ``model_final.pt``, when the parameters are finite."""
        _check_parameters(run)
        self._write(run, self.pending or self._capture(run))
        self.pending = None
        final = run.out / "model_final.pt"
        if is_main_process():
            record = {"model": run.model.state_dict(), "config": config_to_dict(run.cfg)}
            atomic_save(record | {"iteration": run.iteration, **run.facts}, final)
        return final

    def close(self) -> None:
        pass


def _check_parameters(run: RunState) -> None:
    """:class:`NonFiniteLossError` naming the first parameter holding NaN or inf, if any."""
    bad = next((k for k, p in run.model.named_parameters() if not torch.isfinite(p).all()), None)
    if bad is not None:
        raise NonFiniteLossError(
            f"parameter {bad} is not finite after iteration {run.iteration}; nothing written "
            f"for it, {_resume_hint(run)}"
        )


class LossLog:
    """A ``metrics.jsonl`` record of the losses every ``log_period`` iterations and at the end."""

    def __init__(self, run: RunState, log: MetricsLog):
        self.log = log

    def after_step(self, run: RunState, losses: dict) -> None:
        if run.iteration % run.cfg.log_period == 0 or run.finished():
            lr = run.optimizer.param_groups[0]["lr"]
            record = {"iter": run.iteration, "lr": lr, **run.losses, "seconds": run.seconds()}
            self.log.write(record)

    def close(self) -> None:
        pass


class PeriodicEvaluation:
    """``evaluate_fn(model, iteration)`` every ``eval_period`` iterations and at the end (once);
    every process calls it, the metrics go to ``metrics.jsonl``."""

    def __init__(self, run: RunState, log: MetricsLog):
        self.log = log
        self.done_at: int | None = None

    def after_step(self, run: RunState, losses: dict) -> None:
        period = run.cfg.eval_period
        if period and run.iteration % period == 0:
            self.evaluate(run)

    def evaluate(self, run: RunState) -> None:
        if run.evaluate_fn is None or self.done_at == run.iteration:
            return
        run.metrics = run.evaluate_fn(run.model, run.iteration)
        run.wrapped.train()
        self.log.write({"iter": run.iteration, **flat_numbers(run.metrics)})
        self.done_at = run.iteration

    def close(self) -> None:
        pass


class ProgressBar:
    """A tqdm bar on the main process when ``enabled``."""

    def __init__(self, run: RunState, enabled: bool):
        self.bar = None
        if enabled and is_main_process():
            from tqdm import tqdm

            total, start = run.cfg.solver.max_iter, run.iteration
            self.bar = tqdm(total=total, initial=start, desc="train", dynamic_ncols=True)

    def after_step(self, run: RunState, losses: dict) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{run.losses['loss']:.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def flat_numbers(d: dict, prefix: str = "") -> dict:
    """The numbers of a nested dict under ``a/b`` keys (NaN left out)."""
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(flat_numbers(v, f"{prefix}{k}/"))
        elif isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v)):
            flat[f"{prefix}{k}"] = v
    return flat
