"""Per-box mask resolution: each box rendered at about its size in the output image."""

import pytest
import torch

from pointrend.cli import main
from pointrend.engine.build import build_model
from pointrend.engine.config import config_to_dict, load_config
from pointrend.engine.evaluate import detect, predict_pasted
from pointrend.export import export_onnx
from pointrend.instance import PointRendMaskBranch, PointRendMaskConfig, paste_masks
from pointrend.instance.box_resolution import box_grid_sides, box_output_size, step_points
from pointrend.instance.model import PointRendMaskRCNN
from pointrend.instance.paste import MasksBySize
from pointrend.instance.roi_heads import output_scales
from pointrend.models import pointrend_maskrcnn
from pointrend.points import select_class
from pointrend.render import subdivision_sizes
from pointrend.settings import PointRendSettings, replace_options

CONFIG = "configs/synthetic_instance_pointrend_r18.yaml"


def small_config(**options):
    narrow = PointRendMaskConfig(
        coarse_head_conv_dim=16,
        coarse_head_fc_dim=32,
        pointrend=PointRendSettings(point_head_fc_dim=16),
    )
    return replace_options(narrow, mask_resolution="box", **options)


def branch_and_features(seed=0, **options):
    torch.manual_seed(seed)
    branch = PointRendMaskBranch(8, 4, small_config(**options)).eval()
    for p in branch.point_head.parameters():
        torch.nn.init.normal_(p, std=0.3)
    return branch, torch.randn(2, 8, 64, 64)  # stride 4: 256 x 256 images


def test_grid_side_is_the_first_power_of_two_times_7_at_least_the_box_capped():
    sides = torch.tensor([0.0, 5.0, 7.0, 7.5, 14.0, 100.0, 224.0, 224.2, 896.0, 5000.0])
    grid = box_grid_sides(sides, 7, 1024)
    assert grid.tolist() == [7, 7, 7, 14, 14, 112, 224, 448, 896, 1024]
    assert (grid[:-1] >= sides[:-1]).all()
    assert box_grid_sides(torch.tensor([300.0]), 7, 100).tolist() == [100]


def test_box_sides_are_measured_in_output_pixels():
    boxes = torch.tensor([[0.0, 0.0, 50.0, 20.0], [10.0, 10.0, 20.0, 40.0]])
    scales = torch.tensor([[2.0, 2.0], [1.0, 3.0]])
    assert box_output_size(boxes, scales).tolist() == [[40.0, 100.0], [90.0, 10.0]]
    assert output_scales([(100, 200)], [(50, 300)]).tolist() == [[1.5, 0.5]]
    assert output_scales([(100, 200)], [(100, 200)]).tolist() == [[1.0, 1.0]]
    with pytest.raises(ValueError, match="2 image sizes but 1 output sizes"):
        output_scales([(100, 200), (50, 50)], [(100, 200)])


def test_points_per_step_follow_the_grid_side_from_the_paper_s_784_at_224():
    config = PointRendMaskConfig()
    steps = subdivision_sizes((7, 7), None, (224, 224))
    assert step_points(config, steps) == [784] * 5  # the fixed mode's schedule
    assert step_points(config, subdivision_sizes((7, 7), None, (56, 56))) == [196] * 3
    # larger grids: 224 first, then 3.5 points per cell of each step's side
    large = subdivision_sizes((7, 7), None, (896, 896))
    assert step_points(config, large) == [784] * 5 + [1568, 3136]
    thin = subdivision_sizes((7, 7), None, (56, 896))  # ... 56 x 224, 56 x 448, 56 x 896
    assert step_points(config, thin)[-3:] == [784, round(3.5 * 252), round(3.5 * 476)]
    sparse = replace_options(config, points_per_side=2.0)
    assert step_points(sparse, subdivision_sizes((7, 7), None, (56, 56))) == [112] * 3
    assert step_points(config, []) == []


