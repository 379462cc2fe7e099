import json
import os

import pytest
import torch
import torch.multiprocessing as mp
from engine_toys import ToyDataset, ToyModel, as_process, free_port, toy_collate

from pointrend.engine import (
    CheckpointError,
    ConfigError,
    NonFiniteLossError,
    load_checkpoint,
    load_config,
    train,
)
from pointrend.engine.checkpoint import atomic_save, latest_checkpoint
from pointrend.engine.train import lr_factor


def toy_config(out, max_iter=8, batch=4, period=4, **solver):
    return load_config(
        None,
        [
            f"output_dir={out}",
            f"solver.max_iter={max_iter}",
            f"solver.images_per_batch={batch}",
            "solver.lr=0.1",
            "solver.warmup_iters=2",
            "solver.steps=[6]",
            f"checkpoint_period={period}",
            "log_period=1",
            *[f"solver.{k}={v}" for k, v in solver.items()],
        ],
    )


def run(cfg, resume=False, model=None, dataset=None, **kw):
    model = model or ToyModel()
    dataset = dataset or ToyDataset()
    train(
        cfg,
        resume=resume,
        model=model,
        dataset=dataset,
        collate_fn=toy_collate,
        progress=False,
        **kw,
    )
    return model


def test_config_unknown_key_names_key_and_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("solver:\n  lr: 0.1\n  momentm: 0.9\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*solver.*'momentm'"):
        load_config(f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="solver.lr: expected float"):
        load_config(None, ["solver.lr=fast"])


def test_overrides_and_types(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("solver:\n  lr: 1\n  steps: [10, 20]\nmodel:\n  options: {steps: 4}\n")
    cfg = load_config(f, ["solver.lr=0.5", "model.num_classes=3", "train_data.min_size=[96, 128]"])
    assert cfg.solver.lr == 0.5 and isinstance(cfg.solver.lr, float)
    assert cfg.solver.steps == [10, 20] and cfg.model.options == {"steps": 4}
    assert cfg.model.num_classes == 3 and cfg.train_data.min_size == [96, 128]


def test_lr_schedule_warmup_step_and_poly():
    cfg = load_config(
        None, ["solver.warmup_iters=10", "solver.steps=[20, 30]", "solver.warmup_factor=0.1"]
    )
    assert lr_factor(0, cfg.solver) == pytest.approx(0.1)
    assert lr_factor(5, cfg.solver) == pytest.approx(0.55)
    assert lr_factor(15, cfg.solver) == 1.0
    assert lr_factor(25, cfg.solver) == pytest.approx(0.1)
    assert lr_factor(35, cfg.solver) == pytest.approx(0.01)
    poly = load_config(
        None, ["solver.schedule=poly", "solver.warmup_iters=0", "solver.max_iter=100"]
    ).solver
    assert lr_factor(50, poly) == pytest.approx(0.5**0.9)


def test_kill_and_resume_reaches_same_weights(tmp_path):
    full = run(toy_config(tmp_path / "full"))
    half_cfg = toy_config(tmp_path / "half", max_iter=4)
    run(half_cfg)  # "killed" after the checkpoint at 4
    assert latest_checkpoint(tmp_path / "half").name == "model_0000004.pt"
    resumed = run(toy_config(tmp_path / "half"), resume=True)
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    ckpt = load_checkpoint(tmp_path / "half" / "model_0000008.pt")
    assert ckpt["iteration"] == 8 and {"model", "optimizer", "scheduler", "scaler", "rng"} <= set(
        ckpt
    )
    lines = (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["iter"] for r in records if "loss" in r] == list(range(1, 9))
    starts = [r for r in records if r.get("event") == "start"]  # one a run: device, versions
    assert [r["iter"] for r in starts] == [0, 4] and starts[0]["device"] == "cpu"
    assert {"precision", "world_size", "torch", "pointrend"} <= set(starts[0])


def test_existing_checkpoints_are_not_overwritten_without_resume(tmp_path):
    run(toy_config(tmp_path, max_iter=4))
    before = (tmp_path / "model_0000004.pt").read_bytes()
    with pytest.raises(FileExistsError, match="--resume"):
        run(toy_config(tmp_path, max_iter=4))
    assert (tmp_path / "model_0000004.pt").read_bytes() == before


def test_corrupt_checkpoint_is_a_clear_error_and_untouched(tmp_path):
    run(toy_config(tmp_path, max_iter=4))
    path = tmp_path / "model_0000004.pt"
    path.write_bytes(path.read_bytes()[:100])
    corrupt = path.read_bytes()
    with pytest.raises(CheckpointError, match="model_0000004.pt"):
        run(toy_config(tmp_path, max_iter=8), resume=True)
    assert path.read_bytes() == corrupt
    assert not (tmp_path / "model_0000008.pt").exists()


def test_checkpoint_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, path)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)


def test_atomic_save_failure_keeps_previous_file(tmp_path):
    path = tmp_path / "c.pt"
    atomic_save({"a": torch.ones(2)}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"a": Unpicklable()}, path)
    assert torch.equal(load_checkpoint(path)["a"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]


def test_nan_loss_stops_with_named_error_and_keeps_checkpoint(tmp_path):
    model = ToyModel()
    model.nan_at_call = 7
    with pytest.raises(NonFiniteLossError, match=r"iteration 6: loss_aux = nan.*model_0000004.pt"):
        run(toy_config(tmp_path), model=model)
    assert load_checkpoint(tmp_path / "model_0000004.pt")["iteration"] == 4
    assert not (tmp_path / "model_final.pt").exists()


def _worker(rank, world, port, out):
    as_process(rank, world, port)
    run(
        toy_config(out, period=0),
        model=ToyModel(random_points=False),
        dataset=ToyDataset(random_flip=False),
    )
    assert not torch.distributed.is_initialized()  # train() destroyed the group it joined


def test_two_processes_match_one_process_with_same_global_batch(tmp_path):
    # no randomness in data or loss: each rank draws its own random numbers
    one = run(
        toy_config(tmp_path / "one", period=0),
        model=ToyModel(random_points=False),
        dataset=ToyDataset(random_flip=False),
    )
    port = free_port()
    mp.start_processes(
        _worker, args=(2, port, str(tmp_path / "two")), nprocs=2, start_method="spawn"
    )
    two = load_checkpoint(tmp_path / "two" / "model_final.pt")["model"]
    # gradients are averaged across the two ranks: equal to the one-process mean up to float
    # rounding of the all-reduce, hence the tolerance
    for k, v in one.state_dict().items():
        torch.testing.assert_close(two[k], v, rtol=1e-5, atol=1e-6)
