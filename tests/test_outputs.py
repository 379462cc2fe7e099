"""The output rules of every command (docs/training.md, "What a command may write"): nothing the
command did not write is replaced without ``--overwrite``, an input is never an output, one
command at a time per output (a lock), records complete up to the last finished image, and one
line for every operating-system error."""

import contextlib
import fcntl
import inspect
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pointrend.cli import main
from pointrend.demo import SHIPPED, WEIGHTS_DIR
from pointrend.engine.checkpoint import CheckpointError, atomic_write
from pointrend.engine.inference import predict_images

WEIGHTS = WEIGHTS_DIR / SHIPPED["pointrend"]  # a small shipped instance model
TINY_TRAIN = {
    "model": {"task": "semantic", "name": "coarse", "arch": "fpn", "backbone": "resnet18"},
    "train_data": {"format": "synthetic", "num_images": 2, "image_size": 64},
    "solver": {"images_per_batch": 2, "max_iter": 1, "warmup_iters": 0},
    "checkpoint_period": 0,
}


def _error(capsys) -> str:
    """The one error line of a failed command (notes and the device line aside; no
    traceback)."""
    err = capsys.readouterr().err
    status = (": note: ", ": device ")
    lines = [line for line in err.splitlines() if not any(s in line for s in status)]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _images(folder: Path, names) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, name in enumerate(names):
        Image.fromarray(np.full((32, 40, 3), 40 * k, np.uint8)).save(folder / name)
    return folder


@contextlib.contextmanager
def _held(folder: Path):
    """Another command's hold on ``folder`` (the lock file of engine/outputs.py)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".pointrend.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    (folder / ".pointrend.lock").unlink()
    folder.rmdir()


def _predict(images, out, *extra) -> int:
    args = ["predict", *map(str, images), "--weights", str(WEIGHTS), "--out", str(out)]
    return main([*args, "--no-progress", "--score-thresh", "0", *extra])


def test_predict_never_writes_over_an_input(tmp_path, capsys):
    folder = _images(tmp_path / "photos", ["x.png", "x_overlay.png"])
    before = (folder / "x_overlay.png").read_bytes()
    assert _predict([folder], folder) == 1  # x.png's overlay is an input
    assert "x_overlay.png is also an input" in _error(capsys)
    assert _predict([folder], folder, "--overwrite") == 1  # flag or not
    assert "x_overlay.png is also an input" in _error(capsys)
    assert (folder / "x_overlay.png").read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["x.png", "x_overlay.png"]


def test_predict_into_an_earlier_run_needs_overwrite(tmp_path, capsys):
    images = _images(tmp_path / "in", ["a.png"])
    out = tmp_path / "out"
    assert _predict([images], out) == 0
    record = json.loads((out / "predictions.json").read_text())
    assert record["complete"] and not (out / "predict.incomplete").exists()
    lines = (out / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["image"] for line in lines] == ["a.png"]
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert _predict([images], out) == 1
    assert "holds an earlier predict run" in _error(capsys)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert _predict([images], out, "--overwrite") == 0


_KILLED_PREDICT = """
import os, sys
from pathlib import Path
from pointrend.engine import inference
real, done = inference._predict_instances, []
def dies_on_the_second(*args):
    if done:
        os._exit(9)  # as the OOM killer would: no exception, no finally
    done.append(1)
    return real(*args)
