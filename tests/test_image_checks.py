"""Both models take the same images (float32 RGB in [0, 1]) and refuse others in one line."""

import pytest
import torch

from pointrend.models import pointrend_maskrcnn, pointrend_semantic_fpn


@pytest.fixture(scope="module")
def models():
    torch.manual_seed(0)
    instance = pointrend_maskrcnn(
        "resnet18", 4, weights=None, weights_backbone=None, min_size=32, max_size=32
    ).eval()
    semantic = pointrend_semantic_fpn("resnet18", 4, subdivision_num_points=64).eval()
    return instance, semantic


def _run(models, which, image):
    instance, semantic = models
    with torch.no_grad():
        return instance([image]) if which == "instance" else semantic(image[None])


GOOD = torch.rand(3, 24, 20)
BAD = [
    (
        (GOOD * 255).to(torch.uint8),
        r"must be floating point with values in \[0, 1\], got torch\.uint8: use image\.float\(\) / 255",
    ),
    (
        (GOOD * 255).to(torch.int32),
        r"must be floating point .* got torch\.int32: use image\.float\(\)",
    ),
    (torch.rand(4, 24, 20), r"3 x H x W RGB, got shape .*4, 24, 20\).*RGBA"),
    (GOOD.permute(1, 2, 0), r"3 x H x W RGB, got shape .*24, 20, 3\).*channels-last"),
    (torch.rand(3, 0, 0), r"is empty: shape .*3, 0, 0\), H and W must be at least 1"),
    (torch.full((3, 24, 20), float("nan")), r"holds NaN or infinite values"),
    (GOOD * 255, r"values in \[.*\], expected \[0, 1\] \(0-255 values: divide by 255\)"),
]


@pytest.mark.parametrize("which", ["instance", "semantic"])
@pytest.mark.parametrize("image, message", BAD, ids=lambda v: "" if isinstance(v, str) else None)
def test_both_models_refuse_the_same_inputs_in_one_line(models, which, image, message):
    with pytest.raises(ValueError, match=message) as err:
        _run(models, which, image)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("images")  # names the argument


@pytest.mark.parametrize("which", ["instance", "semantic"])
def test_both_models_take_float32_in_unit_range_of_any_size(models, which):
    for image in (GOOD, torch.zeros(3, 1, 1), torch.ones(3, 8, 200)):
        out = _run(models, which, image)
        masks = out[0]["masks"] if which == "instance" else out["out"]
        assert tuple(masks.shape[-2:]) == tuple(image.shape[-2:])


def test_check_outside_a_model_names_the_input():
    from pointrend.image_checks import check_image_tensor

    with pytest.raises(ValueError, match=r"^batch must be N x 3 x H x W, got shape \(3, 4, 4\)$"):
        check_image_tensor(torch.rand(3, 4, 4), "batch", batched=True)
    check_image_tensor(torch.rand(2, 3, 4, 4), "batch", batched=True)


def test_instance_model_refuses_an_image_resizing_would_make_empty(models):
    instance, _ = models  # min_size = max_size = 32
    with torch.no_grad():
        assert instance([torch.rand(3, 8, 64)])[0]["masks"].shape[-2:] == (8, 64)
    with pytest.raises(
        ValueError, match=r"images\[0\] is 1 x 300: .* short side would be 0 pixels"
    ):
        _run(models, "instance", torch.rand(3, 1, 300))


def test_wrong_containers_are_one_line_errors(models):
    instance, semantic = models
    with torch.no_grad():
        for call, message in (
            (
                lambda: instance([]),
                r"^images must be a non-empty list of 3 x H x W tensors, got empty$",
            ),
            (lambda: instance(GOOD), r"^images must be a non-empty list .* got Tensor$"),
            (lambda: semantic([GOOD]), r"^images must be a torch\.Tensor, got list$"),
        ):
            with pytest.raises(ValueError, match=message):
                call()
