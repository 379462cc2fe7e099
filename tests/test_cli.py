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
    env = dict(os.environ, OMP_NUM_THREADS="1", TMPDIR=str(tmp_path))  # torchrun's scratch too
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


def _predict(weights, inputs, out, *extra):
    args = ["predict", *map(str, inputs), "--weights", str(weights), "--out", str(out)]
    return main([*args, "--no-progress", *extra])


def test_predict_instance_images_without_detections_are_normal_results(instance_run, tmp_path):
    _, weights = instance_run
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(folder / "black.png")
    Image.fromarray(np.full((1, 1, 3), 90, np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.full((64, 4000, 3), 150, np.uint8)).save(folder / "strip.png")
    ramp = np.linspace(0, 65535, 40 * 50).astype(np.uint16).reshape(40, 50)
    Image.fromarray(ramp).save(folder / "deep.png")  # 16-bit grayscale
    out = tmp_path / "out"
    # no score of this barely trained model reaches 1: nothing is detected
    assert _predict(weights, [folder], out, "--score-thresh", "1") == 0
    preds = json.loads((out / "predictions.json").read_text())["images"]
    assert preds == {"black.png": [], "deep.png": [], "dot.png": [], "strip.png": []}
    for stem, shape in [("black", (64, 64)), ("dot", (1, 1)), ("strip", (64, 4000))]:
        assert np.asarray(Image.open(out / f"{stem}_instances.png")).shape == shape
        assert not np.asarray(Image.open(out / f"{stem}_instances.png")).any()
    overlay = np.asarray(Image.open(out / "deep_overlay.png"))
    expected = (ramp / 65535 * 255 + 0.5).astype(np.uint8)  # the image itself, not all white
    assert np.abs(overlay[..., 0].astype(int) - expected).max() <= 1


def test_predict_same_file_name_in_two_folders_keeps_both(instance_run, tmp_path):
    _, weights = instance_run
    for name, (h, w) in (("a", (50, 60)), ("b", (40, 70))):
        (tmp_path / name).mkdir()
        image = np.random.default_rng(len(name) + h).integers(0, 255, (h, w, 3), dtype=np.uint8)
        Image.fromarray(image).save(tmp_path / name / "x.png")
    out = tmp_path / "out"
    assert _predict(weights, [tmp_path / "a", tmp_path / "b"], out, "--score-thresh", "0") == 0
    written = json.loads((out / "predictions.json").read_text())
    assert written["files"] == {
        "x.png": str(tmp_path / "a" / "x.png"),
        "x_1.png": str(tmp_path / "b" / "x.png"),
    }
    from pycocotools import mask as mask_utils

    for key, shape in (("x", (50, 60)), ("x_1", (40, 70))):  # key = the PNGs' name
        records = written["images"][f"{key}.png"]
        assert len(records) > 0
        assert np.asarray(Image.open(out / f"{key}_instances.png")).shape == shape
        rle = dict(records[0]["segmentation"], counts=records[0]["segmentation"]["counts"].encode())
        assert mask_utils.decode(rle).shape == shape


def test_predict_keeps_done_images_when_a_later_one_crashes(instance_run, tmp_path, monkeypatch):
    from pointrend.engine import inference

    _, weights = instance_run
    images = _write_images(tmp_path / "images", [(40, 40), (40, 40), (40, 40)])
    real, calls = inference._predict_instances, []

    def failing(trained, image, score_thresh):
        calls.append(image.shape)
        if len(calls) == 1:
            raise RuntimeError("out of memory on this one\nsecond line")
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(trained, image, score_thresh)

    monkeypatch.setattr(inference, "_predict_instances", failing)
    trained = load_trained_model(weights)
    paths = inference.list_images([images])  # broken.png, im0, im1, im2
    with pytest.raises(KeyboardInterrupt):
        inference.predict_images(trained, paths, tmp_path / "out", 0.0, progress=False)
    preds = json.loads((tmp_path / "out" / "predictions.json").read_text())["images"]
    assert list(preds) == ["im1.png"]  # broken.png unreadable, im0 failed, im2 interrupted
    assert (tmp_path / "out" / "im1_overlay.png").exists()


def test_predict_writes_the_dataset_category_ids(instance_run, tmp_path, capsys):
    _, weights = instance_run
    ckpt = load_checkpoint(weights)
    assert ckpt["label_to_category_id"] == {k: k for k in range(1, 8)}  # synthetic: ids 1..7
    ckpt["label_to_category_id"] = {k: 10 * k for k in range(1, 8)}  # e.g. COCO's sparse ids
    torch.save(ckpt, tmp_path / "mapped.pt")
    images = _write_images(tmp_path / "images", [(48, 48)])
    assert (
        _predict(
            tmp_path / "mapped.pt", [images / "im0.png"], tmp_path / "o1", "--score-thresh", "0"
        )
        == 0
    )
    written = json.loads((tmp_path / "o1" / "predictions.json").read_text())
    ids = {r["category_id"] for r in written["images"]["im0.png"]}
    assert (
        ids
        and ids <= {10 * k for k in range(1, 8)}
        and written["category_ids"] == "dataset category ids"
    )
    assert "category id map" not in capsys.readouterr().err
    del ckpt["label_to_category_id"]  # a checkpoint that does not record the map
    torch.save(ckpt, tmp_path / "old.pt")
    paths = [images / "im0.png", images / "im0.png"]
    assert _predict(tmp_path / "old.pt", paths, tmp_path / "o2", "--score-thresh", "0") == 0
    assert capsys.readouterr().err.count("records no label -> category id map") == 1
    written = json.loads((tmp_path / "o2" / "predictions.json").read_text())
    assert {r["category_id"] for r in written["images"]["im0.png"]} <= set(range(1, 8))


def test_dataset_facts_record_the_label_to_category_id_map(tmp_path):
    from pointrend.data.coco import CocoInstanceDataset
    from pointrend.engine.classes import dataset_facts

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    cats = [{"id": 90, "name": "ninety"}, {"id": 1, "name": "one"}, {"id": 7, "name": "seven"}]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "width": 8, "height": 8}],
        "annotations": [],
        "categories": cats,
    }
    (tmp_path / "ann.json").write_text(json.dumps(data))
    facts = dataset_facts(CocoInstanceDataset(tmp_path, tmp_path / "ann.json"))
    assert facts["label_to_category_id"] == {1: 1, 2: 7, 3: 90}
    assert facts["class_names"] == ["background", "one", "seven", "ninety"]


