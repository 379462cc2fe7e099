"""The training loop: one process or many (``torchrun``), checkpoints, resume, logging.

``train(cfg)`` builds the model and data from a :class:`TrainConfig` (or takes them ready-made),
then runs ``max_iter`` iterations of ``model(images, targets) -> loss dict``. The data order is a
function of ``(seed, epoch)`` through a ``DistributedSampler`` per epoch, and RNG states are
checkpointed, so a resumed run continues exactly where the interrupted one stopped.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .checkpoint import (
    atomic_save,
    atomic_write,
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
)
from .config import SolverConfig, TrainConfig, config_to_dict
from .distributed import (
    all_gather_objects,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
)

__all__ = [
    "NonFiniteLossError",
    "TrainResult",
    "build_optimizer",
    "build_scheduler",
    "lr_factor",
    "epoch_batches",
    "train",
]


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN or infinite; the message names the iteration and the term."""


@dataclass
class TrainResult:
    iteration: int
    output_dir: Path
    final_weights: Path | None
    last_losses: dict[str, float] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)


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


def epoch_batches(num_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """This rank's batches of dataset indices for ``epoch`` (a DistributedSampler per epoch).

    With ``W`` ranks and per-rank batch ``B``, batch ``j`` of all ranks together is the same set
    of images as batch ``j`` of one process with batch ``W * B``.
    """
    world, rank = get_world_size(), get_rank()
    if num_items < batch_size * world:
        raise ValueError(
            f"the dataset has {num_items} items, fewer than one global batch ({batch_size * world})"
        )
    sampler = DistributedSampler(
        range(num_items), num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True
    )
    sampler.set_epoch(epoch)
    indices = list(sampler)
    n = len(indices) // batch_size
    return [indices[i * batch_size : (i + 1) * batch_size] for i in range(n)]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _move(obj, device):
    if torch.is_tensor(obj):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: _move(v, device) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_move(v, device) for v in obj)
    return obj


def _check_finite(losses: dict[str, torch.Tensor], iteration: int, last_good: Path | None) -> None:
    bad = {k: float(v.detach()) for k, v in losses.items() if not torch.isfinite(v).all()}
    flag = torch.tensor([1.0 if bad else 0.0])
    if is_distributed():
        torch.distributed.all_reduce(flag)
    if bad or flag.item() > 0:
        what = ", ".join(f"{k} = {v}" for k, v in bad.items()) or "on another rank"
        kept = (
            f"the last good checkpoint is {last_good}"
            if last_good
            else "no checkpoint was written yet"
        )
        raise NonFiniteLossError(
            f"non-finite loss at iteration {iteration}: {what}; training stopped, {kept}"
        )


class _MetricsLog:
    """JSON-lines log (and TensorBoard when installed), written by rank 0 only."""

    def __init__(self, output_dir: Path, enabled: bool):
        self.enabled = enabled
        self.file = None
        self.tb = None
        if not enabled:
            return
        self.file = open(output_dir / "metrics.jsonl", "a")  # noqa: SIM115
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(output_dir / "tb"))
        except Exception:  # TensorBoard is optional
            self.tb = None

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "iter" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, record["iter"])

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()


