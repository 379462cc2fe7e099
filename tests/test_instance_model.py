"""PointRend Mask R-CNN as a torchvision model: losses, gradients, output contract, edge cases."""

import inspect
import math

import pytest
import torch
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from pointrend.instance import PointRendRoIHeads, PointRendTransform
from pointrend.instance.targets import FlatMasks, coarse_mask_targets
from pointrend.instance.transform import drop_degenerate_instances
from pointrend.models import OptionError, maskrcnn, pointrend_maskrcnn

NUM_CLASSES = 4
TINY = dict(
    box_head_dim=32,
    min_size=64,
    max_size=96,
    rpn_pre_nms_top_n_train=100,
    rpn_post_nms_top_n_train=50,
    rpn_pre_nms_top_n_test=50,
    rpn_post_nms_top_n_test=20,
    rpn_batch_size_per_image=32,
    box_batch_size_per_image=32,
    box_detections_per_img=5,
)


def tiny(builder=pointrend_maskrcnn, **kwargs):
    torch.manual_seed(0)
    options = {**TINY, **kwargs}
    if builder is pointrend_maskrcnn:
        options.setdefault("mask_output_size", 56)
    return builder("resnet18", NUM_CLASSES, **options)


def target(h, w, boxes, labels):
    """Masks filled inside the (clipped) boxes."""
    masks = torch.zeros(len(boxes), h, w, dtype=torch.uint8)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        masks[i, max(int(y0), 0) : max(int(y1), 0), max(int(x0), 0) : max(int(x1), 0)] = 1
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "masks": masks,
    }


def empty_target(h, w):
    return {
        "boxes": torch.zeros(0, 4),
        "labels": torch.zeros(0, dtype=torch.int64),
        "masks": torch.zeros(0, h, w, dtype=torch.uint8),
    }


def images_and_targets():
    torch.manual_seed(1)
    images = [torch.rand(3, 64, 80), torch.rand(3, 72, 64)]  # different sizes
    targets = [
        target(64, 80, [[5, 6, 40, 50], [30, 20, 75, 60]], [1, 3]),
        target(72, 64, [[10, 10, 50, 70]], [2]),
    ]
    return images, targets


def check_losses(losses, extra=("loss_mask_point",)):
    expected = {
        "loss_classifier",
        "loss_box_reg",
        "loss_mask",
        "loss_objectness",
        "loss_rpn_box_reg",
        *extra,
    }
    assert set(losses) == expected
    for name, value in losses.items():
        assert value.dim() == 0 and torch.isfinite(value), name


def test_builder_structure():
    model = tiny()
    assert isinstance(model, MaskRCNN)
    assert isinstance(model.roi_heads, PointRendRoIHeads)
    assert isinstance(model.transform, PointRendTransform)
    assert model.roi_heads.mask_branch.config.output_size == 56
    assert model.roi_heads.mask_head is None and model.roi_heads.mask_predictor is None
    assert model.roi_heads.box_head.fc6.out_features == 32
    baseline = tiny(maskrcnn)
    assert type(baseline.roi_heads).__name__ == "RoIHeads"
    # same backbone, RPN and box head: identical parameter names and shapes
    ours = {k: v.shape for k, v in model.state_dict().items() if not k.startswith("roi_heads.mask")}
    theirs = {
        k: v.shape for k, v in baseline.state_dict().items() if not k.startswith("roi_heads.mask")
    }
    assert ours == theirs


def test_training_losses_and_gradients_reach_every_part():
    model = tiny()
    model.train()
    images, targets = images_and_targets()
    losses = model(images, targets)
    check_losses(losses)
    heads = model.roi_heads.mask_branch
    body_conv = model.backbone.body.conv1.weight

    losses["loss_mask_point"].backward(retain_graph=True)
    assert heads.point_head.predictor.weight.grad.abs().sum() > 0
    assert heads.point_head.fc_layers[0].weight.grad.abs().sum() > 0
    assert body_conv.grad is not None and body_conv.grad.abs().sum() > 0
    model.zero_grad()
    losses["loss_mask"].backward()
    assert heads.coarse_head.predictor.weight.grad.abs().sum() > 0
    assert heads.coarse_head.reduce.weight.grad.abs().sum() > 0
    assert body_conv.grad.abs().sum() > 0


