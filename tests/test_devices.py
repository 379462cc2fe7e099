"""The device rule, the precision names, and what reaches a collective (CPU tests of the GPU
path: CUDA is faked where only its presence matters)."""

import types

import pytest
import torch

from pointrend.cli import main
from pointrend.engine import ConfigError, load_config
from pointrend.engine import loop as loop_module
from pointrend.engine.distributed import DeviceError, resolve_amp, resolve_device


@pytest.fixture
def two_gpus(monkeypatch):
    """A machine that says it has two CUDA devices (nothing is run on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    for name in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)


def test_the_device_rule_on_a_machine_without_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == resolve_device(" CPU ") == torch.device("cpu")
    for spec in ("cuda", "cuda:0"):
        with pytest.raises(DeviceError, match=f"device '{spec}': CUDA is not available"):
            resolve_device(spec)
    for typo in ("gpu", "cuda0", "cuda:x", "mps:0", ""):
        with pytest.raises(DeviceError, match=r"must be auto, cpu, cuda or cuda:N, got"):
            resolve_device(typo)


def test_the_device_rule_honours_the_index_and_local_rank(two_gpus, monkeypatch):
    assert resolve_device("auto") == resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="has 2 CUDA device"):
        resolve_device("cuda:2")
    monkeypatch.setenv("LOCAL_RANK", "1")  # process 1 of a torchrun of 2
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert resolve_device("cuda") == resolve_device("auto") == torch.device("cuda", 1)
    with pytest.raises(DeviceError, match="under torchrun each process uses cuda:LOCAL_RANK"):
        resolve_device("cuda:0")


def test_precision_names():
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert resolve_amp(False, cpu) is None and resolve_amp("off", gpu) is None
    assert resolve_amp(True, gpu) == torch.float16 and resolve_amp(True, cpu) == torch.bfloat16
    assert resolve_amp("fp16", cpu) == torch.float16 and resolve_amp("bf16", cpu) == torch.bfloat16
    with pytest.raises(DeviceError, match="amp must be fp16, bf16.*got 'fp8'"):
        resolve_amp("fp8", cpu)


def test_a_misspelt_device_or_precision_in_a_config_is_refused_when_read():
    with pytest.raises(ConfigError, match=r"--set.*device must be .* got 'gpu'|device must be"):
        load_config(None, ["device=gpu"])
    with pytest.raises(ConfigError, match="amp must be"):
        load_config(None, ["solver.amp=fp8"])
    with pytest.raises(ConfigError, match="accumulate_steps must be at least 1"):
        load_config(None, ["solver.accumulate_steps=0"])
    cfg = load_config(None, ["device=cuda:1", "solver.amp=bf16", "solver.accumulate_steps=4"])
    assert (cfg.device, cfg.solver.amp, cfg.solver.accumulate_steps) == ("cuda:1", "bf16", 4)


def test_train_on_a_missing_gpu_is_one_line_not_a_cpu_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train_data: {format: synthetic, num_images: 4, image_size: 32}\n")
    out = tmp_path / "run"
    for device, message in (("cuda", "CUDA is not available"), ("gpu", "got 'gpu'")):
        args = ["train", str(cfg), "--out", str(out), "--no-progress", "--device", device]
        assert main(args) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, err
        assert not out.exists()  # nothing trained, nothing written


def _meta_run(**solver):
    cfg = load_config(None, [f"solver.{k}={v}" for k, v in solver.items()])
    return types.SimpleNamespace(
        cfg=cfg, device=torch.device("meta"), iteration=3, last_good=None, losses={}
    )


class _Stop(Exception):
    pass


def test_the_loss_check_sends_a_tensor_on_the_run_device_to_the_collective(monkeypatch):
    """NCCL takes tensors on the GPU only; gloo takes anything, so a CPU run cannot tell. Here
    the run's device is ``meta``: a tensor made on the CPU would show, and so would a value
    read back to the host before the collective (meta tensors have none)."""
    seen = []

    def all_reduce(tensor, *args, **kwargs):
        seen.append(tensor.device)
        raise _Stop

    monkeypatch.setattr(loop_module, "is_distributed", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    losses = {"loss_a": torch.ones((), device="meta"), "loss_b": torch.ones((), device="meta")}
    check = getattr(loop_module, "check_finite", None)
    assert check is not None, "the loop has no per-step loss check to test"
    with pytest.raises(_Stop):
        check(_meta_run(), losses)
    assert seen == [torch.device("meta")]
