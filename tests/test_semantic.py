import pytest
import torch
import torch.nn.functional as F

from pointrend.models import (
    OptionError,
    deeplabv3,
    pointrend_deeplabv3,
    pointrend_semantic_fpn,
    semantic_fpn,
)
from pointrend.pretrained import load_torchvision_weights, map_torchvision_state_dict
from pointrend.render import subdivision_inference
from pointrend.semantic import SemanticPointRendConfig, SemanticSegmenter
from pointrend.semantic.pointrend import sample_labels_nearest
from pointrend.settings import replace_options


def tiny(fn=pointrend_semantic_fpn, **kw):
    torch.manual_seed(0)
    opts = {"train_num_points": 128, "subdivision_num_points": 256, **kw}
    return fn("resnet18", 4, **opts)


@pytest.mark.parametrize("fn", [pointrend_semantic_fpn, pointrend_deeplabv3])
def test_losses_finite_and_gradients_reach_both_heads(fn):
    model = tiny(fn).train()
    images, labels = torch.rand(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))
    losses = model(images, labels)
    assert set(losses) == {"loss_sem_seg", "loss_sem_seg_point"}
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert model.point_head.predictor.weight.grad.abs().sum() > 0
    head_params = [p for p in model.coarse_head.parameters() if p.grad is not None]
    assert head_params and sum(p.grad.abs().sum() for p in head_params) > 0


def test_all_ignore_crop_gives_zero_finite_losses():
    model = tiny().train()
    losses = model(torch.rand(1, 3, 64, 64), torch.full((1, 64, 64), 255))
    for v in losses.values():
        assert torch.isfinite(v) and v.item() == 0.0
    sum(losses.values()).backward()  # still differentiable


def test_bad_labels_name_the_values():
    model = tiny().train()
    labels = torch.zeros(1, 64, 64, dtype=torch.long)
    labels[0, 0, :3] = torch.tensor([7, 9, 255])
    with pytest.raises(ValueError, match=r"labels \[7, 9\] outside \[0, 4\)"):
        model(torch.rand(1, 3, 64, 64), labels)


@pytest.mark.parametrize("fn", [pointrend_semantic_fpn, pointrend_deeplabv3, deeplabv3])
def test_odd_sizes_and_batch_of_one_give_exact_output(fn):
    model = tiny(fn).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 67, 101))["out"]
    assert out.shape == (1, 4, 67, 101) and torch.isfinite(out).all()


def test_thin_lines_in_labels_train():
    model = tiny().train()
    labels = torch.zeros(1, 65, 77, dtype=torch.long)
    labels[0, 30, :] = 1  # one-pixel lines
    labels[0, :, 40] = 2
    losses = model(torch.rand(1, 3, 65, 77), labels)
    assert all(torch.isfinite(v) for v in losses.values())


def test_nearest_label_sampling_and_outside_points():
    labels = torch.arange(12).view(1, 3, 4)
    pts = torch.tensor([[[0.5, 0.5], [3.9, 2.1], [4.0, 1.0], [-0.1, 0.0]]])
    assert sample_labels_nearest(labels, pts, 255).tolist() == [[0, 11, 255, 255]]


def test_untouched_pixels_equal_stepwise_upsampled_coarse_and_points_capped():
    model = tiny(pointrend_deeplabv3, subdivision_num_points=100).eval()
    images = torch.rand(1, 3, 128, 128)  # coarse 8 x 8: every step has more cells than points
    with torch.no_grad():
        features, coarse = model._features(images)
        fine = features[model.fine_index]
        refined, steps = model.render(fine, coarse, return_steps=True)
        plain = subdivision_inference(
            coarse,
            lambda p: torch.zeros(1, 4, p.shape[1]),
            lambda x: x[:, :1],
            steps=4,
            num_points=0,
        )
    assert [s.point_indices.shape[1] for s in steps] == [100] * 4
    # cells a step predicted, and everything their values spread to by later upsampling
    influence = torch.zeros(1, 1, *coarse.shape[-2:])
    for s in steps:
        influence = F.interpolate(influence, size=s.size, mode="nearest")
        influence = F.max_pool2d(influence, 3, stride=1, padding=1)
        influence.view(-1)[s.point_indices[0]] = 1
    untouched = influence[0, 0] == 0
    assert untouched.float().mean() > 0.3
    diff = (refined - plain).abs().amax(1)[0]
    assert diff[untouched].max() < 1e-5
    assert diff[~untouched].max() > 1e-3


def test_grid_training_points_are_deterministic():
    model = tiny(train_point_sampling="grid").train()
    images, labels = torch.rand(1, 3, 64, 64), torch.randint(0, 4, (1, 64, 64))
    torch.manual_seed(1)
    a = model(images, labels)["loss_sem_seg_point"]
    torch.manual_seed(2)
    b = model(images, labels)["loss_sem_seg_point"]
    assert a.item() == b.item()
    with pytest.raises(ValueError, match="train_point_sampling"):
        replace_options(SemanticPointRendConfig(), train_point_sampling="random")