def test_output_contract_matches_torchvision_maskrcnn():
    images, targets = images_and_targets()
    ours, base = tiny(box_score_thresh=0.0), tiny(maskrcnn, box_score_thresh=0.0)
    ours.train(), base.train()
    ours_losses, base_losses = ours(images, targets), base(images, targets)
    check_losses(base_losses, extra=())
    assert set(ours_losses) == set(base_losses) | {"loss_mask_point"}
    ours.eval(), base.eval()
    with torch.no_grad():
        out, ref = ours(images), base(images)
    assert len(out) == len(ref) == 2
    for o, r, image in zip(out, ref, images):
        assert list(o) == list(r) == ["boxes", "labels", "scores", "masks"]
        n = len(o["boxes"])
        assert n == 5  # box_detections_per_img with a zero score threshold
        for key in r:
            assert o[key].dtype == r[key].dtype, key
            assert o[key].shape[1:] == r[key].shape[1:], key
        assert o["masks"].shape == (n, 1, *image.shape[-2:])
        assert 0 <= o["masks"].min() and o["masks"].max() <= 1


def test_eval_with_zero_detections_returns_empty_tensors_like_torchvision():
    images, _ = images_and_targets()
    ours, base = tiny(box_score_thresh=1.0), tiny(maskrcnn, box_score_thresh=1.0)
    ours.eval(), base.eval()
    with torch.no_grad():
        out, ref = ours(images), base(images)
    for o, r, image in zip(out, ref, images):
        assert (
            o["boxes"].shape == (0, 4) and o["labels"].shape == (0,) and o["scores"].shape == (0,)
        )
        assert o["masks"].shape == (0, 1, *image.shape[-2:])
        for key in r:
            assert o[key].dtype == r[key].dtype and o[key].shape == r[key].shape, key


def test_images_without_instances_alone_and_mixed():
    model = tiny()
    model.train()
    images, targets = images_and_targets()
    alone = model([images[0]], [empty_target(64, 80)])
    check_losses(alone)
    assert alone["loss_mask"].item() == 0 and alone["loss_mask_point"].item() == 0
    sum(alone.values()).backward()  # still a graph: torchvision training code calls backward
    mixed = model(
        [images[0], torch.rand(3, 50, 70), images[1]],
        [targets[0], empty_target(50, 70), targets[1]],
    )
    check_losses(mixed)
    assert mixed["loss_mask_point"].item() > 0


def test_no_positive_proposals():
    model = tiny(box_fg_iou_thresh=1.01)  # nothing, not even a ground-truth box, is positive
    model.train()
    images, targets = images_and_targets()
    losses = model(images, targets)
    check_losses(losses)
    assert losses["loss_mask"].item() == 0 and losses["loss_mask_point"].item() == 0
    sum(losses.values()).backward()


def test_drop_degenerate_instances_keeps_every_per_instance_field_aligned():
    t = {
        "boxes": torch.tensor([[0, 0, 4, 4], [2, 1, 2, 5], [1, 3, 6, 3], [5, 5, 3, 8.0]]),
        "labels": torch.tensor([1, 2, 3, 1]),
        "masks": torch.arange(4)[:, None, None].expand(4, 6, 8).to(torch.uint8),
        "area": torch.tensor([16.0, 0.0, 0.0, 0.0]),
        "iscrowd": torch.tensor([0, 1, 0, 1]),
        "image_id": torch.tensor(7),  # not per instance: kept as it is
    }
    kept = drop_degenerate_instances(t)
    assert kept["boxes"].tolist() == [[0, 0, 4, 4]]
    assert kept["labels"].tolist() == [1] and kept["iscrowd"].tolist() == [0]
    assert kept["area"].tolist() == [16.0] and kept["masks"].unique().tolist() == [0]
    assert kept["image_id"] is t["image_id"]
    assert t["boxes"].shape == (4, 4)  # the caller's target is not changed
    assert drop_degenerate_instances(kept) is kept  # nothing to drop: the same dict
    none = drop_degenerate_instances({**t, "boxes": t["boxes"][1:], "labels": t["labels"][1:]})
    assert none["boxes"].shape == (0, 4) and none["labels"].shape == (0,)


def _losses(model, image, t, seed=5):
    torch.manual_seed(seed)
    return {k: v.item() for k, v in model([image], [t]).items()}


def test_zero_width_or_height_ground_truth_boxes_are_dropped():
    """A target with degenerate boxes trains exactly as the target without them (same draws);
    a target of degenerate boxes only trains as an image without instances."""
    model = tiny()
    model.train()
    images, _ = images_and_targets()
    t = target(64, 80, [[5, 6, 40, 50], [20, 10, 20, 40], [10, 30, 60, 30]], [1, 2, 3])
    _, transformed = model.transform([images[0]], [t])
    assert transformed[0]["boxes"].tolist() == [[5, 6, 40, 50]]
    assert transformed[0]["labels"].tolist() == [1] and transformed[0]["masks"].shape[0] == 1
    with_degenerate = _losses(model, images[0], t)
    clean = _losses(model, images[0], target(64, 80, [[5, 6, 40, 50]], [1]))
    assert with_degenerate == clean and all(map(math.isfinite, clean.values()))
    only_degenerate = _losses(model, images[0], target(64, 80, [[20, 10, 20, 40]], [2]))
    assert only_degenerate == pytest.approx(_losses(model, images[0], empty_target(64, 80)))
    assert only_degenerate["loss_mask"] == 0 and only_degenerate["loss_mask_point"] == 0


