"""Runs that never lose or mix work: output-folder rules, divergence, temporary files, errors."""

import errno
import json
import os
import stat

import pytest
import torch
import yaml
from engine_toys import ToyDataset, ToyModel
from test_engine import run, toy_config

from pointrend.engine import CheckpointError, ConfigError, NonFiniteLossError, load_checkpoint
from pointrend.engine.checkpoint import atomic_write, latest_checkpoint
from pointrend.engine.run_dir import NothingToResumeError, RunExistsError


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def _metrics(folder):
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("event") != "start"]


def test_folder_with_only_model_final_is_not_overwritten_without_a_flag(tmp_path):
    run(toy_config(tmp_path, max_iter=4))
    for p in tmp_path.glob("model_0*.pt"):  # users prune the intermediates
        p.unlink()
    before = _snapshot(tmp_path)
    with pytest.raises(RunExistsError, match=r"model_final\.pt found.*--resume.*--overwrite"):
        run(toy_config(tmp_path, max_iter=4, lr=0.05))
    assert _snapshot(tmp_path) == before
    with pytest.raises(NothingToResumeError, match=r"only model_final\.pt.*no checkpoint"):
        run(toy_config(tmp_path, max_iter=4), resume=True)
    assert _snapshot(tmp_path) == before


def test_overwrite_starts_again_with_one_run_in_metrics(tmp_path):
    run(toy_config(tmp_path, max_iter=8))
    run(toy_config(tmp_path, max_iter=4, lr=0.05), overwrite=True)
    assert [r["iter"] for r in _metrics(tmp_path)] == [1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.glob("model_*.pt")) == [
        "model_0000004.pt",
        "model_final.pt",
    ]
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["solver"]["lr"] == 0.05


def test_resume_into_missing_folder_is_an_error_and_creates_nothing(tmp_path):
    with pytest.raises(NothingToResumeError, match="does not exist"):
        run(toy_config(tmp_path / "typo"), resume=True)
    assert not (tmp_path / "typo").exists()


def test_resume_of_a_finished_run_needs_a_higher_max_iter(tmp_path):
    run(toy_config(tmp_path, max_iter=4))
    final = (tmp_path / "model_final.pt").read_bytes()
    with pytest.raises(RunExistsError, match="finished.*max_iter"):
        run(toy_config(tmp_path, max_iter=4), resume=True)
    assert (tmp_path / "model_final.pt").read_bytes() == final
    run(toy_config(tmp_path, max_iter=8), resume=True)
    assert load_checkpoint(tmp_path / "model_final.pt")["iteration"] == 8


def test_divergence_names_a_checkpoint_that_resumes_with_a_lower_lr(tmp_path):
    # lr 1e4 with momentum: the weights grow each step until the loss overflows
    cfg = toy_config(tmp_path, max_iter=12, period=1, lr="1e4", warmup_iters=0)
    with pytest.raises(NonFiniteLossError, match=r"last good checkpoint is \S+model_\d+\.pt") as e:
        run(cfg)
    named = latest_checkpoint(tmp_path)
    assert str(named) in str(e.value)  # the one --resume takes
    weights = load_checkpoint(named)["model"]
    assert all(torch.isfinite(v).all() for v in weights.values())
    model = run(toy_config(tmp_path, max_iter=12, period=1, lr=0.1, warmup_iters=0), resume=True)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert _metrics(tmp_path)[-1]["iter"] == 12


def test_resume_uses_the_config_lr_and_continues_seconds(tmp_path):
    run(toy_config(tmp_path, max_iter=4))
    seconds = _metrics(tmp_path)[-1]["seconds"]
    run(toy_config(tmp_path, max_iter=8, lr=0.05), resume=True)
    records = _metrics(tmp_path)
    assert [r["iter"] for r in records] == list(range(1, 9))
    assert records[4]["seconds"] > seconds  # the clock goes on from the checkpoint
    assert records[4]["lr"] == pytest.approx(0.05)  # the new base lr ...
    assert records[5]["lr"] == pytest.approx(0.005)  # ... on the config's schedule (step at 6)
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["solver"]["lr"] == 0.1
    resumed = yaml.safe_load((tmp_path / "config_resumed_0000004.yaml").read_text())
    assert resumed["solver"]["lr"] == 0.05 and resumed["solver"]["max_iter"] == 8


