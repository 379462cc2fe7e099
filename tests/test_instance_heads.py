"""PointRend's mask branch: coarse head, training losses, rendering, pure helpers."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from pointrend import (
    box_to_image_coords,
    calculate_uncertainty,
    get_uncertain_point_coords_with_randomness,
    grid_cell_centres,
    point_sample,
)
from pointrend._fused_head import FusedPointHead
from pointrend.instance import FlatMasks, PointRendMaskBranch, PointRendMaskConfig
from pointrend.instance.builders import feature_stride
from pointrend.instance.mask_head import CoarseMaskHead, box_grid_features
from pointrend.instance.paste import MasksBySize
from pointrend.instance.targets import coarse_mask_targets
from pointrend.models import pointrend_maskrcnn
from pointrend.points import select_class
from pointrend.render import subdivision_inference
from pointrend.settings import PointRendSettings, replace_options


def small_config(**options):
    """A narrow coarse head (conv 16, fc 32) and point head (16 wide), with flat ``options``."""
    narrow = PointRendMaskConfig(
        coarse_head_conv_dim=16,
        coarse_head_fc_dim=32,
        pointrend=PointRendSettings(point_head_fc_dim=16),
    )
    return replace_options(narrow, **options)


SMALL = small_config()


def test_coarse_head_shapes_and_layers():
    head = CoarseMaskHead(8, num_classes=5)
    assert head(torch.rand(3, 8, 14, 14)).shape == (3, 5, 7, 7)
    assert head(torch.rand(0, 8, 14, 14)).shape == (0, 5, 7, 7)
    assert head.reduce.kernel_size == (2, 2) and head.reduce.stride == (2, 2)
    assert [fc.out_features for fc in head.fcs] == [1024, 1024]
    assert head.predictor.out_features == 5 * 49


def test_box_grid_features_is_aligned_roi_align_with_one_sample_per_bin():
    torch.manual_seed(0)
    features = torch.rand(2, 3, 20, 24)
    boxes = [
        torch.tensor([[8.0, 6.0, 60.0, 50.0]]),
        torch.tensor([[4.0, 4.0, 30.0, 70.0], [20.0, 10.0, 90.0, 40.0]]),
    ]
    ours = box_grid_features(features, 4.0, boxes, 14)
    rois = torch.cat(
        [torch.cat([torch.full((len(b), 1), float(i)), b], 1) for i, b in enumerate(boxes)]
    )
    ref = roi_align(features, rois, 14, spatial_scale=0.25, sampling_ratio=1, aligned=True)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_the_mask_feature_stride_comes_from_the_backbone():
    backbone = SimpleNamespace(strides=[8, 16, 32])  # what feature_stride reads
    assert [feature_stride(backbone, k) for k in ("0", "2", "pool")] == [8, 32, 64]
    with pytest.raises(ValueError, match="feature_key '3' is not a backbone output"):
        feature_stride(backbone, "3")
    torch.manual_seed(0)
    model = pointrend_maskrcnn(
        "resnet18", 3, box_head_dim=16, coarse_head_fc_dim=16, fpn_channels=8
    )
    assert model.roi_heads.mask_stride == 4.0 == model.backbone.strides[0]


def test_coarse_mask_targets_are_binary_roi_align_of_the_bitmask():
    """detectron2's rule: RoIAlign (aligned, adaptive sampling) of the full-image bitmask, >= 0.5;
    masks of images of different sizes, boxes partly outside their image (read as 0)."""
    torch.manual_seed(0)
    masks = [
        (torch.rand(2, 40, 36) > 0.5).to(torch.uint8),
        torch.zeros(0, 30, 30, dtype=torch.uint8),
    ]
    masks.append((torch.rand(1, 50, 44) > 0.3).to(torch.uint8))
    boxes = torch.tensor([[6.0, 0.0, 34.0, 28.0], [-5.0, 10.5, 20.0, 52.0], [3.3, 2.2, 60.0, 61.0]])
    index = torch.tensor([1, 0, 2])  # global mask indices: image 0 has masks 0-1, image 2 mask 2
    t = coarse_mask_targets(FlatMasks(masks), index, boxes, 7)
    assert t.shape == (3, 7, 7) and set(t.unique().tolist()) <= {0.0, 1.0}
    sources = [masks[0][1], masks[0][0], masks[2][0]]
    for row, (source, box) in enumerate(zip(sources, boxes)):
        rois = torch.cat([torch.zeros(1), box])[None]
        values = roi_align(source[None, None].float(), rois, (7, 7), 1.0, 0, aligned=True)
        assert torch.equal(t[row], (values[0, 0] >= 0.5).float())
    half = torch.zeros(1, 40, 40, dtype=torch.uint8)
    half[0, :, :20] = 1  # left half: cells 0..2 inside, cell 3 (18..22) on the edge, 4..6 out
    t = coarse_mask_targets(
        FlatMasks([half]), torch.tensor([0]), torch.tensor([[6.0, 0.0, 34.0, 28.0]]), 7
    )
    assert torch.equal(t[0, :, :3], torch.ones(7, 3)) and torch.equal(
        t[0, :, 4:], torch.zeros(7, 3)
    )


def _branch_inputs(seed=0):
    torch.manual_seed(seed)
    features = torch.randn(2, 8, 16, 16)  # stride 4: 64 x 64 images
    boxes = [
        torch.tensor([[4.0, 6.0, 40.0, 50.0]]),
        torch.tensor([[10.0, 3.0, 60.0, 30.0], [0.0, 0.0, 64.0, 64.0]]),
    ]
    masks = [torch.zeros(1, 64, 64, dtype=torch.uint8), torch.zeros(2, 64, 60, dtype=torch.uint8)]
    masks[0][0, 10:40, 8:30] = 1
    masks[1][0, 5:25, 15:50] = 1
    masks[1][1, 20:60, 0:40] = 1
    return features, boxes, masks


def test_point_loss_uses_gt_class_and_labels_at_the_same_points_in_image_coordinates():
    """Recompute ``loss_mask_point`` by hand with the same random draws."""
    features, boxes, masks = _branch_inputs()
    branch = PointRendMaskBranch(8, 4, SMALL)
    classes = torch.tensor([3, 1, 2])
    mask_index = torch.tensor([0, 1, 2])
    torch.manual_seed(123)
    losses = branch.losses(features, 4.0, boxes, classes, FlatMasks(masks), mask_index)
    assert set(losses) == {"loss_mask", "loss_mask_point"}

    torch.manual_seed(123)
    coarse = branch.coarse_logits(features, 4.0, boxes)
    points = get_uncertain_point_coords_with_randomness(
        select_class(coarse, classes), calculate_uncertainty, 196, 3.0, 0.75
    )
    assert points.shape == (3, 196, 2)
    logits, image_points = branch.point_logits(features, 4.0, boxes, coarse, points)
    all_boxes = torch.cat(boxes)
    torch.testing.assert_close(image_points, box_to_image_coords(all_boxes, points))
    gt_per_box = [masks[0][0], masks[1][0], masks[1][1]]
    labels = torch.stack(
        [
            point_sample(m[None, None].float(), (p / torch.tensor([m.shape[1], m.shape[0]]))[None])[
                0, 0
            ]
            for m, p in zip(gt_per_box, image_points)
        ]
    )
    chosen = logits[torch.arange(3), classes]  # R x P: the gt class channel only
    expected = F.binary_cross_entropy_with_logits(chosen, labels)
    torch.testing.assert_close(losses["loss_mask_point"], expected)

    targets = coarse_mask_targets(FlatMasks(masks), mask_index, all_boxes, 7)
    expected_mask = F.binary_cross_entropy_with_logits(coarse[torch.arange(3), classes], targets)
    torch.testing.assert_close(losses["loss_mask"], expected_mask)


def test_losses_without_positive_boxes_are_zero_and_differentiable():
    features, _, masks = _branch_inputs()
    features.requires_grad_(True)
    branch = PointRendMaskBranch(8, 4, SMALL)
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    losses = branch.losses(
        features,
        4.0,
        empty,
        torch.zeros(0, dtype=torch.long),
        FlatMasks(masks),
        torch.zeros(0, dtype=torch.long),
    )
    assert all(v.item() == 0 for v in losses.values())
    sum(losses.values()).backward()
    assert branch.point_head.predictor.weight.grad is not None


def test_losses_with_zero_size_and_outside_boxes_are_finite():
    features, _, masks = _branch_inputs()
    branch = PointRendMaskBranch(8, 4, SMALL)
    boxes = [
        torch.tensor([[10.0, 10.0, 10.0, 30.0]]),
        torch.tensor([[20.0, 5.0, 40.0, 5.0], [-30.0, 40.0, 30.0, 90.0]]),
    ]
    losses = branch.losses(
        features, 4.0, boxes, torch.tensor([1, 2, 3]), FlatMasks(masks), torch.tensor([0, 1, 2])
    )
    assert all(torch.isfinite(v) for v in losses.values())


def test_render_dense_output_is_the_point_head_on_every_cell_of_the_predicted_class():
    """With output 28 (<= 784 points) the shortcut predicts every cell: check the plumbing."""
    features, boxes, _ = _branch_inputs()
    config = small_config(output_size=28)
    branch = PointRendMaskBranch(8, 4, config)
    classes = torch.tensor([2, 0, 3])
    with torch.no_grad():
        out = branch.render(features, 4.0, boxes, classes)
        coarse = branch.coarse_logits(features, 4.0, boxes)
        cells = grid_cell_centres(28, 28).expand(3, -1, -1)
        logits, _ = branch.point_logits(features, 4.0, boxes, coarse, cells)
    assert out.shape == (3, 1, 28, 28)
    expected = logits[torch.arange(3), classes].view(3, 1, 28, 28)
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("map_side", [16, 160])  # more points than pixels (projected) / fewer
def test_render_equals_the_plain_subdivision_loop(map_side, monkeypatch):
    """The render's fused point head (class rows only, first layer projected over the map when
    that is cheaper) gives the plain loop's masks: the plain head's point_logits, then the class
    selected; with autograd the render calls the plain head and gives the same masks."""
    features, boxes, _ = _branch_inputs()
    features = F.interpolate(features, size=(map_side, map_side), mode="bilinear")
    stride = 64 / map_side
    config = small_config(output_size=56, subdivision_num_points=100)
    branch = PointRendMaskBranch(8, 4, config)
    for p in branch.point_head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    classes = torch.tensor([2, 0, 3])
    projections = []
    project = FusedPointHead.project_fine_features
    monkeypatch.setattr(
        FusedPointHead,
        "project_fine_features",
        lambda self, f: projections.append(f) or project(self, f),
    )
    with torch.no_grad():
        out = branch.render(features, stride, boxes, classes)
        # 3 boxes x 3 steps x 100 points = 900: more than 2 x 16^2 pixels, fewer than 2 x 160^2
        assert len(projections) == (1 if map_side == 16 else 0)
        coarse = branch.coarse_logits(features, stride, boxes)

        def predict(points):
            logits, _ = branch.point_logits(features, stride, boxes, coarse, points)
            return select_class(logits, classes)

        expected = subdivision_inference(
            select_class(coarse, classes), predict, calculate_uncertainty, None, 100, (56, 56)
        )
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    with torch.enable_grad():
        plain = branch.render(features, stride, boxes, classes)
    assert plain.requires_grad and len(projections) == (1 if map_side == 16 else 0)
    torch.testing.assert_close(plain.detach(), expected, atol=1e-5, rtol=1e-5)


def test_render_default_is_224_and_empty_input():
    features, boxes, _ = _branch_inputs()
    branch = PointRendMaskBranch(8, 4, SMALL)
    with torch.no_grad():
        out = branch.render(features, 4.0, boxes, torch.tensor([1, 2, 3]))
        empty = branch.render(
            features, 4.0, [torch.zeros(0, 4), torch.zeros(0, 4)], torch.zeros(0, dtype=torch.long)
        )
    assert out.shape == (3, 1, 224, 224) and torch.isfinite(out).all()
    assert empty.shape == (0, 1, 224, 224)


def test_both_modes_are_methods_of_the_branch_and_predict_picks_the_configured_one(monkeypatch):
    features, boxes, _ = _branch_inputs()
    classes = torch.tensor([1, 2, 3])
    fixed = PointRendMaskBranch(8, 4, small_config(output_size=28)).eval()
    per_box = PointRendMaskBranch(8, 4, small_config(output_size=28, mask_resolution="box"))
    per_box.load_state_dict(fixed.state_dict())
    layouts = []
    coarse = PointRendMaskBranch.coarse_logits
    monkeypatch.setattr(
        PointRendMaskBranch,
        "coarse_logits",
        lambda self, f, *a: (
            layouts.append(f.is_contiguous(memory_format=torch.channels_last))
            or coarse(self, f, *a)
        ),
    )
    with torch.no_grad():
        torch.testing.assert_close(
            fixed.predict(features, 4.0, boxes, classes),
            fixed.render(features, 4.0, boxes, classes),
        )
        masks = per_box.predict(features, 4.0, boxes, classes, torch.full((2, 2), 0.5))
        alone = per_box.render_by_box_size(features, 4.0, boxes, classes, torch.full((2, 2), 0.5))
        at_image_size = per_box.predict(features, 4.0, boxes, classes)
    assert layouts == [True, False, True, False, True]  # predict copies to channels-last once
    assert isinstance(masks, MasksBySize) and masks.count == 3
    assert masks.sizes().tolist() == alone.sizes().tolist()
    for (i, a), (j, b) in zip(masks.groups, alone.groups):
        assert torch.equal(i, j)
        torch.testing.assert_close(a, b)
    assert (at_image_size.sizes() >= masks.sizes()).all()  # scale 1: twice the grid of 0.5
    assert (at_image_size.sizes() > masks.sizes()).any()


def test_config_validation():
    with pytest.raises(ValueError, match="coarse_grid"):
        PointRendMaskConfig(coarse_grid=7)
    with pytest.raises(ValueError, match="output_size"):
        PointRendMaskConfig(output_size=3)
