"""The training loop: one process or many (``torchrun``), checkpoints, resume, logging.

``train(cfg)`` builds the model and data from a :class:`TrainConfig` (or takes them ready-made),
then runs ``max_iter`` iterations of ``model(images, targets) -> loss dict``. The data order is a
function of ``(seed, epoch)`` through a ``DistributedSampler`` per epoch, and RNG states are
checkpointed, so a resumed run continues exactly where the interrupted one stopped. The output
folder's rules (new run, ``resume``, ``overwrite``) are those of :mod:`.run_dir`; the loop's
pieces (step, checkpoints, logging, evaluation) are in :mod:`.loop`.

On resume the checkpoint's model config must equal the config's (an error names the keys that
differ); the solver's ``lr``, ``momentum`` and ``weight_decay`` are the config's, so a run that
diverged can go on from its last good checkpoint with a lower learning rate. ``config.yaml``
keeps the run's first config; a resumed run whose config differs writes
``config_resumed_NNNNNNN.yaml`` beside it. ``seconds`` in ``metrics.jsonl`` counts the training
time of all the runs.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import Dataset

from .batches import epoch_batches
from .checkpoint import (
    CheckpointError,
    atomic_write,
    load_checkpoint,
    load_state_checked,
    restore_rng_state,
)
from .classes import dataset_facts
from .config import (
    ConfigError,
    SolverConfig,
    TrainConfig,
    config_to_dict,
    differences,
    require_train_data,
    with_checkpoint_model,
)
from .distributed import (
    DeviceError,
    barrier,
    cleanup_distributed,
    describe_run,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
    resolve_amp,
    run_facts,
)
from .loop import (
    Checkpointer,
    LossLog,
    NonFiniteLossError,
    PeriodicEvaluation,
    ProgressBar,
    RunState,
    check_finite,
    forward_backward,
    run_batches,
    step,
)
from .run_dir import MetricsLog, holding_output_dir, plan_run, prepare_run_folder

__all__ = [
    "NonFiniteLossError",
    "TrainResult",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "epoch_batches",
    "train",
]


@dataclass
class TrainResult:
    iteration: int
    output_dir: Path
    final_weights: Path | None
    last_losses: dict[str, float] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what the user should know about the run
    is_main_process: bool = True  # rank 0 of a distributed run (which reports it)


def build_optimizer(model: nn.Module, solver: SolverConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if solver.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=solver.lr, momentum=solver.momentum, weight_decay=solver.weight_decay
        )
    if solver.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=solver.lr, weight_decay=solver.weight_decay)
    raise ValueError(f"solver.optimizer must be 'sgd' or 'adamw', got {solver.optimizer!r}")


def lr_factor(iteration: int, solver: SolverConfig) -> float:
    """Learning-rate multiplier at ``iteration``: linear warm-up, then step or poly decay."""
    if solver.schedule == "step":
        factor = solver.gamma ** sum(iteration >= s for s in solver.steps)
    elif solver.schedule == "poly":
        factor = (
            1.0 - min(iteration, solver.max_iter) / max(solver.max_iter, 1)
        ) ** solver.poly_power
    elif solver.schedule == "constant":
        factor = 1.0
    else:
        raise ValueError(
            f"solver.schedule must be 'step', 'poly' or 'constant', got {solver.schedule!r}"
        )
    if iteration < solver.warmup_iters:
        alpha = iteration / solver.warmup_iters
        factor *= solver.warmup_factor * (1 - alpha) + alpha
    return factor


def build_scheduler(optimizer: torch.optim.Optimizer, solver: SolverConfig):
    lr_factor(0, solver)  # validate the schedule name now, not at the first step
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: lr_factor(it, solver))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@holding_output_dir
def train(
    cfg: TrainConfig,
    resume: bool = False,
    model: nn.Module | None = None,
    dataset: Dataset | None = None,
    collate_fn: Callable | None = None,
    evaluate_fn: Callable[[nn.Module, int], dict] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> TrainResult:
    """Train per ``cfg``; ``model`` / ``dataset`` / ``collate_fn`` are built from it if omitted.

    ``resume`` continues the run in ``cfg.output_dir`` from its latest checkpoint; ``overwrite``
    deletes the run found there and starts again (without either, a used folder is an error).
    ``evaluate_fn(model, iteration) -> metrics`` runs every ``cfg.eval_period`` iterations and at
    the end (all ranks call it; it gathers across ranks itself).
    """
    created_group = not is_distributed()
    try:
        run, notes = _set_up(cfg, resume, overwrite, model, dataset, collate_fn, evaluate_fn)
        final = _run_loop(run, progress)
        main = is_main_process()
    finally:
        if created_group:  # the process group this call joined (under torchrun)
            cleanup_distributed()
    return TrainResult(run.iteration, run.out, final, run.losses, run.metrics, notes, main)


def _run_loop(run: RunState, progress: bool) -> Path:
    """The iterations from ``run.iteration`` to ``max_iter``; the final weights' path."""
    log = MetricsLog(run.out, is_main_process())
    if is_main_process():
        print(f"pointrend train: {describe_run(run.device, run.amp_dtype)}", file=sys.stderr)
        log.write({"event": "start", "iter": run.iteration, **run_facts(run.device, run.amp_dtype)})
    checkpoints = Checkpointer(run)
    evaluation = PeriodicEvaluation(run, log)
    actions = [ProgressBar(run, progress), LossLog(run, log), checkpoints, evaluation]
    run.wrapped.train()
    try:
        for micro_batches in run_batches(run):
            losses = forward_backward(run, micro_batches)
            check_finite(run, losses)  # every process, before any parameter changes
            checkpoints.confirm(run)  # the weights of the last step gave finite losses
            step(run)
            for action in actions:
                action.after_step(run, losses)
        final = checkpoints.finish(run)
        evaluation.evaluate(run)
    finally:
        for action in actions:
            action.close()
        log.close()
    return final


