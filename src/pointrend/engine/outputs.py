"""The output rules every command follows (``train``, ``eval``, ``predict``, ``export``,
``import-detectron2``), stated in ``docs/training.md`` ("What a command may write"):

* **Nothing the command did not write is replaced without a flag.** An output file that exists
  already, or a folder holding another run's files, is an error naming it unless the command's
  ``--overwrite`` is given. An input of the command (its config, weights, images) is never an
  output, flag or not; a path that exists and is not a regular file (a folder, a device, a pipe)
  is never replaced.
* **One run at a time per output.** A command holds an exclusive lock (``fcntl.flock``) for as
  long as it runs: on ``FOLDER/.pointrend.lock`` for an output folder (``train``, ``predict``),
  on ``.NAME.lock`` beside an output file (``eval --out``, ``export``, ``import-detectron2``);
  the lock file is removed when the command ends. A second command on the same output stops at once with one
  line naming it.
* **Files are complete or absent.** Each file is written atomically (a temporary file renamed
  into place); a run's record grows as it goes (``metrics.jsonl``, ``predictions.jsonl``) and a
  marker says when a run did not finish (``predict.incomplete``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

__all__ = [
    "FolderInUseError",
    "OutputExistsError",
    "LOCK_NAME",
    "check_outputs",
    "check_eval_outputs",
    "check_import_outputs",
    "hold_folder",
    "hold_file",
]

LOCK_NAME = ".pointrend.lock"


class OutputExistsError(FileExistsError):
    """An output would replace a file the command did not write (or one of its inputs)."""


class FolderInUseError(FileExistsError):
    """Another pointrend command holds the lock of this output."""


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # either one is missing: compare the paths as they would resolve
        return a.resolve() == b.resolve()


def check_outputs(
    targets: Iterable[str | Path],
    inputs: Iterable[str | Path] = (),
    overwrite: bool = False,
    flag: str = "--overwrite",
) -> None:
    """Refuse outputs that would destroy something (the rules in the module docstring).

    Args:
        targets: the files the command is about to write.
        inputs: the files it reads (never written over, whatever ``overwrite`` says).
        overwrite: whether the user allowed replacing existing files (``flag``).
    """
    inputs = [Path(p) for p in inputs if p is not None]
    for target in map(Path, targets):
        for source in inputs:
            if _same_file(target, source):
                raise OutputExistsError(
                    f"{target} is also an input of this command ({source}): choose another "
                    "output name; nothing was written"
                )
        if not os.path.lexists(target):
            _check_folder(target)
            continue
        mode = os.lstat(target).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file"
            raise OutputExistsError(
                f"{target} exists and is {kind}: it is never replaced; choose another output "
                "name; nothing was written"
            )
        if not overwrite:
            raise OutputExistsError(
                f"{target} exists: pass {flag} to replace it, or choose another output name; "
                "nothing was written"
            )


def _check_folder(target: Path) -> None:
    """The nearest existing folder above ``target`` must be a folder (not a file) this process
    may write in, so that a command does not find out only when it writes its results."""
    for parent in target.parents:
        if os.path.lexists(parent):
            if not parent.is_dir():
                raise OutputExistsError(
                    f"cannot write {target}: {parent} is a file, not a folder; nothing was written"
                )
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(
                    errno.EACCES, f"no permission to write in the folder {parent}", str(target)
                )
            return


def _lock(lock_path: Path, what: Path) -> int:
    """An open descriptor of ``lock_path`` holding its exclusive lock (or the error). The lock
    file is removed by its holder at the end; a descriptor locked after that removal is of a
    file no longer at ``lock_path``, so the lock is taken again on the file there now."""
    for _ in range(100):
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise FolderInUseError(
                    f"{what} is in use by another pointrend command (it holds {lock_path}): "
                    "wait for it to end or choose another output; nothing was changed"
                ) from None
            raise
        try:
            if os.path.samestat(os.fstat(fd), os.stat(lock_path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed the file between our open and our lock
    raise FolderInUseError(f"{what}: cannot take the lock {lock_path}; nothing was changed")


def _release(fd: int, lock_path: Path) -> None:
    lock_path.unlink(missing_ok=True)  # while still holding it (see _lock)
    os.close(fd)


@contextlib.contextmanager
def hold_folder(folder: str | Path) -> Iterator[Path]:
    """Hold the exclusive lock of an output folder (``FOLDER/.pointrend.lock``, removed at the
    end). The folder is created when missing, and removed again on the way out when it was
    created here and nothing was written into it."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{folder} is a file, not a folder; nothing was written")
    _check_folder(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock_path = folder / LOCK_NAME
    fd = _lock(lock_path, folder)
    try:
        yield folder
    finally:
        _release(fd, lock_path)
        if created and not any(folder.iterdir()):
            with contextlib.suppress(OSError):
                folder.rmdir()


@contextlib.contextmanager
def hold_file(target: str | Path, main_only: bool = False) -> Iterator[Path]:
    """Hold the exclusive lock of an output file (``.NAME.lock`` beside it, removed at the end;
    its folder is created when missing). ``main_only``: in the other processes of a ``torchrun``
    job (``RANK`` > 0), which write nothing, hold nothing."""
    target = Path(target)
    if main_only and int(os.environ.get("RANK", "0")) != 0:
        yield target
        return
    _check_folder(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_path = target.parent / f".{target.name}.lock"
    fd = _lock(lock_path, target)
    try:
        yield target
    finally:
        _release(fd, lock_path)


def check_eval_outputs(out: str | Path | None, inputs: list, overwrite: bool) -> None:
    """``eval --out M.json``: ``M.json`` and the Cityscapes folder ``M_cityscapes/`` (checked
    before the evaluation runs, not after it)."""
    if out is None:
        return
    out = Path(out)
    check_outputs([out], inputs, overwrite)
    folder = out.with_name(f"{out.stem}_cityscapes")
    if folder.exists() and not folder.is_dir():
        raise OutputExistsError(f"{folder} exists and is not a folder; nothing was written")
    if folder.is_dir() and any(folder.iterdir()) and not overwrite:
        raise OutputExistsError(
            f"{folder} holds files: pass --overwrite to write the Cityscapes predictions over "
            "them, or choose another --out; nothing was written"
        )


def check_import_outputs(out: str | Path, inputs: list, overwrite: bool) -> None:
    """``import-detectron2 --out OUT``: the checkpoint ``OUT`` and its config ``OUT.yaml`` (with
    the suffix replaced), two different files."""
    out = Path(out)
    if out.suffix.lower() in (".yaml", ".yml"):
        raise OutputExistsError(
            f"--out {out}: the checkpoint and its config {out.with_suffix('.yaml').name} would be "
            "one file; name the checkpoint .pt (e.g. model.pt); nothing was written"
        )
    check_outputs([out, out.with_suffix(".yaml")], inputs, overwrite)