@torch.no_grad()
def test_box_mode_equals_fixed_224_when_every_box_is_224_in_the_output():
    branch, features = branch_and_features()
    boxes = [torch.tensor([[4.0, 6.0, 116.0, 100.0]]), torch.tensor([[10.0, 3.0, 70.0, 115.0]])]
    scales = torch.tensor([[2.0, 2.0], [2.0, 2.0]])  # sides 94..112 px -> 188..224 output px
    classes = torch.tensor([1, 3])
    masks = branch.render_by_box_size(features, 4.0, boxes, classes, scales)
    fixed = branch.render(features, 4.0, boxes, classes)
    assert [m.shape for _, m in masks.groups] == [(2, 1, 224, 224)]
    torch.testing.assert_close(masks.groups[0][1], fixed, atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_grouping_by_steps_gives_the_masks_of_each_box_rendered_alone():
    branch, features = branch_and_features(max_mask_size=100)
    boxes = [
        torch.tensor([[4.0, 6.0, 40.0, 50.0], [0.0, 0.0, 5.0, 6.0]]),
        torch.tensor([[10.0, 3.0, 60.0, 30.0], [0.0, 0.0, 250.0, 240.0], [8.0, 8.0, 20.0, 9.0]]),
    ]
    classes = torch.tensor([1, 2, 3, 1, 2])
    scales = torch.ones(2, 2)
    masks = branch.render_by_box_size(features, 4.0, boxes, classes, scales)
    # (h, w) px: 44 x 36, 6 x 5, 27 x 50, 240 x 250 (capped), 1 x 12
    assert masks.sizes().tolist() == [[56, 56], [7, 7], [28, 56], [100, 100], [7, 14]]
    assert sorted(len(i) for i, _ in masks.groups) == [1, 1, 1, 1, 1]
    first = [0, 0, 1, 1, 1]
    slot = [0, 1, 0, 1, 2]
    coarse = branch.coarse_logits(features, 4.0, boxes)
    for index, group in masks.groups:
        for row, r in enumerate(index.tolist()):
            alone = [torch.zeros(0, 4), torch.zeros(0, 4)]
            alone[first[r]] = boxes[first[r]][slot[r] : slot[r] + 1]
            single = branch.render_by_box_size(features, 4.0, alone, classes[r : r + 1], scales)
            torch.testing.assert_close(group[row], single.groups[0][1][0], atol=1e-5, rtol=1e-5)
            if group.shape[-2:] == (7, 7):  # small boxes: no refinement step, the coarse mask
                expected = select_class(coarse[r : r + 1], classes[r : r + 1])[0]
                torch.testing.assert_close(group[row], expected)


@torch.no_grad()
def test_zero_detections():
    branch, features = branch_and_features()
    empty = [torch.zeros(0, 4), torch.zeros(0, 4)]
    masks = branch.render_by_box_size(
        features, 4.0, empty, torch.zeros(0, dtype=torch.long), torch.ones(2, 2)
    )
    assert masks.count == 0 and masks.groups == []
    assert paste_masks(masks, torch.zeros(0, 4), (30, 40)).shape == (0, 1, 30, 40)


def test_masks_by_size_paste_exactly_on_grid_aligned_boxes_and_as_one_by_one():
    torch.manual_seed(0)
    a, b = torch.rand(2, 1, 28, 28), torch.rand(1, 1, 14, 7)
    boxes = torch.tensor([[2.0, 3.0, 30.0, 31.0], [20.0, 1.0, 27.0, 15.0], [5.5, 7.2, 30.1, 40.0]])
    masks = MasksBySize(3, [(torch.tensor([0, 2]), a), (torch.tensor([1]), b)])
    out = paste_masks(masks, boxes, (48, 40))
    assert out.shape == (3, 1, 48, 40)
    torch.testing.assert_close(out[0, 0, 3:31, 2:30], a[0, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[1, 0, 1:15, 20:27], b[0, 0], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[2:3], paste_masks(a[1:2], boxes[2:3], (48, 40)))
    per_image = masks.split([1, 2])
    assert [p.count for p in per_image] == [1, 2]
    assert per_image[1].sizes().tolist() == [[14, 7], [28, 28]]


def tiny_model(**options):
    torch.manual_seed(0)
    return pointrend_maskrcnn(
        "resnet18", 4, box_head_dim=32, min_size=64, max_size=96, coarse_head_fc_dim=32, **options
    )


def forced_model_with_spy(monkeypatch, boxes, labels):
    """A box-mode model whose detections are ``boxes`` (resized pixels); the list it returns
    receives the roi heads' unpasted masks of every call."""
    model = tiny_model(mask_resolution="box").eval()
    model.roi_heads.postprocess_detections = lambda *args: (
        [boxes],
        [torch.ones(len(boxes))],
        [labels],
    )
    seen = []
    heads_forward = type(model.roi_heads).forward

    def spy(self, *args, **kwargs):
        result, losses = heads_forward(self, *args, **kwargs)
        seen.append(result[0]["masks"])
        return result, losses

    monkeypatch.setattr(type(model.roi_heads), "forward", spy)
    return model, seen


def test_model_renders_each_box_at_its_size_in_the_original_image(monkeypatch):
    forced = torch.tensor([[10.0, 10.0, 38.0, 24.0], [2.0, 2.0, 5.0, 4.0]])
    model, seen = forced_model_with_spy(monkeypatch, forced, torch.tensor([1, 2]))
    with torch.no_grad():
        (out,) = model([torch.rand(3, 128, 160)])  # resized to 64 x 80: scale 2 back
    assert out["masks"].shape == (2, 1, 128, 160)
    # 28 x 14 resized px = 56 x 28 output px; 6 x 4 px -> 7 x 7
    assert seen[0].sizes().tolist() == [[28, 56], [7, 7]]
    images, _ = model.transform([torch.rand(3, 128, 160)])
    assert type(images.image_sizes) is list and images.image_sizes == [(64, 80)]


def test_pasting_at_a_larger_size_renders_for_that_size(monkeypatch):
    forced = torch.tensor([[10.0, 10.0, 38.0, 24.0]])
    model, seen = forced_model_with_spy(monkeypatch, forced, torch.tensor([1]))
    image = torch.rand(3, 64, 80)  # not resized
    small, large = predict_pasted(model, [image], [[(64, 80)], [(256, 320)]])
    assert seen[0].sizes().tolist() == [[56, 112]]  # 14 x 28 px, x 4
    assert small[0]["masks"].shape == (1, 1, 64, 80)
    assert large[0]["masks"].shape == (1, 1, 256, 320)
    assert "forward" not in vars(model.transform)
    with torch.no_grad():
        model([image])
    assert seen[1].sizes().tolist() == [[14, 28]]


def _attributes(model):
    """Every module's attribute names, and each value by identity but lists (torchvision's
    anchor generator rebuilds its list of cell anchors at every call)."""
    return {
        name: {k: None if isinstance(v, list) else id(v) for k, v in vars(m).items()}
        for name, m in model.named_modules()
    }


def test_a_forward_and_pastes_at_other_sizes_leave_the_model_untouched():
    model = tiny_model(mask_resolution="box").eval()
    image = torch.rand(3, 64, 80)
    with torch.no_grad():
        model([image])  # torchvision's RoI pooler keeps the scales of the first call
    before = _attributes(model)
    with torch.no_grad():
        model([image])
    predict_pasted(model, [image], [[(128, 160)]])
    detect(model, [image], [(128, 160)], score_thresh=0.3)
    assert _attributes(model) == before
    assert type(model).forward is PointRendMaskRCNN.forward


def test_training_is_unchanged_by_the_option():
    image = torch.rand(3, 64, 80)
    masks = torch.zeros(1, 64, 80, dtype=torch.uint8)
    masks[0, 10:40, 10:50] = 1
    target = {"boxes": torch.tensor([[10.0, 10.0, 50.0, 40.0]]), "labels": torch.tensor([1])}
    losses = []
    for resolution in ("fixed", "box"):
        model = tiny_model(mask_resolution=resolution).train()
        torch.manual_seed(1)
        losses.append(model([image], [{**target, "masks": masks}]))
    assert losses[0].keys() == losses[1].keys()
    for key in losses[0]:
        torch.testing.assert_close(losses[0][key], losses[1][key])


def test_yaml_option_reaches_the_branch_and_export_refuses_it(tmp_path, capsys):
    cfg = load_config(CONFIG)
    cfg.model.options.update(mask_resolution="box", max_mask_size=512)
    model = build_model(cfg.model, 4).eval()
    config = model.roi_heads.mask_branch.config
    assert (config.mask_resolution, config.max_mask_size) == ("box", 512)
    with pytest.raises(ValueError, match="cannot export a model with mask_resolution 'box'"):
        export_onnx(model, tmp_path / "m.onnx")
    weights = tmp_path / "instance.pt"
    torch.save(
        {"model": model.state_dict(), "config": config_to_dict(cfg), "iteration": 0}, weights
    )
    argv = ["export", CONFIG, "--weights", str(weights), "--out", str(tmp_path / "m.onnx")]
    assert main(argv) == 1
    assert "mask_resolution 'box'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="mask_resolution must be one of"):
        PointRendMaskConfig(mask_resolution="boxes")
