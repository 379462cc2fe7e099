"""Devices and processes: the one device rule, and torch.distributed for one process or many.

Every command and loader picks its device with :func:`resolve_device`:

* ``auto``: CUDA when it is available (``cuda:LOCAL_RANK`` under ``torchrun``), else the CPU;
* ``cpu``;
* ``cuda``: like ``auto`` but an error when CUDA is not available;
* ``cuda:N``: GPU ``N`` in one process; under ``torchrun`` with several processes each process
  uses ``cuda:LOCAL_RANK``, so an index is refused there.

Anything else (``gpu``, ``cuda:7`` on a machine with one GPU) is a :class:`DeviceError` naming
the value, never a silent CPU run.

Under ``torchrun`` (``LOCAL_RANK`` in the environment) :func:`init_distributed` creates the
process group even for one process, NCCL on GPUs and gloo on the CPU, so that
``torchrun --nproc_per_node=1`` runs the same code as eight GPUs; :func:`cleanup_distributed`
destroys it. Tensors that reach a collective must live on the run's device: NCCL accepts no
other (gloo accepts anything).
"""

from __future__ import annotations

import os
import re
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DeviceError",
    "check_device_name",
    "resolve_device",
    "init_distributed",
    "is_distributed",
    "get_rank",
    "get_world_size",
    "is_main_process",
    "all_gather_objects",
    "barrier",
    "cleanup_distributed",
    "under_torchrun",
    "default_num_workers",
    "resolve_amp",
    "precision_name",
    "describe_run",
    "run_facts",
]

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
_CUDA_INDEX = re.compile(r"^cuda:(\d+)$")


class DeviceError(ValueError):
    """A device that is misspelt or not present on this machine."""


def under_torchrun() -> bool:
    """Whether this process was started by ``torchrun`` (it sets ``LOCAL_RANK``)."""
    return "LOCAL_RANK" in os.environ


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def _world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def check_device_name(spec: str | torch.device | None) -> None:
    """A :class:`DeviceError` when ``spec`` is not one of the names the rule knows (whether the
    device exists is :func:`resolve_device`'s question)."""
    text = "auto" if spec is None else str(spec).strip().lower()
    if text not in ("auto", "cpu", "cuda") and _CUDA_INDEX.match(text) is None:
        raise DeviceError(f"device must be {DEVICE_CHOICES}, got {spec!r}")


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The device that ``spec`` names on this machine, by the rule of the module docstring (a
    ``torch.device`` is taken as already chosen)."""
    if isinstance(spec, torch.device):
        return spec
    text = "auto" if spec is None else str(spec).strip().lower()
    cuda = torch.cuda.is_available()
    if text == "cpu":
        return torch.device("cpu")
    if text == "auto" and not cuda:
        return torch.device("cpu")
    check_device_name(spec)
    match = _CUDA_INDEX.match(text)
    if not cuda:
        raise DeviceError(
            f"device {spec!r}: CUDA is not available on this machine (torch "
            f"{torch.__version__}, built for CUDA {torch.version.cuda}); use device cpu or auto"
        )
    count = torch.cuda.device_count()
    if match is None:
        index = _local_rank() if under_torchrun() else torch.cuda.current_device()
    else:
        index = int(match.group(1))
        if under_torchrun() and _world_size_from_env() > 1:
            raise DeviceError(
                f"device {spec!r}: under torchrun each process uses cuda:LOCAL_RANK; "
                "set device to cuda or auto (choose GPUs with CUDA_VISIBLE_DEVICES)"
            )
    if index >= count:
        raise DeviceError(f"device {spec!r}: this machine has {count} CUDA device(s)")
    return torch.device("cuda", index)


_AMP = {
    "false": None,
    "off": None,
    "fp32": None,
    "fp16": torch.float16,
    "float16": torch.float16,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
}
AMP_CHOICES = "fp16, bf16, true (fp16 on CUDA, bf16 on the CPU) or false"


def resolve_amp(spec: bool | str | None, device: torch.device) -> torch.dtype | None:
    """The autocast dtype that ``spec`` asks for on ``device`` (``None``: float32).

    ``spec``: ``False`` / ``"false"`` / ``"off"`` / ``"fp32"`` (none), ``"fp16"``, ``"bf16"``, or
    ``True`` / ``"true"`` / ``"auto"`` (float16 on CUDA, bfloat16 elsewhere). bfloat16 needs a GPU
    that supports it; float16 and bfloat16 both work on the CPU.
    """
    if spec is None or spec is False:
        return None
    text = str(spec).strip().lower()
    if spec is True or text in ("true", "auto", "on"):
        return torch.float16 if device.type == "cuda" else torch.bfloat16
    if text not in _AMP:
        raise DeviceError(f"amp must be {AMP_CHOICES}, got {spec!r}")
    dtype = _AMP[text]
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise DeviceError(f"amp {spec!r}: {torch.cuda.get_device_name(device)} has no bfloat16")
    return dtype


def precision_name(dtype: torch.dtype | None) -> str:
    """``fp32``, ``fp16`` or ``bf16``: how logs name an autocast dtype."""
    return {None: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}[dtype]


def describe_run(device: torch.device, amp_dtype: torch.dtype | None) -> str:
    """One line for the start of a run: device (and GPU name), precision, world size."""
    where = str(device)
    if device.type == "cuda":
        where += f" ({torch.cuda.get_device_name(device)})"
    return f"device {where}, precision {precision_name(amp_dtype)}, world size {get_world_size()}"


def run_facts(device: torch.device, amp_dtype: torch.dtype | None) -> dict:
    """What a log records about where a run ran: device, GPU, precision, world size, versions."""
    from .._version import __version__

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {
        "device": str(device),
        "gpu": gpu,
        "precision": precision_name(amp_dtype),
        "world_size": get_world_size(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "pointrend": __version__,
    }


def default_num_workers() -> int:
    """Data-loading processes for each training process: the cores of this process's share of
    the machine, one kept for the main process, at most 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(4, (cores or 1) // local - 1))


def init_distributed(device: str | torch.device | None = "auto") -> torch.device:
    """The run's device (:func:`resolve_device`), made current; under ``torchrun`` the process
    group is joined (NCCL for CUDA, gloo otherwise), also with a single process."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if under_torchrun() and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return dev


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    return get_rank() == 0


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-element list without distribution)."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup_distributed() -> None:
    """Destroy the process group, if there is one."""
    if is_distributed():
        dist.destroy_process_group()
