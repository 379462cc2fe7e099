"""The run's one DataLoader: workers, uint8 transfer, gradient accumulation, a torchrun group of
one process."""

import pytest
import torch
from engine_toys import ToyDataset, ToyModel, free_port
from test_engine import run, toy_config

from pointrend.engine import load_checkpoint
from pointrend.engine.batches import RunBatchSampler, move_batch, quantize_images


def _weights(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_a_step_with_accumulation_sees_the_images_of_a_step_without():
    plain = list(RunBatchSampler(24, 4, seed=3, start=0, stop=12))
    split = list(RunBatchSampler(24, 2, seed=3, start=0, stop=12, accumulate=2))
    assert len(split) == 2 * len(plain) == 24
    for i, batch in enumerate(plain):
        assert sorted(split[2 * i] + split[2 * i + 1]) == sorted(batch)
    # resuming at step 7 yields exactly the rest, augmentation seeds included
    assert list(RunBatchSampler(24, 2, 3, 7, 12, accumulate=2)) == split[14:]


def test_accumulated_steps_equal_whole_batches(tmp_path):
    """Two micro-batches of 2 give the step of one batch of 4 (the mean loss of 4 images)."""
    whole = run(
        toy_config(tmp_path / "whole", max_iter=4, period=0),
        model=ToyModel(random_points=False),
        dataset=ToyDataset(random_flip=False),
    )
    split = run(
        toy_config(tmp_path / "split", max_iter=4, period=0, accumulate_steps=2),
        model=ToyModel(random_points=False),
        dataset=ToyDataset(random_flip=False),
    )
    torch.testing.assert_close(_weights(split), _weights(whole), rtol=1e-5, atol=1e-6)
    assert not torch.equal(_weights(whole), _weights(ToyModel()))


@pytest.mark.parametrize("workers", [0, 2])
def test_augmentation_and_resume_do_not_depend_on_the_workers(tmp_path, workers):
    """Random flips are drawn per image and epoch: the same weights with or without worker
    processes, and a run resumed with workers ends where the uninterrupted one does."""
    cfg = toy_config(tmp_path / "ref", max_iter=8)
    cfg.num_workers = 0
    reference = run(cfg)
    cfg = toy_config(tmp_path / "w", max_iter=4)
    cfg.num_workers = workers
    run(cfg)
    cfg = toy_config(tmp_path / "w", max_iter=8)
    cfg.num_workers = workers
    resumed = run(cfg, resume=True)
    assert torch.equal(_weights(resumed), _weights(reference))


def test_images_travel_as_uint8_and_arrive_as_float():
    images = [torch.rand(3, 5, 4), torch.rand(3, 2, 2)]
    sent = quantize_images(images)
    assert all(x.dtype == torch.uint8 for x in sent)
    arrived = move_batch(sent, torch.device("cpu"), images=True)
    for a, b in zip(arrived, images):
        assert a.dtype == torch.float32
        assert (a - b).abs().max() <= 0.5 / 255 + 1e-7
    wrong = torch.full((3, 2, 2), 7.0)  # not in [0, 1]: left for the model's check to name
    assert quantize_images(wrong) is wrong
    labels = {"labels": torch.tensor([1, 2])}
    assert move_batch(labels, torch.device("cpu"), images=False)["labels"].dtype == torch.int64


def test_under_torchrun_one_process_runs_in_a_process_group(tmp_path, monkeypatch):
    """``torchrun --nproc_per_node=1`` runs the collectives of a many-GPU run, and the group
    is destroyed at the end."""
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(free_port()))
    for name, value in {"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}.items():
        monkeypatch.setenv(name, value)
    seen = []

    def evaluate(model, iteration):
        seen.append(torch.distributed.is_initialized() and torch.distributed.get_world_size())
        return {}

    run(toy_config(tmp_path, max_iter=2, period=2), evaluate_fn=evaluate)
    assert seen == [1]
    assert not torch.distributed.is_initialized()
    assert load_checkpoint(tmp_path / "model_final.pt")["iteration"] == 2


def test_a_missing_tensorboard_is_said_once_not_hidden(tmp_path, capsys, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    run(toy_config(tmp_path, max_iter=1, period=0))
    err = capsys.readouterr().err
    assert err.count("TensorBoard is not installed (pip install 'pointrend[tensorboard]')") == 1
    assert "device cpu, precision fp32, world size 1" in err


@pytest.mark.parametrize("task", ["instance", "semantic"])
def test_evaluation_decodes_in_workers_with_the_same_scores(task, monkeypatch):
    import importlib
    import json

    from pointrend.demo import SHIPPED, WEIGHTS_DIR
    from pointrend.engine.build import build_dataset
    from pointrend.engine.config import DatasetConfig
    from pointrend.engine.inference import load_trained_model

    evaluate = importlib.import_module("pointrend.engine.evaluate")
    name = SHIPPED["pointrend" if task == "instance" else "semantic_pointrend"]
    model = load_trained_model(WEIGHTS_DIR / name, device="cpu").model
    data = DatasetConfig(format="synthetic", num_images=3, image_size=96, seed=11)
    dataset = build_dataset(data, task, train=False, field="val_data")
    score = evaluate.evaluate_instances if task == "instance" else evaluate.evaluate_semantic
    scores = {}
    for workers in (0, 2):
        monkeypatch.setattr(evaluate, "default_num_workers", lambda w=workers: w)
        assert evaluate._loader(dataset, 2, torch.device("cpu")).num_workers == workers
        scores[workers] = json.dumps(score(model, dataset), sort_keys=True)
    assert scores[0] == scores[2]
