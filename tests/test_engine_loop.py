"""The loop's options: AMP, gradient clipping, periodic evaluation, two processes on an instance
model."""

import json

import torch
import torch.multiprocessing as mp
from engine_toys import ToyModel, as_process, free_port
from test_engine import run, toy_config

from pointrend.engine import load_checkpoint, load_config, train


def _losses(folder):
    lines = (folder / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["loss"] for line in lines if "loss" in json.loads(line)]


def test_amp_on_cpu_autocasts_to_bfloat16_and_trains(tmp_path):
    dtypes = []
    model = ToyModel()
    model.conv.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))
    run(toy_config(tmp_path / "amp", max_iter=16, amp="true"), model=model)
    assert set(dtypes) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay float32
    losses = _losses(tmp_path / "amp")
    assert all(map(torch.isfinite, torch.tensor(losses)))
    assert sum(losses[-4:]) < sum(losses[:4])
    dtypes.clear()
    run(toy_config(tmp_path / "fp32", max_iter=1), model=model)
    assert dtypes == [torch.float32]


def _one_step_change(tmp_path, **solver):
    cfg = toy_config(tmp_path, max_iter=1, lr=1.0, momentum=0, weight_decay=0, warmup_iters=0)
    for k, v in solver.items():
        setattr(cfg.solver, k, v)
    before = torch.cat([p.detach().flatten() for p in ToyModel().parameters()])
    after = torch.cat([p.detach().flatten() for p in run(cfg).parameters()])
    return float((after - before).norm())


def test_gradient_clipping_bounds_the_step(tmp_path):
    free = _one_step_change(tmp_path / "free")
    clipped = _one_step_change(tmp_path / "clipped", clip_grad_norm=0.01)
    assert free > 0.05  # lr 1, SGD without momentum: the step is the gradient
    assert clipped <= 0.01 * (1 + 1e-5)


def test_evaluation_every_period_and_once_at_the_end(tmp_path):
    for period, expected in ((3, [3, 6, 8]), (4, [4, 8])):
        out = tmp_path / str(period)
        calls = []
        model = ToyModel()

        def evaluate(m, iteration, calls=calls, model=model):
            assert m is model
            m.eval()  # evaluation leaves the model in eval mode; training must switch back
            calls.append(iteration)
            return {"score": float(iteration), "nested": {"ap": 1.0}}

        cfg = toy_config(out, max_iter=8)
        cfg.eval_period = period
        run(cfg, model=model, evaluate_fn=evaluate)
        assert calls == expected and model.training
        lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        scored = [r for r in lines if "score" in r]
        assert [(r["iter"], r["score"], r["nested/ap"]) for r in scored] == [
            (i, float(i), 1.0) for i in expected
        ]


TINY_INSTANCE = [
    "model.task=instance",
    "model.name=pointrend",
    "model.backbone=resnet18",
    "model.options={min_size: 48, max_size: 48, box_head_dim: 32, fpn_channels: 32,"
    " backbone_returned_layers: [1, 2, 3], rpn_anchor_sizes: [8, 16, 32, 64],"
    " coarse_head_fc_dim: 32, coarse_head_conv_dim: 32, rpn_batch_size_per_image: 32,"
    " box_batch_size_per_image: 16, box_detections_per_img: 5}",
    "train_data={format: synthetic, num_images: 4, image_size: 48}",
    "solver.images_per_batch=2",
    "solver.max_iter=2",
    "solver.warmup_iters=1",
    "solver.lr=0.002",
    "checkpoint_period=0",
    "log_period=1",
]


class _WithEmptyImages(torch.utils.data.Dataset):
    """The first two images of ``dataset`` without their objects."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.num_classes = dataset.num_classes

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        image, target = self.dataset[i]
        if i < 2:
            target = dict(target)
            target["boxes"] = target["boxes"][:0]
            target["labels"] = target["labels"][:0]
            target["masks"] = target["masks"][:0]
        return image, target


def _instance_worker(rank, world, port, out):
    as_process(rank, world, port)
    from pointrend.engine.build import build_train_objects

    cfg = load_config(None, [*TINY_INSTANCE, f"output_dir={out}", "solver.max_iter=3"])
    built = build_train_objects(cfg)
    # images without objects leave the mask branch without positives: DDP runs without
    # find_unused_parameters, so a parameter without a gradient would fail the next iteration
    train(
        cfg,
        model=built.model,
        dataset=_WithEmptyImages(built.dataset),
        collate_fn=built.collate_fn,
        progress=False,
    )
    if rank == 1:  # the parameters of the other process, to compare with those rank 0 wrote
        params = {k: p.detach() for k, p in built.model.named_parameters()}
        torch.save(params, f"{out}/rank1.pt")
    assert not torch.distributed.is_initialized()  # train() destroyed the group it joined


def test_two_processes_train_an_instance_model(tmp_path):
    out = tmp_path / "run"
    mp.start_processes(
        _instance_worker, args=(2, free_port(), str(out)), nprocs=2, start_method="spawn"
    )
    final = load_checkpoint(out / "model_final.pt")
    assert final["iteration"] == 3
    assert len(load_checkpoint(out / "model_0000003.pt")["rng"]) == 2  # one state a process
    losses = _losses(out)
    assert len(losses) == 3 and all(map(torch.isfinite, torch.tensor(losses)))
    # DDP kept the two copies of the parameters equal (batch-norm statistics are each process's
    # own until the next forward pass, which starts from those of rank 0)
    other = torch.load(out / "rank1.pt", weights_only=True)
    assert len(other) > 50
    for k, v in other.items():
        torch.testing.assert_close(final["model"][k], v, rtol=1e-5, atol=1e-6)