def test_ground_truth_boxes_partly_outside_the_image():
    """Such boxes are kept as given (not clipped) and train the mask branch; their mask targets
    read 0 outside the image and the mask inside it."""
    model = tiny()
    model.train()
    images, _ = images_and_targets()
    t = target(64, 80, [[-20, -10, 30, 40], [50, 30, 110, 90]], [1, 2])
    _, transformed = model.transform([images[0]], [t])
    torch.testing.assert_close(transformed[0]["boxes"], t["boxes"])  # scale 1: 64 x 80 kept
    losses = _losses(model, images[0], t)
    assert all(map(math.isfinite, losses.values()))
    assert losses["loss_mask"] > 0 and losses["loss_mask_point"] > 0
    # 10 x 10 cells of 5 px over [-20, 30] x [-10, 40]; the mask fills [0, 30) x [0, 40)
    coarse = coarse_mask_targets(FlatMasks([t["masks"]]), torch.tensor([0]), t["boxes"][:1], 10)
    expected = torch.zeros(10, 10)
    expected[2:, 4:] = 1
    torch.testing.assert_close(coarse[0], expected)


def test_forced_detections_zero_size_and_partly_outside_boxes_in_eval():
    """Boxes reaching the mask branch may be degenerate or cross the border: finite masks."""
    model = tiny()
    model.eval()
    forced = torch.tensor(
        [
            [10.0, 10.0, 10.0, 40.0],
            [5.0, 20.0, 60.0, 20.0],
            [-10.0, -10.0, 30.0, 30.0],
            [40.0, 30.0, 120.0, 90.0],
        ]
    )

    def postprocess(class_logits, box_regression, proposals, image_shapes):
        return [forced], [torch.ones(4)], [torch.tensor([1, 2, 3, 1])]

    model.roi_heads.postprocess_detections = postprocess
    with torch.no_grad():
        (out,) = model([torch.rand(3, 64, 80)])  # transform: 64 x 80 -> 64 x 80 (min_size 64)
    masks = out["masks"]
    assert masks.shape == (4, 1, 64, 80) and torch.isfinite(masks).all()
    assert masks[:2].abs().max() == 0  # no pixel centre inside a box without area
    assert masks[2, 0, 30:].abs().max() == 0 and masks[2, 0, :, 30:].abs().max() == 0
    assert masks[3, 0, :30].abs().max() == 0


@pytest.mark.parametrize(
    "bad, message",
    [
        (
            lambda t: t.update(masks=torch.zeros(2, 64, 81, dtype=torch.uint8)),
            r"targets\[0\]\['masks'\] has shape \(2, 64, 81\) but image 0 is \(64, 80\)",
        ),
        (
            lambda t: t.update(labels=torch.tensor([1, 0])),
            r"targets\[0\]\['labels'\]\[1\] = 0 is outside \[1, 4\)",
        ),
        (
            lambda t: t.update(labels=torch.tensor([4, 1])),
            r"targets\[0\]\['labels'\]\[0\] = 4 is outside \[1, 4\)",
        ),
        (
            lambda t: t["boxes"].__setitem__((1, 2), float("nan")),
            r"targets\[0\]\['boxes'\]\[1\] is not finite",
        ),
        (
            lambda t: t["boxes"].__setitem__((0, 0), float("-inf")),
            r"targets\[0\]\['boxes'\]\[0\] is not finite",
        ),
        (
            lambda t: t.update(masks=torch.zeros(3, 64, 80, dtype=torch.uint8)),
            r"targets\[0\]\['masks'\] must be N x H x W with N = 2",
        ),
    ],
)
def test_bad_targets_raise_clear_errors(bad, message):
    model = tiny()
    model.train()
    images, targets = images_and_targets()
    bad(targets[0])
    with pytest.raises(ValueError, match=message):
        model(images, targets)


def test_bad_mask_size_names_the_right_image():
    model = tiny()
    model.train()
    images, targets = images_and_targets()
    targets[1]["masks"] = torch.zeros(1, 64, 72, dtype=torch.uint8)  # H and W swapped
    with pytest.raises(ValueError, match=r"targets\[1\]\['masks'\] .* image 1 is \(72, 64\)"):
        model(images, targets)


