"""detectron2's PointRend training recipe: the mask branch's two losses equal detectron2's.

The reference is detectron2 itself (``tests/fixtures/detectron2/instance_train``): its
``loss_mask`` and ``loss_mask_point`` for the model of ``../instance`` on that fixture's image 0,
with 3 ground-truth instances (full-image bitmasks), 6 FIXED boxes standing for the box head's
predicted boxes (one inside its object, one on the second part of a two-part instance, one past
the image's right and bottom edges: training boxes are not clipped) and FIXED point coordinates
(the random sampler taken out), with its binary 7x7 targets and its point labels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from detectron2_fixture import (
    FIXTURES,
    d2_config_yaml,
    fixture_image,
    instance_weights,
    write_zoo_pkl,
)

from pointrend.instance import pointrend_maskrcnn
from pointrend.instance.targets import FlatMasks, coarse_mask_targets, sample_masks_at_points
from pointrend.interop.detectron2 import D2Config
from pointrend.interop.detectron2.instance import instance_model_from_detectron2, instance_options

TRAIN = FIXTURES / "instance_train"
INPUTS = np.load(TRAIN / "inputs.npz")
D2 = np.load(TRAIN / "d2_outputs.npz")


def gt_bitmasks() -> torch.Tensor:
    shape = tuple(INPUTS["gt_bitmasks_shape"])
    bits = np.unpackbits(INPUTS["gt_bitmasks"], axis=-1)[..., : shape[-1]]
    return torch.from_numpy(bits.astype(np.uint8))  # 3 x 320 x 480


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    cfg = D2Config.from_yaml(d2_config_yaml(tmp_path_factory.mktemp("d2") / "config.yaml"))
    return instance_model_from_detectron2(instance_weights(), cfg)


def fixed_inputs():
    boxes = torch.from_numpy(INPUTS["boxes"])
    index = torch.from_numpy(INPUTS["box_gt_index"])
    labels = torch.from_numpy(INPUTS["box_classes"]) + 1  # detectron2 class c = label c + 1
    points = torch.from_numpy(INPUTS["points"])
    return boxes, index, labels, points


def test_coarse_targets_are_detectron2s_binary_roi_align():
    boxes, index, _, _ = fixed_inputs()
    targets = coarse_mask_targets(FlatMasks([gt_bitmasks()]), index, boxes, 7)
    assert torch.equal(targets.bool(), torch.from_numpy(D2["coarse_targets"]))


def test_point_labels_are_the_bitmask_sampled_at_the_points():
    boxes, index, _, points = fixed_inputs()
    image_points = boxes[:, None, :2] + points * (boxes[:, None, 2:] - boxes[:, None, :2])
    labels = sample_masks_at_points(FlatMasks([gt_bitmasks()]), index, image_points)
    expected = torch.from_numpy(D2["point_labels"])
    torch.testing.assert_close(labels, expected, rtol=0, atol=1e-6)
    assert ((labels > 0) & (labels < 1)).any()  # soft at the edges, as detectron2's


def test_mask_losses_are_detectron2s(model, monkeypatch):
    boxes, index, labels, points = fixed_inputs()
    branch = model.roi_heads.mask_branch
    monkeypatch.setattr(branch, "training_points", lambda coarse_gt: points)
    with torch.no_grad():
        batch, _ = model.transform([fixture_image(0)])
        fine = model.backbone(batch.tensors)["0"]
        coarse = branch.coarse_logits(fine, 4.0, [boxes])
        losses = branch.losses(fine, 4.0, [boxes], labels, FlatMasks([gt_bitmasks()]), index)
    # Coarse logits: class c of detectron2 is channel c + 1 (0 is the background here).
    torch.testing.assert_close(
        coarse[:, 1:], torch.from_numpy(D2["coarse_logits"]), atol=1e-4, rtol=0
    )
    assert abs(float(losses["loss_mask"]) - float(D2["loss_mask"])) <= 1e-5
    assert abs(float(losses["loss_mask_point"]) - float(D2["loss_mask_point"])) <= 1e-5


def _toy_batch():
    torch.manual_seed(0)
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    masks = torch.zeros(2, 64, 64, dtype=torch.uint8)
    masks[0, 8:40, 10:30] = 1
    masks[1, 30:60, 20:62] = 1
    boxes = torch.tensor([[10.0, 8.0, 30.0, 40.0], [20.0, 30.0, 62.0, 60.0]])
    targets = [
        {"boxes": boxes, "labels": torch.tensor([1, 2]), "masks": masks},
        {"boxes": boxes[:1], "labels": torch.tensor([2]), "masks": masks[:1]},
    ]
    return images, targets


@pytest.mark.parametrize("on_pred_boxes", [True, False])
def test_the_mask_branch_trains_on_the_box_heads_boxes_for_the_gt_class(monkeypatch, on_pred_boxes):
    """detectron2's TRAIN_ON_PRED_BOXES: each positive proposal replaced by the box head's
    regression for its ground-truth class (no gradient, not clipped); off: the proposals."""
    torch.manual_seed(0)
    model = pointrend_maskrcnn(
        "resnet18", 3, box_head_dim=16, min_size=64, max_size=64,
        mask_train_on_pred_boxes=on_pred_boxes,
    ).train()  # fmt: skip
    heads, seen = model.roi_heads, {}
    select, losses = heads.select_training_samples, heads.mask_branch.losses

    def select_spy(proposals, targets):
        seen["sampled"] = select(proposals, targets)
        return seen["sampled"]

    def losses_spy(features, stride, boxes, classes, gt, index):
        seen["boxes"] = torch.cat(boxes)
        return losses(features, stride, boxes, classes, gt, index)

    monkeypatch.setattr(heads, "select_training_samples", select_spy)
    monkeypatch.setattr(heads.mask_branch, "losses", losses_spy)
    heads.box_predictor.register_forward_hook(lambda m, i, o: seen.update(regression=o[1]))
    images, targets = _toy_batch()
    model(images, targets)
    proposals, _, labels, _ = seen["sampled"]
    labels = torch.cat(labels)
    positive = torch.where(labels > 0)[0]
    assert len(positive) > 0
    if on_pred_boxes:
        decoded = heads.box_coder.decode(seen["regression"].detach(), proposals)
        expected = decoded[positive, labels[positive]]
        assert not seen["boxes"].requires_grad
    else:
        expected = torch.cat(proposals)[positive]
    assert torch.equal(seen["boxes"], expected)
    assert not torch.equal(seen["boxes"], torch.cat(proposals)[positive]) or not on_pred_boxes


def test_imported_configs_train_with_detectron2s_recipe(tmp_path):
    cfg = D2Config.from_yaml(d2_config_yaml(tmp_path / "config.yaml"))
    _, _, options = instance_options(cfg)
    assert options["mask_train_on_pred_boxes"] is True  # TRAIN_ON_PRED_BOXES
    assert (options["rpn_pre_nms_top_n_train"], options["rpn_post_nms_top_n_train"]) == (2000, 1000)
    assert (options["train_num_points"], options["oversample_ratio"]) == (196, 3.0)
    assert options["importance_sample_ratio"] == 0.75
    model = instance_model_from_detectron2(instance_weights(), cfg)
    assert model.roi_heads.mask_branch.config.train_on_pred_boxes
    assert model.rpn._post_nms_top_n["training"] == 1000


def test_fine_tuning_an_imported_checkpoint_lowers_the_loss(tmp_path):
    """``import-detectron2`` then ``train`` on synthetic data with the imported config's
    detectron2 recipe: the total loss of the last iterations is below that of the first."""
    import json

    import yaml

    from pointrend.cli import main

    config_path = d2_config_yaml(tmp_path / "config.yaml")
    pkl = write_zoo_pkl(instance_weights(), tmp_path / "model_final.pkl", "numpy.core")
    imported = tmp_path / "imported.pt"
    argv = ["import-detectron2", str(pkl), "--d2-config", str(config_path), "--out", str(imported)]
    assert main(argv) == 0
    config = yaml.safe_load(imported.with_suffix(".yaml").read_text())
    options = config["model"]["options"]
    assert options["mask_train_on_pred_boxes"] is True
    options.update(rpn_batch_size_per_image=64, box_batch_size_per_image=64)
    config["train_data"] = {"format": "synthetic", "num_images": 1, "image_size": 64, "seed": 0}
    config["solver"].update(
        lr=1e-3, max_iter=6, images_per_batch=1, warmup_iters=0, clip_grad_norm=1.0
    )
    config["log_period"] = 1
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    records = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    losses = [json.loads(line)["loss"] for line in records if '"loss"' in line]
    assert len(losses) == 6, losses
    assert sum(losses[-2:]) < sum(losses[:2]), losses


def test_box_losses_take_detectron2s_smooth_l1_beta():
    """beta 1/9: torchvision's losses exactly; beta 0 (detectron2's configs): plain L1."""
    from torchvision.models.detection.roi_heads import fastrcnn_loss
    from torchvision.models.detection.rpn import RegionProposalNetwork

    from pointrend.instance.losses import SmoothL1RPN, box_head_losses

    g = torch.Generator().manual_seed(0)
    logits, deltas = torch.randn(6, 3, generator=g), torch.randn(6, 12, generator=g)
    labels = [torch.tensor([0, 2, 1]), torch.tensor([1, 0, 0])]
    targets = [torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)]
    expected = fastrcnn_loss(logits, deltas, labels, targets)
    assert all(
        torch.equal(a, b)
        for a, b in zip(box_head_losses(logits, deltas, labels, targets), expected)
    )
    _, l1 = box_head_losses(logits, deltas, labels, targets, beta=0.0)
    chosen = deltas.view(6, 3, 4)[[1, 2, 3], [2, 1, 1]]
    torch.testing.assert_close(l1, (chosen - torch.cat(targets)[[1, 2, 3]]).abs().sum() / 6)

    model = pointrend_maskrcnn("resnet18", 3, box_head_dim=16)  # any RPN: only its sampler is used
    objectness, anchor_deltas = torch.randn(40, 1, generator=g), torch.randn(40, 4, generator=g)
    anchor_labels = [(torch.rand(20, generator=g) * 3).floor() - 1 for _ in range(2)]
    anchor_targets = [torch.randn(20, 4, generator=g) for _ in range(2)]
    arguments = (objectness, anchor_deltas, anchor_labels, anchor_targets)
    torch.manual_seed(1)
    expected = RegionProposalNetwork.compute_loss(model.rpn, *arguments)
    assert isinstance(model.rpn, SmoothL1RPN) and model.rpn.smooth_l1_beta == 1 / 9
    torch.manual_seed(1)
    assert all(torch.equal(a, b) for a, b in zip(model.rpn.compute_loss(*arguments), expected))
    model.rpn.smooth_l1_beta = 0.0
    torch.manual_seed(1)
    _, rpn_l1 = model.rpn.compute_loss(*arguments)
    assert not torch.equal(rpn_l1, expected[1])


def test_imported_models_train_with_plain_l1_box_losses(tmp_path):
    cfg = D2Config.from_yaml(d2_config_yaml(tmp_path / "config.yaml"))
    _, _, options = instance_options(cfg)
    assert options["rpn_smooth_l1_beta"] == options["box_smooth_l1_beta"] == 0.0
    assert options["box_head_init"] == "detectron2"
    model = pointrend_maskrcnn("resnet18", 3, box_head_dim=16, rpn_smooth_l1_beta=0.0,
                               box_smooth_l1_beta=0.0)  # fmt: skip
    assert model.rpn.smooth_l1_beta == model.roi_heads.smooth_l1_beta == 0.0


@torch.no_grad()
def test_box_head_starts_as_detectron2s_when_asked():
    torch.manual_seed(0)
    model = pointrend_maskrcnn("resnet18", 5, box_head_dim=64, box_head_init="detectron2")
    head, predictor = model.roi_heads.box_head, model.roi_heads.box_predictor
    fan_in = head.fc6.weight.shape[1]
    bound = (3 / fan_in) ** 0.5  # kaiming_uniform_(a=1); torchvision's default: 1 / sqrt(fan_in)
    assert 1 / fan_in**0.5 < head.fc6.weight.abs().max() <= bound
    assert all(float(b.abs().max()) == 0 for b in (head.fc6.bias, head.fc7.bias))
    assert abs(float(predictor.cls_score.weight.std()) - 0.01) < 0.002
    assert abs(float(predictor.bbox_pred.weight.std()) - 0.001) < 0.0002
    assert float(predictor.bbox_pred.bias.abs().max()) == 0
    plain = pointrend_maskrcnn("resnet18", 5, box_head_dim=64)
    assert float(plain.roi_heads.box_head.fc6.bias.abs().max()) > 0  # nn.Linear's defaults
    with pytest.raises(ValueError, match="box_head_init must be one of"):
        pointrend_maskrcnn("resnet18", 5, box_head_dim=64, box_head_init="caffe")