def test_resume_drops_records_logged_after_the_checkpoint(tmp_path):
    run(toy_config(tmp_path, max_iter=4))
    with open(tmp_path / "metrics.jsonl", "a") as f:  # a run killed at 5, its last line torn
        f.write(json.dumps({"iter": 5, "loss": 1.0}) + '\n{"iter": 6, "lo')
    run(toy_config(tmp_path, max_iter=6), resume=True)
    assert [r["iter"] for r in _metrics(tmp_path)] == [1, 2, 3, 4, 5, 6]


def test_resume_with_another_model_config_is_an_error(tmp_path):
    run(toy_config(tmp_path, max_iter=4))
    cfg = toy_config(tmp_path, max_iter=8)
    cfg.model.options = {"min_size": 256}
    with pytest.raises(ConfigError, match=r"model config differs.*model\.options\.min_size"):
        run(cfg, resume=True)
    assert not (tmp_path / "model_0000008.pt").exists()


class _NamedToys(ToyDataset):
    num_classes = 3


def test_resume_with_another_class_count_is_one_line(tmp_path):
    run(toy_config(tmp_path, max_iter=4), dataset=_NamedToys())
    more = _NamedToys()
    more.num_classes = 5
    with pytest.raises(ConfigError, match="trained with 3 classes, train_data has 5") as e:
        run(toy_config(tmp_path, max_iter=8), resume=True, dataset=more)
    assert "\n" not in str(e.value)
    wider = ToyModel()
    wider.conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    with pytest.raises(CheckpointError, match=r"conv\.weight is \(2, 3, 3, 3\).*\(5, 3, 3, 3\)"):
        run(toy_config(tmp_path, max_iter=8), resume=True, model=wider)


def test_stale_temporary_files_are_removed_at_start(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    stale = [tmp_path / ".model_0000004.pt.x1y2.tmp", tmp_path / ".config.yaml.abc.tmp"]
    for p in stale:
        p.write_bytes(b"x" * 100)
    other = tmp_path / ".notes.txt.abc.tmp"  # not of the run's naming: kept
    other.write_text("mine")
    run(toy_config(tmp_path, max_iter=4))
    assert not any(p.exists() for p in stale) and other.exists()


def test_atomic_write_gives_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        path = atomic_write(tmp_path / "a.txt", lambda f: f.write("x"), binary=False)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


class _FullDisk:
    """A file whose writes fail as on a full disk."""

    def __init__(self, f):
        self.f = f

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self.f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()


def test_full_disk_while_saving_is_one_line_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    real = os.fdopen
    opened = []

    def fdopen(fd, mode="r", *args):
        f = real(fd, mode, *args)
        opened.append(mode)
        return _FullDisk(f) if opened.count("wb") > 1 else f  # the first checkpoint fits

    monkeypatch.setattr(os, "fdopen", fdopen)
    with pytest.raises(CheckpointError, match="No space left on device") as e:
        run(toy_config(tmp_path, max_iter=8, period=2))
    assert "\n" not in str(e.value) and "model_0000004.pt" in str(e.value)
    monkeypatch.setattr(os, "fdopen", real)
    assert load_checkpoint(tmp_path / "model_0000002.pt")["iteration"] == 2
    assert not list(tmp_path.glob(".*.tmp"))


class _NormToy(ToyModel):
    """The toy with batch norm: buffers that every forward pass changes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(2)
        self.conv = torch.nn.Sequential(
            torch.nn.Conv2d(3, 2, 3, padding=1), torch.nn.BatchNorm2d(2)
        )


def test_checkpoints_hold_the_buffers_of_their_iteration(tmp_path):
    # a checkpoint is written after the next forward pass, which updates batch-norm statistics:
    # it must still hold those of its own iteration, so that the resumed run is the same run
    full = run(toy_config(tmp_path / "full"), model=_NormToy())
    run(toy_config(tmp_path / "half", max_iter=6), model=_NormToy())  # checkpoint at 4 and 6
    ckpt = load_checkpoint(tmp_path / "half" / "model_0000004.pt")
    (tmp_path / "half" / "model_0000006.pt").unlink()
    (tmp_path / "half" / "model_final.pt").unlink()
    resumed = run(toy_config(tmp_path / "half"), model=_NormToy(), resume=True)
    assert ckpt["model"]["conv.1.num_batches_tracked"] == 4
    for k, v in full.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[k], v, rtol=0, atol=0)