def _set_up(
    cfg: TrainConfig, resume: bool, overwrite: bool, model, dataset, collate_fn, evaluate_fn
) -> tuple[RunState, list[str]]:
    """The run state, ready at its first iteration (0, or the checkpoint's when resuming)."""
    try:
        device = init_distributed(cfg.device)
        amp_dtype = resolve_amp(cfg.solver.amp, device)
    except DeviceError as err:
        raise ConfigError(str(err)) from err
    out = Path(cfg.output_dir)
    found = plan_run(out, resume, overwrite, cfg.solver.max_iter)  # every process, before writes
    world, accumulate = get_world_size(), cfg.solver.accumulate_steps
    if cfg.solver.images_per_batch % (world * accumulate):
        raise ConfigError(
            f"solver.images_per_batch = {cfg.solver.images_per_batch} is not divisible by the "
            f"{world} process(es) x solver.accumulate_steps = {accumulate}"
        )
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    _seed_everything(cfg.seed + get_rank())
    model, dataset, collate_fn, evaluate_fn = _objects(cfg, model, dataset, collate_fn, evaluate_fn)
    model = _sync_batchnorm(model, cfg, device)
    model.to(device)
    optimizer = build_optimizer(model, cfg.solver)
    run = RunState(
        cfg=cfg,
        model=model,
        wrapped=model,
        dataset=dataset,
        collate_fn=collate_fn,
        evaluate_fn=evaluate_fn,
        device=device,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, cfg.solver),
        scaler=torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16),
        amp_dtype=amp_dtype,
        out=out,
        facts=dataset_facts(dataset),
    )
    if found is not None:
        _resume(run, found)
    if world > 1:
        run.wrapped = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            # every parameter gets a gradient in every step (a batch without objects gives
            # the mask branch zero gradients), so DDP need not search the graph for unused ones
            find_unused_parameters=False,
        )
    barrier()  # every process has read the folder before the main one changes it
    notes = []
    if is_main_process():
        prepare_run_folder(out, overwrite, run.iteration if found else None)
        notes = _write_config(run, found is not None)
    return run, notes


