"""Checkpoints: written atomically, read with ``torch.load(..., weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings and containers, so that loading one
from a stranger cannot run code. Writing goes to a temporary file in the same directory, is
flushed and fsync'ed, then renamed over the target: a crash leaves either the old file or the
new one, never half of one. The file gets the mode ``open()`` would give it (``0666`` less the
umask). A write that fails for lack of space or permission raises :class:`CheckpointError` naming
the file and the operating system's reason.
"""

from __future__ import annotations

import os
import random
import re
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "atomic_save",
    "atomic_write",
    "load_checkpoint",
    "latest_checkpoint",
    "checkpoint_path",
    "capture_rng_state",
    "restore_rng_state",
    "load_model_weights",
    "load_matching_weights",
    "load_state_checked",
    "check_finite",
    "remove_stale_temp_files",
]

_PATTERN = re.compile(r"^model_(\d+)\.pt$")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read; the message names the file."""


def _umask() -> int:
    """The process umask, read without changing it where the system allows."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _os_error(err: BaseException) -> OSError | None:
    """The ``OSError`` behind ``err`` (torch wraps a failed write in a ``RuntimeError``)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def atomic_write(path: str | Path, write: Callable[[IO], None], binary: bool = True) -> Path:
    """Write a file atomically: ``write(f)`` into a temporary file beside ``path``, fsync,
    rename over ``path``. On any error the temporary file is removed and ``path`` is untouched;
    an operating-system error (no space, no permission, a file where a folder should be) is a
    :class:`CheckpointError` naming ``path`` and the reason."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb" if binary else "w") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as err:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        cause = _os_error(err)
        if cause is not None:
            reason = cause.strerror or str(cause)
            raise CheckpointError(
                f"cannot write {path}: {reason} (errno {cause.errno}); "
                f"{path.name} was left as it was"
            ) from err
        raise
    return path


def remove_stale_temp_files(folder: str | Path, names: tuple[str, ...]) -> list[Path]:
    """Delete the temporary files ``atomic_write`` leaves when killed mid-write, for targets
    whose name matches one of the glob ``names`` (e.g. ``model_*.pt``). Returns those deleted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted({p for name in names for p in folder.glob(f".{name}.*.tmp") if p.is_file()})
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to ``path`` atomically (temporary file, fsync, rename)."""
    return atomic_write(path, lambda f: torch.save(obj, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint with ``weights_only=True``; a clear error names a missing/corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # corrupt, truncated, or holding objects that need code to load
        kind = _file_kind(path)
        if path.suffix == ".pkl" or kind == "pickle":  # torch.save writes zip archives
            raise CheckpointError(
                f"{path} is not a pointrend checkpoint (a pickle, not a torch.save file); a "
                f"detectron2 checkpoint is converted first: pointrend import-detectron2 {path} "
                "--d2-config CONFIG.yaml (or --zoo NAME) --out model.pt"
            ) from err
        if kind == "other":
            raise CheckpointError(
                f"{path} is not a complete checkpoint written by torch.save (no zip archive in "
                "it: truncated, or another kind of file)"
            ) from err
        lines = str(err).strip().splitlines() or [""]
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(err).__name__}: {lines[0][:200]}"
        ) from err
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict")
    return obj


def _file_kind(path: Path) -> str:
    """``"zip"`` (what ``torch.save`` writes), ``"pickle"`` (protocol 2 or later, e.g. a
    detectron2 ``.pkl``) or ``"other"``."""
    if zipfile.is_zipfile(path):
        return "zip"
    with open(path, "rb") as f:
        return "pickle" if f.read(1) == b"\x80" else "other"


def checkpoint_path(output_dir: str | Path, iteration: int) -> Path:
    return Path(output_dir) / f"model_{iteration:07d}.pt"


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The training checkpoint with the highest iteration in ``output_dir``, if any."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _PATTERN.match(p.name))]
    return max(found)[1] if found else None


def capture_rng_state() -> dict:
    """The RNG states of torch (CPU and CUDA), numpy and Python, as plain containers."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _to_lists(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    random.setstate(_to_tuples(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_lists(x):
    return [_to_lists(v) for v in x] if isinstance(x, tuple | list) else x


def _to_tuples(x):
    return tuple(_to_tuples(v) for v in x) if isinstance(x, list) else x


def check_finite(state: dict, path: str | Path) -> None:
    """Refuse weights holding NaN or infinity (a model that would detect nothing), naming the
    first such key."""
    for key, value in state.items():
        if torch.is_tensor(value) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise CheckpointError(
                    f"weights in {path}: {key} holds {bad} non-finite value(s) (NaN or "
                    "infinity): the checkpoint is broken; use an earlier one"
                )


def load_state_checked(model: torch.nn.Module, state: dict, path: str | Path) -> None:
    """``model.load_state_dict(state)``; a mismatch is one line naming the file and the first
    differing key (and both shapes), not torch's list of every key; non-finite weights are
    refused (:func:`check_finite`)."""
    check_finite(state, path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if wrong:
        k = wrong[0]
        raise CheckpointError(
            f"weights in {path} do not fit the model: {k} is {tuple(state[k].shape)} in the "
            f"file, {tuple(own[k].shape)} in the model ({len(wrong)} tensor(s) differ; "
            "a different class count or model config?)"
        )
    if missing or unexpected:
        first = (missing or unexpected)[0]
        raise CheckpointError(
            f"weights in {path} do not fit the model: {len(missing)} key(s) missing "
            f"({len(unexpected)} unexpected), e.g. {first!r}; a different model config?"
        )
    model.load_state_dict(state)


def checkpoint_state(ckpt: dict) -> dict:
    """The float32 state dict of a loaded checkpoint (int8 / fp16 shipped weights restored)."""
    state = dict(ckpt.get("model", ckpt))
    scales = ckpt.get("int8_scales", {})  # shipped checkpoints: int8 weights, one scale a row
    for k, v in state.items():
        if k in scales:
            state[k] = (v.float().reshape(v.shape[0], -1) * scales[k][:, None]).reshape(v.shape)
        elif torch.is_tensor(v) and v.dtype == torch.float16:
            state[k] = v.float()
    return state


def load_model_weights(model: torch.nn.Module, path: str | Path) -> dict:
    """Load model weights from a training checkpoint or a bare state dict (``weights_only``).

    Returns the checkpoint dict. Mismatched keys or shapes raise an error naming the file.
    """
    ckpt = load_checkpoint(path)
    load_state_checked(model, checkpoint_state(ckpt), path)
    return ckpt


def load_matching_weights(model: torch.nn.Module, path: str | Path) -> list[str]:
    """Load the weights of checkpoint ``path`` whose key and shape the model has (to fine-tune
    on other classes); returns the model's keys left as initialised. None matching is an error."""
    state = checkpoint_state(load_checkpoint(path))
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    check_finite(matching, path)
    if not matching:
        raise CheckpointError(f"{path}: no weight fits the model (another architecture?)")
    model.load_state_dict(matching, strict=False)
    return sorted(set(own) - set(matching))