def test_mask_options_and_mobilenet_backbone():
    model = pointrend_maskrcnn(
        "resnet18", 3, mask_output_size=448, subdivision_num_points=1024, box_head_dim=16
    )
    config = model.roi_heads.mask_branch.config
    assert (config.output_size, config.pointrend.subdivision_num_points) == (448, 1024)
    mobile = pointrend_maskrcnn("mobilenet_v3_large", 3, box_head_dim=16, min_size=64, max_size=64)
    mobile.eval()
    with torch.no_grad():
        features = mobile.backbone(torch.rand(1, 3, 64, 64))
    assert features["0"].shape[-2:] == (16, 16)  # a stride-4 level for the fine features
    with pytest.raises(ValueError, match="backbone must be one of .*resnext101_32x8d.*'vgg16'"):
        pointrend_maskrcnn("vgg16", 3)


def test_unknown_and_misplaced_options_are_refused():
    """torchvision would silently drop an unknown keyword; the builders name it."""
    with pytest.raises(OptionError) as error:
        pointrend_maskrcnn("resnet18", 3, min_szie=100)
    message = str(error.value)
    assert message.startswith("pointrend_maskrcnn() got an unknown option 'min_szie'; ")
    assert "did you mean 'min_size'?" in message
    known = message.split("known: ")[1].split(", ")
    public = {"box_head_dim", "fpn_channels", "min_size", "mask_output_size", "coarse_head_fc_dim"}
    assert public <= set(known) and not [k for k in known if k.startswith("_")]
    assert "mask_head_dim" not in known and "mask_head" not in known  # the baseline's
    with pytest.raises(OptionError, match="unknown option 'box_head_dims'; did you mean 'box_h"):
        pointrend_maskrcnn("resnet18", 3, box_head_dims=16)
    with pytest.raises(OptionError, match="a PointRend mask option 'mask_output_size'"):
        maskrcnn("resnet18", 3, mask_output_size=224)
    with pytest.raises(OptionError, match="option of the baseline's 4x conv mask head"):
        pointrend_maskrcnn("resnet18", 3, mask_head_dim=128)
    baseline = maskrcnn("resnet18", 3, box_head_dim=16, min_size=100, box_detections_per_img=7)
    assert baseline.transform.min_size == (100,) and baseline.roi_heads.detections_per_img == 7


def test_roi_heads_and_transform_take_every_torchvision_setting_by_name():
    """Built by keyword from the attributes of torchvision's objects: every required argument
    of torchvision's constructors is passed, and every setting comes back unchanged."""
    model = maskrcnn(
        "resnet18",
        3,
        box_head_dim=16,
        min_size=(90, 100),
        max_size=150,
        image_mean=[0.1, 0.2, 0.3],
        image_std=[0.4, 0.5, 0.6],
        size_divisible=16,
        box_fg_iou_thresh=0.6,
        box_bg_iou_thresh=0.4,
        box_batch_size_per_image=64,
        box_positive_fraction=0.3,
        bbox_reg_weights=(1.0, 2.0, 3.0, 4.0),
        box_score_thresh=0.2,
        box_nms_thresh=0.6,
        box_detections_per_img=9,
    )
    heads, transform = model.roi_heads, model.transform
    required = [
        name
        for name, p in inspect.signature(RoIHeads.__init__).parameters.items()
        if p.default is inspect.Parameter.empty and name != "self"
    ]
    arguments = PointRendRoIHeads.box_branch_arguments(heads)
    assert set(required) <= set(arguments)
    ours = PointRendRoIHeads.from_roi_heads(heads, tiny().roi_heads.mask_branch)
    for name in ("box_roi_pool", "box_head", "box_predictor"):
        assert getattr(ours, name) is getattr(heads, name)
    for part in ("proposal_matcher", "fg_bg_sampler", "box_coder"):
        assert vars(getattr(ours, part)) == vars(getattr(heads, part)), part
    for name in ("score_thresh", "nms_thresh", "detections_per_img"):
        assert getattr(ours, name) == getattr(heads, name), name
    assert (ours.score_thresh, ours.detections_per_img) == (0.2, 9)

    required = [
        name
        for name, p in inspect.signature(GeneralizedRCNNTransform.__init__).parameters.items()
        if p.default is inspect.Parameter.empty and name != "self" and p.kind != p.VAR_KEYWORD
    ]
    assert set(required) <= set(PointRendTransform.transform_arguments(transform))
    copy = PointRendTransform.from_transform(transform, 3)
    settings = ("min_size", "max_size", "image_mean", "image_std", "size_divisible", "fixed_size")
    for name in settings:
        assert getattr(copy, name) == getattr(transform, name), name
    assert copy.min_size == (90, 100) and copy.size_divisible == 16 and copy.num_classes == 3
    with pytest.raises(TypeError):
        PointRendRoIHeads(heads.box_roi_pool, mask_branch=ours.mask_branch)  # by name only