def test_eval_refuses_a_checkpoint_of_other_classes(semantic_run, tmp_path, capsys):
    from pointrend.data.write import write_synthetic_dataset

    cfg, weights = semantic_run
    write_synthetic_dataset("semantic", tmp_path / "val", 1, 64, seed=3)
    (tmp_path / "val" / "classes.json").write_text(json.dumps(["bg", "cat", "dog", "cow"]))
    val = f"val_data={{format: folder, images: {tmp_path / 'val' / 'images'}, labels: {tmp_path / 'val' / 'labels'}}}"
    code = main(["eval", str(cfg), "--weights", str(weights), "--set", val, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "has 8 classes (background, " in err and "val_data has 4 (bg, cat, dog, cow)" in err


def test_eval_json_has_null_not_nan_for_undefined_scores(semantic_run, tmp_path):
    cfg, weights = semantic_run
    out = tmp_path / "m.json"
    one_image = "val_data={format: synthetic, num_images: 1, image_size: 64, seed: 7}"
    args = ["eval", str(cfg), "--weights", str(weights), "--set", one_image, "--out", str(out)]
    assert main([*args, "--no-progress"]) == 0

    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    metrics = json.loads(out.read_text(), parse_constant=refuse)
    assert None in metrics["IoU"].values()  # one image does not show all 8 classes
    assert all(v is None or 0 <= v <= 100 for v in metrics["IoU"].values())


def test_train_eval_predict_take_threads(semantic_run, tmp_path, capsys):
    _, weights = semantic_run
    images = _write_images(tmp_path / "images", [(32, 32)])
    try:
        assert _predict(weights, [images / "im0.png"], tmp_path / "o", "--threads", "2") == 0
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    for command in ("train", "eval"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert "--threads" in capsys.readouterr().out
    assert _predict(weights, [images / "im0.png"], tmp_path / "o", "--threads", "0") == 1
    assert "--threads must be at least 1, got 0" in capsys.readouterr().err
