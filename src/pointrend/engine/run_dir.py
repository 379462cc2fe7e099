"""A training run's output folder: what may be written there, and the files of a run.

A run writes ``model_NNNNNNN.pt`` checkpoints, ``model_final.pt``, ``config.yaml``,
``metrics.jsonl`` (one JSON record a line) and TensorBoard events under ``tb/``. At start the
folder decides what happens, before anything is written:

* no run files (or no folder): a new run starts there;
* run files without ``--resume`` / ``--overwrite``: error naming the file found;
* ``--resume``: continues from the latest ``model_NNNNNNN.pt``; an error when there is none, or
  when that checkpoint is at ``solver.max_iter`` and ``model_final.pt`` exists (finished);
* ``--overwrite``: deletes the run files (only those names) and starts again.

The folder is held with an exclusive lock for the whole run (:func:`holding_output_dir`,
``FOLDER/.pointrend.lock`` while it runs): a second run started into it, even at the same moment, stops with
one line naming the folder before it reads or writes anything.

Temporary files of an interrupted atomic write (``.model_*.pt.*.tmp`` and the like) are deleted.
On resume, ``metrics.jsonl`` records after the checkpoint's iteration (logged by the interrupted
run after its last checkpoint) are dropped, as the resumed run logs those iterations again.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
from pathlib import Path

from .checkpoint import atomic_write, latest_checkpoint, remove_stale_temp_files
from .outputs import hold_folder

__all__ = [
    "NothingToResumeError",
    "RunExistsError",
    "MetricsLog",
    "holding_output_dir",
    "plan_run",
    "prepare_run_folder",
    "RUN_FILES",
]

# the files a run writes (globs): what --overwrite deletes and what marks a folder as used
RUN_FILES = ("model_*.pt", "config.yaml", "config_resumed_*.yaml", "metrics.jsonl")
_EVENTS = "tb/events.out.tfevents.*"
_ITERATION = re.compile(r"^model_(\d+)\.pt$")


class RunExistsError(FileExistsError):
    """The output folder holds another run and neither ``--resume`` nor ``--overwrite`` was
    given."""


class NothingToResumeError(FileNotFoundError):
    """``--resume`` into a folder without a checkpoint to resume from."""


def holding_output_dir(train):
    """Wrap ``train(cfg, resume=..., ...)`` so that the main process holds ``cfg.output_dir``'s
    lock from before the folder is read until the run ends (other ranks of a ``torchrun`` job,
    ``RANK`` > 0, follow their main process)."""

    @functools.wraps(train)
    def locked(cfg, *args, **kwargs):
        out = Path(cfg.output_dir)
        resume = kwargs.get("resume", args[0] if args else False)
        if int(os.environ.get("RANK", "0")) != 0 or (resume and not out.is_dir()):
            return train(cfg, *args, **kwargs)  # nothing to resume: plan_run says so
        with hold_folder(out):
            return train(cfg, *args, **kwargs)

    return locked


def _run_files(out: Path) -> list[Path]:
    if not out.is_dir():
        return []
    found = {p for pattern in (*RUN_FILES, _EVENTS) for p in out.glob(pattern) if p.is_file()}
    order = {"model_final.pt": 0, "config.yaml": 2, "metrics.jsonl": 3}
    return sorted(found, key=lambda p: (order.get(p.name, 1), p.name))


def plan_run(out: Path, resume: bool, overwrite: bool, max_iter: int) -> Path | None:
    """The checkpoint to resume from (None: a new run), or an error; reads the folder only."""
    if resume and overwrite:
        raise ValueError("--resume and --overwrite exclude each other: choose one")
    files = _run_files(out)
    if not resume:
        if files and not overwrite:
            raise RunExistsError(
                f"{out} holds a run ({files[0].name} found): pass --resume to continue it, "
                f"--overwrite to start again there, or choose another output folder; "
                "nothing was changed"
            )
        return None
    found = latest_checkpoint(out)
    if found is None:
        what = f"only {', '.join(p.name for p in files[:3])}" if files else "no run files"
        where = "does not exist" if not out.is_dir() else f"holds {what}"
        raise NothingToResumeError(
            f"--resume: {out} {where}, no checkpoint model_NNNNNNN.pt to resume from; check the "
            "folder name, or start a new run without --resume; nothing was changed"
        )
    iteration = int(_ITERATION.match(found.name).group(1))
    if iteration >= max_iter and (out / "model_final.pt").is_file():
        raise RunExistsError(
            f"--resume: the run in {out} is finished ({found.name} at solver.max_iter "
            f"{max_iter}, model_final.pt written): raise solver.max_iter to train further, "
            "or pass --overwrite to start again; nothing was changed"
        )
    return found


def prepare_run_folder(out: Path, overwrite: bool, resumed_at: int | None) -> list[Path]:
    """Make the folder ready (main process only): stale temporary files deleted, the old run's
    files deleted when ``overwrite``, ``metrics.jsonl`` cut at ``resumed_at``. Returns the
    deleted files."""
    out.mkdir(parents=True, exist_ok=True)
    deleted = remove_stale_temp_files(out, RUN_FILES)
    if overwrite:
        for p in _run_files(out):
            p.unlink()
            deleted.append(p)
    metrics = out / "metrics.jsonl"
    if resumed_at is not None and metrics.is_file():
        lines = metrics.read_text().splitlines()
        kept = [line for line in lines if _record_iter(line) <= resumed_at]
        if len(kept) < len(lines):
            text = "".join(line + "\n" for line in kept)
            atomic_write(metrics, lambda f: f.write(text), binary=False)
    return deleted


def _record_iter(line: str) -> float:
    try:
        return float(json.loads(line).get("iter", 0))
    except (ValueError, AttributeError):
        return float("inf")  # the torn last line of a killed run: dropped


class MetricsLog:
    """JSON-lines log (and TensorBoard when installed), written by the main process only."""

    def __init__(self, output_dir: Path, enabled: bool):
        self.enabled = enabled
        self.file = None
        self.tb = None
        if not enabled:
            return
        self.file = open(output_dir / "metrics.jsonl", "a")  # noqa: SIM115
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # TensorBoard is optional: the extra pointrend[tensorboard]
            print(
                "pointrend train: note: TensorBoard is not installed (pip install "
                "'pointrend[tensorboard]'); the metrics go to metrics.jsonl only",
                file=sys.stderr,
            )
            return
        self.tb = SummaryWriter(str(output_dir / "tb"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None and "event" not in record:
            for k, v in record.items():
                if k != "iter" and isinstance(v, int | float):
                    self.tb.add_scalar(k, v, record["iter"])

    def close(self) -> None:
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()