inference._predict_instances = dies_on_the_second
trained = inference.load_trained_model(sys.argv[1])
paths = inference.list_images([sys.argv[2]])
flag = {"overwrite": True}  # over the earlier run
inference.predict_images(trained, paths, sys.argv[3], 0.0, False, **flag)
"""


def test_a_killed_predict_keeps_every_finished_image_and_is_marked(tmp_path):
    images = _images(tmp_path / "in", ["a.png", "b.png", "c.png"])
    out = tmp_path / "out"
    assert _predict([images / "c.png"], out) == 0  # an earlier run, replaced below
    import pointrend

    env = {**os.environ, "PYTHONPATH": str(Path(pointrend.__file__).parents[1])}
    script = _KILLED_PREDICT
    if "overwrite" not in inspect.signature(predict_images).parameters:  # before the rules
        script = script.replace('{"overwrite": True}', "{}")
    command = [sys.executable, "-c", script, str(WEIGHTS), str(images), str(out)]
    assert subprocess.run(command, env=env, timeout=120).returncode == 9
    assert (out / "predict.incomplete").is_file()
    assert not (out / "predictions.json").exists()  # the earlier run's is not left to mislead
    (line,) = (out / "predictions.jsonl").read_text().splitlines()
    record = json.loads(line)
    assert record["image"] == "a.png" and record["file"] == str(images / "a.png")
    ids = np.asarray(Image.open(out / "a_instances.png"))
    assert 0 < ids.max() <= len(record["result"])  # ids index the record's list


def test_two_runs_into_one_folder_exactly_one_runs(tmp_path, capsys):
    import yaml

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(TINY_TRAIN))
    run = tmp_path / "run"
    with _held(run):  # the first run, still going
        assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 1
        line = _error(capsys)
        assert str(run) in line and "in use by another pointrend command" in line
        from pointrend.engine.outputs import FolderInUseError, hold_folder

        with pytest.raises(FolderInUseError), hold_folder(run):
            pass
    assert not run.exists()  # nothing was written by either
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    names = {p.name for p in run.iterdir()}
    assert "model_final.pt" in names and ".pointrend.lock" not in names  # the lock is gone


def test_predict_refuses_a_folder_in_use(tmp_path, capsys):
    images = _images(tmp_path / "in", ["a.png"])
    with _held(tmp_path / "out"):
        assert _predict([images], tmp_path / "out") == 1
        assert "in use by another pointrend command" in _error(capsys)


def test_eval_and_export_never_replace_a_file_they_did_not_write(tmp_path, capsys):
    config = Path(__file__).parents[1] / "configs" / "synthetic_instance_pointrend_r18.yaml"
    metrics = tmp_path / "metrics.json"
    metrics.write_text("my notes")
    base = ["eval", str(config), "--weights", str(WEIGHTS), "--no-progress"]
    assert main([*base, "--out", str(metrics)]) == 1  # refused before evaluating
    assert "metrics.json exists: pass --overwrite" in _error(capsys)
    assert main([*base, "--out", str(config), "--overwrite"]) == 1
    assert "is also an input" in _error(capsys)
    assert main([*base, "--out", str(metrics / "m.json")]) == 1
    assert "is a file, not a folder" in _error(capsys)
    assert metrics.read_text() == "my notes"
    with open(tmp_path / ".new.json.lock", "w") as held:  # another eval writing new.json
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert main([*base, "--out", str(tmp_path / "new.json")]) == 1
        assert "new.json is in use by another pointrend command" in _error(capsys)
    model = tmp_path / "model.onnx"
    model.write_text("an earlier export")
    export = ["export", str(config), "--weights", str(WEIGHTS), "--out"]
    assert main([*export, str(model)]) == 1
    assert "model.onnx exists: pass --overwrite" in _error(capsys)
    assert main([*export, str(WEIGHTS), "--overwrite"]) == 1
    assert "is also an input" in _error(capsys)
    assert model.read_text() == "an earlier export"


def _fake_import(monkeypatch):
    """import-detectron2 with a tiny stand-in model (the checks under test come first)."""
    import pointrend.interop.detectron2 as d2

    spec = {"task": "instance", "name": "pointrend", "arch": "fpn", "backbone": "resnet18"}
    spec.update(num_classes=2, options={})

    def imported(checkpoint, d2_config=None, zoo=None):
        return d2.ImportedModel(torch.nn.Linear(2, 2), spec, ["bg", "a"], {})

    monkeypatch.setattr(d2, "import_detectron2", imported)


def test_import_detectron2_destroys_nothing(tmp_path, capsys, monkeypatch):
    _fake_import(monkeypatch)
    d2_config = tmp_path / "config.yaml"
    d2_config.write_text("MODEL: {}\n")
    pkl = tmp_path / "model_final.pkl"
    pkl.write_bytes(b"weights")
    run = ["import-detectron2", str(pkl), "--d2-config", str(d2_config), "--out"]
    assert main([*run, str(tmp_path / "m.pt")]) == 0
    (tmp_path / "m.yaml").write_text("# my edits\n")
    assert main([*run, str(tmp_path / "m.pt")]) == 1  # OUT.yaml is the user's to edit
    assert "m.pt exists: pass --overwrite" in _error(capsys)
    assert (tmp_path / "m.yaml").read_text() == "# my edits\n"
    assert main([*run, str(tmp_path / "m.pt"), "--overwrite"]) == 0
    assert main([*run, str(tmp_path / "x.yaml")]) == 1  # checkpoint and config: one file
    assert "would be one file" in _error(capsys)
    assert main([*run, str(tmp_path / "config.pt"), "--overwrite"]) == 1  # config.yaml: input
    assert "config.yaml is also an input" in _error(capsys)
    assert d2_config.read_text() == "MODEL: {}\n" and pkl.read_bytes() == b"weights"
    os.mkfifo(tmp_path / "pipe")  # like a device node: never replaced by a regular file
    assert main([*run, str(tmp_path / "pipe"), "--overwrite"]) == 1
    assert "not a regular file" in _error(capsys)
    assert not (tmp_path / "pipe").is_file()


def test_atomic_write_reports_os_errors_naming_the_file(tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match=r"cannot write .*a_file/sub/m\.pt"):
        atomic_write(blocker / "sub" / "m.pt", lambda f: f.write(b"1"))

    def no_permission(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr("tempfile.mkstemp", no_permission)
    with pytest.raises(CheckpointError, match=r"cannot write .*m\.pt: Permission denied"):
        atomic_write(tmp_path / "m.pt", lambda f: f.write(b"1"))


def test_os_errors_and_ctrl_c_are_one_line(tmp_path, capsys, monkeypatch):
    images = _images(tmp_path / "in", ["a.png"])
    (tmp_path / "a_file").write_text("x")
    assert _predict([images], tmp_path / "a_file" / "out") == 1
    assert "a_file" in _error(capsys)
    import pointrend.cli as cli

    def interrupted(args):
        raise KeyboardInterrupt

    def denied(args):
        raise PermissionError(13, "Permission denied", "/some/where")

    monkeypatch.setattr(cli, "_run_data_synth", interrupted)
    assert main(["data", "synth", "--task", "instance", "--out", str(tmp_path / "d")]) == 130
    assert _error(capsys) == "pointrend data: interrupted"
    monkeypatch.setattr(cli, "_run_data_synth", denied)
    assert main(["data", "synth", "--task", "instance", "--out", str(tmp_path / "d")]) == 1
    assert _error(capsys) == "pointrend data: error: Permission denied: /some/where"


def test_ctrl_c_in_predict_leaves_a_marked_complete_record(tmp_path, capsys, monkeypatch):
    from pointrend.engine import inference

    images = _images(tmp_path / "in", ["a.png", "b.png"])
    real, calls = inference._predict_instances, []

    def interrupted_on_the_second(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(inference, "_predict_instances", interrupted_on_the_second)
    out = tmp_path / "out"
    assert _predict([images], out) == 130
    assert _error(capsys) == "pointrend predict: interrupted"
    record = json.loads((out / "predictions.json").read_text())
    assert record["complete"] is False and list(record["images"]) == ["a.png"]
    assert (out / "predict.incomplete").is_file()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 1


def test_an_output_folder_without_write_permission_is_found_first(tmp_path, capsys, monkeypatch):
    config = Path(__file__).parents[1] / "configs" / "synthetic_instance_pointrend_r18.yaml"
    real = os.access
    monkeypatch.setattr(
        os, "access", lambda p, mode, **k: Path(p) != tmp_path and real(p, mode, **k)
    )
    argv = ["eval", str(config), "--weights", str(WEIGHTS), "--out", str(tmp_path / "m.json")]
    assert main(argv) == 1  # before evaluating (as root every folder is writable: simulated)
    line = _error(capsys)
    assert f"no permission to write in the folder {tmp_path}: {tmp_path / 'm.json'}" in line
