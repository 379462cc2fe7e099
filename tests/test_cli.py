"""The ``pointrend`` command end to end on tiny real models: train, eval, predict, torchrun."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pointrend.cli import format_table, main
from pointrend.engine import load_checkpoint
from pointrend.engine.inference import load_trained_model, num_classes_from_state

TINY_SEMANTIC = [
    "model.task=semantic",
    "model.name=pointrend",
    "model.arch=fpn",
    "model.backbone=resnet18",
    "model.options={train_num_points: 64, subdivision_num_points: 256}",
    "train_data.format=synthetic",
    "train_data.num_images=8",
    "train_data.image_size=64",
    "val_data={format: synthetic, num_images: 3, image_size: 64, seed: 7}",
    "solver.images_per_batch=2",
    "solver.max_iter=2",
    "solver.warmup_iters=1",
    "checkpoint_period=0",
    "log_period=1",
]

TINY_INSTANCE = [
    "model.task=instance",
    "model.name=pointrend",
    "model.backbone=resnet18",
    "model.options={min_size: 64, max_size: 64, box_head_dim: 32, box_score_thresh: 0.0,"
    " rpn_batch_size_per_image: 32, box_batch_size_per_image: 16, box_detections_per_img: 5,"
    " mask_output_size: 28}",
    "train_data.format=synthetic",
    "train_data.num_images=4",
    "train_data.image_size=64",
    "val_data={format: synthetic, num_images: 2, image_size: 64, seed: 7}",
    "solver.images_per_batch=2",
    "solver.max_iter=1",
    "solver.warmup_iters=1",
    "checkpoint_period=0",
    "log_period=1",
]


def _config(path, lines):
    """A YAML config file from ``key=value`` lines (the same syntax as --set)."""
    import yaml

    from pointrend.engine.config import apply_overrides

    path.write_text(yaml.safe_dump(apply_overrides({}, lines)))
    return path


@pytest.fixture(scope="module")
def semantic_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("semantic")
    cfg = _config(root / "tiny.yaml", TINY_SEMANTIC)
    assert main(["train", str(cfg), "--out", str(root / "run"), "--no-progress"]) == 0
    return cfg, root / "run" / "model_final.pt"


@pytest.fixture(scope="module")
def instance_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("instance")
    cfg = _config(root / "tiny.yaml", TINY_INSTANCE)
    assert main(["train", str(cfg), "--out", str(root / "run"), "--no-progress"]) == 0
    return cfg, root / "run" / "model_final.pt"


def _write_images(folder, sizes):
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"im{i}.png")
    (folder / "broken.png").write_bytes(b"not a png at all")
    return folder


def test_checkpoint_records_classes_and_model_rebuilds_from_it(semantic_run):
    _, weights = semantic_run
    ckpt = load_checkpoint(weights)
    assert ckpt["num_classes"] == 8 and ckpt["class_names"][0] == "background"
    assert num_classes_from_state("semantic", ckpt["model"]) == 8
    trained = load_trained_model(weights)  # no config given: the checkpoint's own
    assert trained.num_classes == 8 and not trained.model.training
    x = torch.rand(1, 3, 50, 70)
    assert trained.model(x)["out"].shape == (1, 8, 50, 70)


def test_eval_prints_table_and_writes_json(semantic_run, tmp_path, capsys):
    cfg, weights = semantic_run
    out = tmp_path / "metrics.json"
    assert (
        main(["eval", str(cfg), "--weights", str(weights), "--out", str(out), "--no-progress"]) == 0
    )
    metrics = json.loads(out.read_text())
    assert 0.0 <= metrics["mIoU"] <= 100.0
    assert "mIoU" in capsys.readouterr().out


def test_eval_without_val_data_is_one_line_error(semantic_run, tmp_path, capsys):
    cfg, weights = semantic_run
    code = main(["eval", str(cfg), "--weights", str(weights), "--set", "val_data=null"])
    assert code == 1
    assert "val_data is not set" in capsys.readouterr().err


def test_predict_semantic_folder_skips_unreadable_image(semantic_run, tmp_path, capsys):
    _, weights = semantic_run
    images = _write_images(tmp_path / "images", [(48, 64), (37, 53)])
    out = tmp_path / "out"
    code = main(
        ["predict", str(images), "--weights", str(weights), "--out", str(out), "--no-progress"]
    )
    assert code == 1  # one image failed, the others were still written
    captured = capsys.readouterr()
    assert "broken.png" in captured.err and "2 of 3 images" in captured.out
    labels = np.asarray(Image.open(out / "im1_labels.png"))
    assert labels.shape == (37, 53) and labels.max() < 8
    assert np.asarray(Image.open(out / "im0_overlay.png")).shape == (48, 64, 3)
    assert not (out / "broken_labels.png").exists()


def test_predict_instance_writes_ids_overlays_and_coco_json(instance_run, tmp_path, capsys):
    _, weights = instance_run
    images = _write_images(tmp_path / "images", [(64, 64), (60, 72)])
    out = tmp_path / "out"
    code = main(
        [
            "predict",
            str(images / "im0.png"),
            str(images / "im1.png"),
            "--weights",
            str(weights),
            "--out",
            str(out),
            "--score-thresh",
            "0",
            "--no-progress",
        ]
    )
    assert code == 0
    preds = json.loads((out / "predictions.json").read_text())["images"]
    assert set(preds) == {"im0.png", "im1.png"}
    ids = np.asarray(Image.open(out / "im1_instances.png"))
    assert ids.shape == (60, 72)
    records = preds["im1.png"]
    assert len(records) > 0  # score threshold 0: the untrained model still detects
    assert ids.max() <= len(records)
    from pycocotools import mask as mask_utils

    for r in records:
        rle = dict(r["segmentation"], counts=r["segmentation"]["counts"].encode())
        mask = mask_utils.decode(rle)
        assert tuple(mask.shape) == (60, 72)
        assert mask[ids == r["instance_id"]].all()  # an id is only drawn inside its own mask
    assert "instances" in capsys.readouterr().out


def test_predict_missing_path_is_clear_error(semantic_run, tmp_path, capsys):
    _, weights = semantic_run
    code = main(
        [
            "predict",
            str(tmp_path / "nope.png"),
            "--weights",
            str(weights),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 1 and "nope.png" in capsys.readouterr().err


def test_format_table_aligns_columns():
    text = format_table([{"a": 1, "long name": "x"}, {"a": 100, "long name": "yy"}])
    lines = text.splitlines()
    assert lines[0].index("long name") == lines[2].index("x") == lines[3].index("yy")


def test_every_command_has_help(capsys):
    for command in ("train", "eval", "predict", "data"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        assert "usage: pointrend " + command in capsys.readouterr().out


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("pointrend train: error: "), err
    return err


def test_train_refuses_a_finished_folder_and_a_resume_with_nothing(tmp_path, capsys):
    cfg = _config(tmp_path / "tiny.yaml", TINY_SEMANTIC)
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_final.pt").write_bytes(b"weights of an earlier run")
    (run / "metrics.jsonl").write_text('{"iter": 1}\n')
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 1
    assert "model_final.pt found" in _one_line_error(capsys)
    assert main(["train", str(cfg), "--out", str(run), "--resume", "--no-progress"]) == 1
    assert "no checkpoint model_NNNNNNN.pt" in _one_line_error(capsys)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    missing = tmp_path / "rnu"
    assert main(["train", str(cfg), "--out", str(missing), "--resume", "--no-progress"]) == 1
    assert "does not exist" in _one_line_error(capsys) and not missing.exists()
    both = ["train", str(cfg), "--out", str(run), "--resume", "--overwrite"]
    assert main(both) == 1
    assert "choose one" in _one_line_error(capsys)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["solver.images_per_batch=0"], "solver.images_per_batch must be at least 1, got 0"),
        (["solver.max_iter=0"], "solver.max_iter must be at least 1, got 0"),
        (["train_data=null"], "train_data.format is not set"),
        (["solver.lr=fast"], "solver.lr: expected float, got 'fast'"),
    ],
)
def test_train_config_errors_are_one_line(tmp_path, capsys, lines, message):
    cfg = _config(tmp_path / "tiny.yaml", [*TINY_SEMANTIC, *lines])
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 1
    err = _one_line_error(capsys)
    assert "tiny.yaml" in err and message in err
    assert not (tmp_path / "run").exists()


def test_eval_uses_the_model_config_of_the_checkpoint(semantic_run, tmp_path, capsys):
    _, weights = semantic_run
    other = [*TINY_SEMANTIC[:4], "model.options={train_num_points: 64, subdivision_num_points: 32}"]
    cfg = _config(tmp_path / "other.yaml", [*other, *TINY_SEMANTIC[5:]])
    assert main(["eval", str(cfg), "--weights", str(weights), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "built from the config stored in" in err
    assert "model.options.subdivision_num_points: 256 in the checkpoint, 32 in the config" in err


def test_torchrun_two_processes_train_the_real_cli(tmp_path):
    """``torchrun --nproc_per_node=2 -m pointrend train`` on gloo: one set of outputs."""
    cfg = _config(tmp_path / "tiny.yaml", [*TINY_SEMANTIC, "val_data=null"])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--standalone",
        "-m",
        "pointrend",
        "train",
        str(cfg),
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("trained 2 iterations") == 1  # rank 0 alone reports
    ckpt = load_checkpoint(tmp_path / "run" / "model_final.pt")
    assert ckpt["iteration"] == 2


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_config_loads_and_builds_its_model(path):
    import dataclasses

    from pointrend.engine import load_config
    from pointrend.engine.build import build_model

    cfg = load_config(path)
    assert cfg.solver.max_iter > 0 and cfg.output_dir
    # no download in tests: the same model without the pretrained weights
    model_cfg = dataclasses.replace(cfg.model, weights=None, weights_backbone=None)
    model = build_model(model_cfg, 5)
    assert sum(p.numel() for p in model.parameters()) > 0