def train(
    cfg: TrainConfig,
    resume: bool = False,
    model: nn.Module | None = None,
    dataset: Dataset | None = None,
    collate_fn: Callable | None = None,
    evaluate_fn: Callable[[nn.Module, int], dict] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Train per ``cfg``; ``model`` / ``dataset`` / ``collate_fn`` are built from it if omitted.

    ``evaluate_fn(model, iteration) -> metrics`` runs every ``cfg.eval_period`` iterations and at
    the end (all ranks call it; it gathers across ranks itself).
    """
    device = init_distributed(cfg.device)
    rank, world = get_rank(), get_world_size()
    out = Path(cfg.output_dir)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    _seed_everything(cfg.seed + rank)

    if model is None or dataset is None:
        from .build import build_train_objects  # the task packages load only when needed

        built = build_train_objects(cfg)
        model = model or built.model
        dataset = dataset or built.dataset
        collate_fn = collate_fn or built.collate_fn
        evaluate_fn = evaluate_fn or built.evaluate_fn
    solver = cfg.solver
    if solver.images_per_batch % world:
        raise ValueError(
            f"solver.images_per_batch = {solver.images_per_batch} is not divisible by the "
            f"{world} processes"
        )
    batch_size = solver.images_per_batch // world

    found = latest_checkpoint(out)
    if found is not None and not resume:
        raise FileExistsError(
            f"{out} already holds checkpoints (latest: {found.name}); pass --resume to continue "
            f"or choose another output directory: nothing was overwritten"
        )
    model.to(device)
    optimizer = build_optimizer(model, solver)
    scheduler = build_scheduler(optimizer, solver)
    use_amp = solver.amp and device.type in ("cuda", "cpu")
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp and device.type == "cuda")

    start_iter = 0
    if resume and found is not None:
        ckpt = load_checkpoint(found)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scaler.load_state_dict(ckpt["scaler"])
        start_iter = int(ckpt["iteration"])
        rng = ckpt["rng"]
        restore_rng_state(rng[rank] if rank < len(rng) else rng[0])

    wrapped = model
    if world > 1:
        wrapped = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            # Mask R-CNN leaves the mask branch unused on a batch without positives
            find_unused_parameters=cfg.model.task == "instance",
        )
    if is_main_process():
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(
            out / "config.yaml",
            lambda f: yaml.safe_dump(config_to_dict(cfg), f, sort_keys=False),
            binary=False,
        )
    log = _MetricsLog(out, is_main_process())
    about = dataset_facts(dataset)

    def save(iteration: int) -> Path:
        states = all_gather_objects(capture_rng_state())
        path = checkpoint_path(out, iteration)
        if is_main_process():
            atomic_save(
                {
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": states,
                    "iteration": iteration,
                    "config": config_to_dict(cfg),
                    **about,
                },
                path,
            )
        return path

    batches_per_epoch = len(epoch_batches(len(dataset), batch_size, cfg.seed, 0))
    last_good = found if resume else None
    iteration = start_iter
    losses_float: dict[str, float] = {}
    metrics: dict = {}
    bar = None
    if progress and is_main_process():
        from tqdm import tqdm

        bar = tqdm(total=solver.max_iter, initial=start_iter, desc="train", dynamic_ncols=True)
    wrapped.train()
    started = time.perf_counter()
    try:
        while iteration < solver.max_iter:
            epoch, offset = divmod(iteration, batches_per_epoch)
            batches = epoch_batches(len(dataset), batch_size, cfg.seed, epoch)[offset:]
            # A generator of its own, so that starting a loader draws nothing from the global RNG
            # (a resumed run starts one more loader than an uninterrupted run).
            seeds = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch * 101 + rank)
            loader = DataLoader(
                dataset,
                batch_sampler=batches,
                collate_fn=collate_fn,
                num_workers=cfg.num_workers,
                generator=seeds,
            )
            for images, targets in loader:
                images, targets = _move(images, device), _move(targets, device)
                with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                    losses = wrapped(images, targets)
                _check_finite(losses, iteration, last_good)
                total = sum(losses.values())
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(total).backward()
                if solver.clip_grad_norm:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), solver.clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                iteration += 1
                losses_float = {k: float(v.detach()) for k, v in losses.items()}
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{float(total.detach()):.3f}")
                if iteration % cfg.log_period == 0 or iteration == solver.max_iter:
                    log.write(
                        {
                            "iter": iteration,
                            "lr": optimizer.param_groups[0]["lr"],
                            "loss": float(total.detach()),
                            **losses_float,
                            "seconds": round(time.perf_counter() - started, 3),
                        }
                    )
                if cfg.checkpoint_period and iteration % cfg.checkpoint_period == 0:
                    last_good = save(iteration)
                if evaluate_fn and cfg.eval_period and iteration % cfg.eval_period == 0:
                    metrics = evaluate_fn(model, iteration)
                    wrapped.train()
                    log.write({"iter": iteration, **_flat_numbers(metrics)})
                if iteration >= solver.max_iter:
                    break
        if not (cfg.checkpoint_period and iteration % cfg.checkpoint_period == 0):
            save(iteration)
        final = out / "model_final.pt"
        if is_main_process():
            atomic_save(
                {
                    "model": model.state_dict(),
                    "config": config_to_dict(cfg),
                    "iteration": iteration,
                    **about,
                },
                final,
            )
        if evaluate_fn and not (cfg.eval_period and iteration % cfg.eval_period == 0):
            metrics = evaluate_fn(model, iteration)
            log.write({"iter": iteration, **_flat_numbers(metrics)})
    finally:
        if bar is not None:
            bar.close()
        log.close()
    return TrainResult(iteration, out, final, losses_float, metrics)


def dataset_facts(dataset: Dataset) -> dict:
    """What inference needs besides the weights: the class count, the class names and, for
    instance data, the label -> category id map (``{label: id of the annotation file}``;
    synthetic data: labels are the category ids)."""
    facts = {}
    n = getattr(dataset, "num_classes", None)
    if n is not None:
        facts["num_classes"] = int(n)
    names = getattr(dataset, "classes", None)  # semantic: class 0 included
    categories = getattr(dataset, "categories", None)
    if not names and categories:  # instance: label 0 is background
        names = ["background", *categories]
        to_category = getattr(dataset, "label_to_category_id", None)
        to_category = to_category or {k: k for k in range(1, len(categories) + 1)}
        facts["label_to_category_id"] = {int(k): int(v) for k, v in to_category.items()}
    if names:
        facts["class_names"] = [str(x) for x in names]  # indexed by the model's labels
    return facts


def _flat_numbers(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat.update(_flat_numbers(v, f"{prefix}{k}/"))
        elif isinstance(v, int | float) and not (isinstance(v, float) and math.isnan(v)):
            flat[f"{prefix}{k}"] = v
    return flat