def _objects(cfg: TrainConfig, model, dataset, collate_fn, evaluate_fn) -> tuple:
    """``(model, dataset, collate_fn, evaluate_fn)``: those given, the others built from ``cfg``."""
    if model is not None and dataset is not None:
        return model, dataset, collate_fn, evaluate_fn
    require_train_data(cfg)
    from .build import build_train_objects  # the task packages load only when needed

    built = build_train_objects(cfg)
    return (
        built.model if model is None else model,
        built.dataset if dataset is None else dataset,
        collate_fn or built.collate_fn,
        evaluate_fn or built.evaluate_fn,
    )


def _sync_batchnorm(model: nn.Module, cfg: TrainConfig, device: torch.device) -> nn.Module:
    """``model`` with its BatchNorm layers synchronised across processes when the config asks
    (``sync_batchnorm``; CUDA only, as torch's SyncBatchNorm); the same state-dict keys."""
    if not cfg.sync_batchnorm or get_world_size() == 1:
        return model
    if device.type != "cuda":
        raise ConfigError(
            f"sync_batchnorm: true needs CUDA (torch's SyncBatchNorm), the run is on {device}"
        )
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


_CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "iteration")


def _resume(run: RunState, path: Path) -> None:
    """Load the training state of checkpoint ``path``: weights, optimizer, schedule, RNG."""
    ckpt = load_checkpoint(path)
    missing = [k for k in _CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path} is not a training checkpoint: no {', '.join(missing)}")
    _, diffs = with_checkpoint_model(run.cfg, ckpt.get("config"), str(path))
    if diffs:
        raise ConfigError(
            f"--resume: the model config differs from the one {path.name} was trained with "
            f"({'; '.join(diffs[:3])}): resume with the run's model section, or train into "
            "another output folder"
        )
    stored, now = ckpt.get("num_classes"), run.facts.get("num_classes")
    if stored is not None and now is not None and stored != now:
        raise ConfigError(
            f"--resume: {path} was trained with {stored} classes, train_data has {now}: resume "
            "on the run's data, or train into another output folder"
        )
    load_state_checked(run.model, ckpt["model"], path)
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.scaler.load_state_dict(ckpt["scaler"])
    run.iteration = int(ckpt["iteration"])
    _apply_solver(run.optimizer, run.scheduler, run.cfg.solver, run.iteration)
    rng, rank = ckpt["rng"], get_rank()
    restore_rng_state(rng[rank] if rank < len(rng) else rng[0])
    run.seconds_before = float(ckpt.get("seconds", 0.0))
    run.last_good = path


def _apply_solver(optimizer, scheduler, solver: SolverConfig, iteration: int) -> None:
    """The config's learning rate, momentum and weight decay over those of a loaded state."""
    for group in optimizer.param_groups:
        group["initial_lr"] = solver.lr
        group["lr"] = solver.lr * lr_factor(iteration, solver)
        group["weight_decay"] = solver.weight_decay
        if "momentum" in group:
            group["momentum"] = solver.momentum
    scheduler.base_lrs = [solver.lr] * len(optimizer.param_groups)


def _write_config(run: RunState, resumed: bool) -> list[str]:
    """``config.yaml`` of a new run; on resume a differing config goes beside it."""
    values = config_to_dict(run.cfg)
    path = run.out / "config.yaml"
    notes = []
    if resumed and path.is_file():
        first = yaml.safe_load(path.read_text()) or {}
        diffs = differences(first, values, names=("config.yaml", "resumed config"))
        if not diffs:
            return []
        path = run.out / f"config_resumed_{run.iteration:07d}.yaml"
        notes.append(
            f"resumed with a config that differs from config.yaml ({'; '.join(diffs[:3])}); "
            f"written to {path}"
        )
    atomic_write(path, lambda f: yaml.safe_dump(values, f, sort_keys=False), binary=False)
    return notes
