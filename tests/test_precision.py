"""Mixed precision through the whole model: autocast, half images, half models; agreement with
float32 on the shipped models."""

import pytest
import torch
from torch import nn
from torchvision.ops import box_iou

from pointrend.cli import main
from pointrend.data.synthetic import SyntheticInstanceDataset, SyntheticSemanticDataset
from pointrend.demo import SHIPPED, WEIGHTS_DIR
from pointrend.engine import load_config
from pointrend.engine.inference import load_trained_model
from pointrend.engine.train import _sync_batchnorm


@pytest.fixture(scope="module")
def instance():
    return load_trained_model(WEIGHTS_DIR / SHIPPED["pointrend"], device="cpu").model


@pytest.fixture(scope="module")
def semantic():
    return load_trained_model(WEIGHTS_DIR / SHIPPED["semantic_pointrend"], device="cpu").model


def _matched_mask_ious(ref: dict, amp: dict, thresh: float = 0.5) -> tuple[list, list]:
    """Box IoUs and mask IoUs of each reference detection scoring >= thresh with its best
    match of the same class among the AMP detections."""
    keep = ref["scores"] >= thresh
    iou = box_iou(ref["boxes"][keep], amp["boxes"].float())
    iou = iou * (ref["labels"][keep][:, None] == amp["labels"][None])
    best, j = iou.max(1)
    a = ref["masks"][keep][:, 0] >= 0.5
    b = amp["masks"][j][:, 0].float() >= 0.5
    mask_iou = (a & b).sum((1, 2)) / (a | b).sum((1, 2)).clamp(min=1)
    return best.tolist(), mask_iou.tolist()


@pytest.mark.parametrize("mode", ["fixed", "box"])
def test_instance_outputs_under_autocast_agree_with_float32(mode):
    images = [SyntheticInstanceDataset(3, 160, seed=123)[i][0] for i in range(3)]
    option = f"model.options.mask_resolution={mode}"
    instance = load_trained_model(WEIGHTS_DIR / SHIPPED["pointrend"], None, [option], "cpu").model
    box_ious, mask_ious = [], []
    with torch.no_grad():
        for image in images:
            ref = instance([image])[0]
            with torch.autocast("cpu", dtype=torch.float16):
                amp = instance([image])[0]
            assert torch.isfinite(amp["masks"].float()).all()
            boxes, masks = _matched_mask_ious(ref, amp)
            box_ious += boxes
            mask_ious += masks
    assert len(mask_ious) >= 4
    assert min(box_ious) >= 0.95
    assert torch.tensor(mask_ious).median() >= 0.98


def test_half_images_and_half_models_run(instance, semantic):
    image = SyntheticInstanceDataset(1, 128, seed=5)[0][0]
    with torch.no_grad():
        ref = instance([image])[0]
        for dtype in (torch.float16, torch.bfloat16, torch.float64):
            out = instance([image.to(dtype)])[0]  # cast to the model's float32 inside
            assert out["boxes"].dtype == torch.float32 and len(out["boxes"]) == len(ref["boxes"])
        labels = semantic(image[None])["out"].argmax(1)
        half = semantic(image[None].half())["out"].argmax(1)
        assert (half == labels).float().mean() >= 0.99
    model = load_trained_model(WEIGHTS_DIR / SHIPPED["semantic_pointrend"], device="cpu").model
    model.to(torch.bfloat16)
    with torch.no_grad():
        out = model(image[None])["out"]  # float32 images into a bfloat16 model
    assert out.dtype == torch.bfloat16
    assert (out.argmax(1) == labels).float().mean() >= 0.99


def test_semantic_labels_under_autocast_agree_with_float32(semantic):
    data = SyntheticSemanticDataset(3, 192, seed=9)
    with torch.no_grad():
        for i in range(len(data)):
            image = data[i][0][None]
            ref = semantic(image)["out"].argmax(1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                amp = semantic(image)["out"].argmax(1)
            assert (amp == ref).float().mean() >= 0.99


def test_predict_with_amp_and_a_bad_precision(tmp_path, capsys):
    from PIL import Image

    image = SyntheticInstanceDataset(1, 96, seed=2)[0][0]
    path = tmp_path / "a.png"
    Image.fromarray((image.permute(1, 2, 0) * 255).byte().numpy()).save(path)
    weights = str(WEIGHTS_DIR / SHIPPED["pointrend"])
    base = ["predict", str(path), "--weights", weights, "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "amp"), "--amp", "bf16", "--device", "cpu"]) == 0
    assert "device cpu, precision bf16, world size 1" in capsys.readouterr().err
    assert (tmp_path / "amp" / "a_instances.png").is_file()
    assert main([*base, "--out", str(tmp_path / "x"), "--amp", "fp8"]) == 1
    assert "amp must be" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "y"), "--device", "gpu"]) == 1
    assert "got 'gpu'" in capsys.readouterr().err


def test_sync_batchnorm_converts_for_cuda_runs_of_many_processes(monkeypatch):
    import importlib

    train_module = importlib.import_module("pointrend.engine.train")

    cfg = load_config(None, ["sync_batchnorm=true"])
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    assert _sync_batchnorm(model, cfg, torch.device("cpu")) is model  # one process: as it is
    monkeypatch.setattr(train_module, "get_world_size", lambda: 2)
    converted = _sync_batchnorm(model, cfg, torch.device("cuda", 0))
    assert isinstance(converted[1], nn.SyncBatchNorm)
    assert converted.state_dict().keys() == model.state_dict().keys()
    with pytest.raises(Exception, match="sync_batchnorm: true needs CUDA"):
        _sync_batchnorm(model, cfg, torch.device("cpu"))
