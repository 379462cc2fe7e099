"""Evaluation against exact ground truth at another size than the model's input (``gt_size``,
``pointrend eval --eval-size``): the synthetic scene rendered larger, predictions pasted there."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from pointrend.cli import main
from pointrend.data.synthetic import SyntheticInstanceDataset, render_sample
from pointrend.engine.evaluate import coco_ground_truth, predict_pasted
from pointrend.engine.inference import load_trained_model

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synthetic_instance_pointrend_r18.yaml"
WEIGHTS = ROOT / "src" / "pointrend" / "weights" / "synthetic_instance_pointrend_r18.pt"


def test_masks_at_own_size_are_the_sample_and_larger_masks_are_the_same_objects():
    for index in range(4):
        base = render_sample(index, 64, seed=5)
        same = render_sample(index, 64, seed=5, mask_size=(64, 64))
        assert np.array_equal(same.masks, base.masks) and np.array_equal(same.image, base.image)
        fine = render_sample(index, 64, seed=5, mask_size=(256, 256))
        assert np.array_equal(fine.image, base.image)
        assert np.array_equal(fine.labels, base.labels) and fine.masks.shape[1:] == (256, 256)
        # the 4x finer masks, averaged over 4 x 4 blocks, are the base masks but at edges
        blocks = fine.masks.reshape(len(fine.masks), 64, 4, 64, 4).mean((2, 4))
        for coarse, block in zip(base.masks, blocks):
            inter = (coarse & (block >= 0.5)).sum()
            assert inter / (coarse | (block >= 0.5)).sum() > 0.8
            assert block[~coarse].max(initial=0) <= 0.75  # no object pixel far outside


def test_dataset_ground_truth_at_gt_size():
    ds = SyntheticInstanceDataset(2, 64, seed=3, gt_size=192)
    image, target = ds[0]
    assert image.shape[-2:] == (64, 64) and target["masks"].shape[-2:] == (192, 192)
    plain = SyntheticInstanceDataset(2, 64, seed=3)[0][1]
    # the same objects: boxes 3x the base boxes, within a pixel and a half (a thin spike
    # can reach half a base pixel further at the finer size)
    torch.testing.assert_close(target["boxes"] / 3, plain["boxes"], atol=1.5, rtol=0)
    coco, _ = coco_ground_truth(ds)
    assert {(im["height"], im["width"]) for im in coco.dataset["images"]} == {(192, 192)}
    with pytest.raises(ValueError, match="gt_size >= 16, got 8"):
        SyntheticInstanceDataset(2, 64, gt_size=8)


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)
    return load_trained_model(WEIGHTS, CONFIG).model


def test_predictions_pasted_at_another_size_are_the_same_detections(shipped):
    image = SyntheticInstanceDataset(1, 160, seed=7000)[0][0]
    with torch.no_grad():
        own = shipped([image])[0]
    at_own, at_double = predict_pasted(shipped, [image], [[(160, 160)], [(320, 320)]])
    for key in ("boxes", "scores", "labels", "masks"):
        torch.testing.assert_close(at_own[0][key], own[key])
    torch.testing.assert_close(at_double[0]["boxes"], own["boxes"] * 2)
    assert at_double[0]["masks"].shape[-2:] == (320, 320)
    # the larger paste holds the same masks: averaged over 2 x 2 blocks, close to the small one
    pooled = torch.nn.functional.avg_pool2d(at_double[0]["masks"], 2)
    assert (pooled - own["masks"]).abs().mean() < 0.02
    assert not hasattr(shipped.transform, "__dict__") or "postprocess" not in vars(
        shipped.transform
    )


def test_eval_size_scores_against_exact_larger_ground_truth(tmp_path, capsys):
    base = ["eval", str(CONFIG), "--weights", str(WEIGHTS), "--no-progress", "--threads", "1"]
    base += ["--set", "val_data.num_images=2"]
    small, large = tmp_path / "160.json", tmp_path / "480.json"
    assert main([*base, "--out", str(small)]) == 0
    assert main([*base, "--eval-size", "480", "--out", str(large)]) == 0
    m160, m480 = json.loads(small.read_text()), json.loads(large.read_text())
    for m in (m160, m480):
        assert 0 <= m["segm"]["AP"] <= 100 and 0 <= m["boundary"]["AP"] <= 100
    # the same detections scored against other ground truth: the mask scores differ
    assert m480["segm"]["AP"] != m160["segm"]["AP"] or m480["boundary"] != m160["boundary"]


def test_eval_size_on_data_that_cannot_render_it_is_one_line_error(tmp_path, capsys):
    argv = ["eval", str(CONFIG), "--weights", str(WEIGHTS), "--no-progress", "--eval-size", "320"]
    code = main([*argv, "--set", "val_data.format=coco"])
    err = capsys.readouterr().err
    assert code == 1 and "val_data.gt_size needs synthetic instance data" in err
    assert "'coco'" in err and len(err.strip().splitlines()) == 1