def test_torchvision_deeplabv3_weights_map_onto_the_model():
    from torchvision.models.segmentation import deeplabv3_resnet50

    torch.manual_seed(0)
    tv = deeplabv3_resnet50(weights=None, weights_backbone=None, aux_loss=True, num_classes=21)
    state = tv.state_dict()
    ours = pointrend_deeplabv3("resnet50", 19)
    missing = load_torchvision_weights(ours, state, "deeplabv3")
    own = ours.state_dict()
    assert torch.equal(
        own["backbone.layer3.0.conv1.weight"], state["backbone.layer3.0.conv1.weight"]
    )
    assert torch.equal(
        own["coarse_head.0.convs.0.0.weight"], state["classifier.0.convs.0.0.weight"]
    )
    assert all(k.startswith(("point_head.", "coarse_head.4.")) for k in missing)
    assert "coarse_head.4.weight" in missing  # 21 classes do not fit 19
    mapped = map_torchvision_state_dict(state, deeplabv3("resnet50", 21), "deeplabv3")
    assert "coarse_head.4.weight" in mapped and not any(k.startswith("aux") for k in mapped)
    # the same weights, the same network: torchvision's output at output stride 8
    plain = deeplabv3("resnet50", 21, output_stride=8)
    load_torchvision_weights(plain, state, "deeplabv3")
    tv.eval(), plain.eval()
    images = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = tv((images - plain.mean) / plain.std)["out"]
        torch.testing.assert_close(plain(images)["out"], expected, atol=1e-4, rtol=1e-4)


def test_baseline_and_pointrend_builders_and_their_option_errors():
    plain, ours = tiny(semantic_fpn), tiny(pointrend_semantic_fpn)
    assert plain.point_head is None and ours.point_head is not None
    shared = {k: v.shape for k, v in ours.state_dict().items() if not k.startswith("point_")}
    assert {k: v.shape for k, v in plain.state_dict().items()} == shared
    assert plain.config.pointrend.train_num_points == 128  # kept, so a pair shares its options
    with pytest.raises(OptionError) as error:
        pointrend_deeplabv3("resnet18", 3, train_num_pionts=10)
    message = str(error.value)
    assert "unknown option 'train_num_pionts'; did you mean 'train_num_points'?" in message
    known = message.split("known: ")[1].split(", ")
    assert {"output_stride", "subdivision_num_points", "norm"} <= set(known)
    assert not [k for k in known if k.startswith("_")]
    with pytest.raises(ValueError, match="Semantic FPN has no torchvision weights"):
        semantic_fpn("resnet18", 3, weights="COCO")


def test_segmenter_takes_its_settings_by_name():
    with pytest.raises(TypeError):
        SemanticSegmenter(torch.nn.Identity(), torch.nn.Identity(), 4, 0, 4, 3)
    with pytest.raises(ValueError, match="coarse_stride must be a power of two, got 12"):
        SemanticSegmenter(
            torch.nn.Identity(),
            torch.nn.Identity(),
            num_classes=3,
            coarse_stride=12,
            fine_index=0,
            fine_stride=4,
        )


def test_learning_beats_upsampled_coarse_on_boundary_f():
    """A tiny model overfits label maps with thin structures; PointRend's full-resolution output
    beats the same model's bilinearly upsampled coarse logits on boundary F-score."""
    from pointrend.evaluation import boundary_f_score

    torch.manual_seed(0)
    H = W = 96
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    labels = torch.zeros(3, H, W, dtype=torch.long)
    images = torch.rand(3, 3, H, W) * 0.3
    for i in range(3):
        disk = (xx - 30 - 10 * i) ** 2 + (yy - 50) ** 2 < (22 - 3 * i) ** 2
        line = (yy - (20 + 15 * i) - (xx // (5 + i))).abs() < 1
        labels[i][disk] = 1
        labels[i][line] = 2
        images[i, 0][disk] += 0.6
        images[i, 1][line] += 0.6
    model = pointrend_semantic_fpn(
        "resnet18", 3, train_num_points=512, subdivision_num_points=2048, conv_dims=64
    )
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    model.train()
    for _ in range(60):
        loss = sum(model(images, labels).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        refined = model(images)["out"].argmax(1)
        _, coarse = model._features(images)
        upsampled = F.interpolate(coarse, size=(H, W), mode="bilinear", align_corners=False).argmax(
            1
        )
    f_refined = sum(boundary_f_score(labels[i], refined[i], tolerance=1) for i in range(3)) / 3
    f_coarse = sum(boundary_f_score(labels[i], upsampled[i], tolerance=1) for i in range(3)) / 3
    print(f"boundary F: refined {f_refined:.3f}, upsampled coarse {f_coarse:.3f}")
    assert f_refined > f_coarse + 0.02, (f_refined, f_coarse)
