import pytest
import torch
from torch import nn

from pointrend import (
    PointHead,
    calculate_uncertainty,
    dense_point_prediction,
    subdivision_inference,
    subdivision_sizes,
)
from pointrend.semantic import SemanticPointRendConfig, SemanticSegmenter
from pointrend.settings import replace_options

SIZE = 224.0


def disk_sdf(pts, cx=0.47, cy=0.53, r=0.31):
    d = ((pts[..., 0] - cx) ** 2 + (pts[..., 1] - cy) ** 2).sqrt()
    return (r - d) * SIZE


def ring_sdf(pts, cx=0.5, cy=0.5, r=0.3, width=4.0):
    d = ((pts[..., 0] - cx) ** 2 + (pts[..., 1] - cy) ** 2).sqrt() * SIZE
    inner, outer = r * SIZE, r * SIZE + width
    return torch.minimum(d - inner, outer - d)


class Oracle:
    """Predicts the signed distance (224x224 pixels, positive inside) as logit; counts points."""

    def __init__(self, sdf):
        self.sdf = sdf
        self.calls = []

    def __call__(self, pts):
        self.calls.append(pts.shape[1])
        return self.sdf(pts).unsqueeze(1)


def truth(sdf, size=224):
    c = (torch.arange(size) + 0.5) / size
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return sdf(torch.stack([xx, yy], -1)) > 0


@pytest.mark.parametrize("sdf", [disk_sdf, ring_sdf], ids=["disk", "ring"])
def test_oracle_renders_shape_at_224_from_7x7(sdf):
    oracle = Oracle(sdf)
    coarse = dense_point_prediction(oracle, 1, (7, 7))
    oracle.calls.clear()
    out = subdivision_inference(coarse, oracle, calculate_uncertainty, steps=5, num_points=784)
    assert out.shape == (1, 1, 224, 224)
    wrong = ((out[0, 0] > 0) != truth(sdf)).float().mean().item()
    assert wrong < 0.01, wrong
    assert sum(oracle.calls) == 28 * 28 + 3 * 784


def test_plain_loop_counts_and_equals_shortcut():
    oracle = Oracle(ring_sdf)
    coarse = dense_point_prediction(oracle, 2, (7, 7))
    oracle.calls.clear()
    plain = subdivision_inference(coarse, oracle, calculate_uncertainty, 5, 784, shortcut=False)
    assert sum(oracle.calls) == 196 + 4 * 784
    oracle.calls.clear()
    fast = subdivision_inference(coarse, oracle, calculate_uncertainty, 5, 784, shortcut=True)
    assert sum(oracle.calls) == 3136
    torch.testing.assert_close(plain, fast)


def test_points_per_step_as_a_list():
    oracle = Oracle(ring_sdf)
    coarse = dense_point_prediction(oracle, 2, (7, 7))
    oracle.calls.clear()
    same = subdivision_inference(coarse, oracle, calculate_uncertainty, 5, [784] * 5)
    assert sum(oracle.calls) == 3136  # the shortcut as with one count
    torch.testing.assert_close(
        same, subdivision_inference(coarse, oracle, calculate_uncertainty, 5, 784)
    )
    oracle.calls.clear()
    counts = [196, 100, 900, 300, 400]  # 14x14 dense; 28x28 has more cells than 100: no shortcut
    subdivision_inference(coarse, oracle, calculate_uncertainty, 5, counts)
    assert oracle.calls == [196, 100, 900, 300, 400]
    with pytest.raises(ValueError, match="4 point counts given for 5 steps"):
        subdivision_inference(coarse, oracle, calculate_uncertainty, 5, [784] * 4)


def test_many_points_equals_dense_prediction():
    torch.manual_seed(0)
    w = torch.randn(3)
    predictor = lambda p: torch.sin(p @ w[:2] * 9 + w[2]).unsqueeze(1)  # noqa: E731
    coarse = torch.randn(1, 1, 5, 6)
    out = subdivision_inference(coarse, predictor, calculate_uncertainty, 3, 10**6, shortcut=False)
    torch.testing.assert_close(out, dense_point_prediction(predictor, 1, (40, 48)))


def test_uncertain_cells_are_replaced_and_others_keep_interpolation():
    coarse = torch.randn(2, 3, 4, 4)
    predictor = lambda p: torch.full((p.shape[0], 3, p.shape[1]), 100.0)  # noqa: E731
    unc = lambda logits: -logits[:, :1].abs()  # noqa: E731
    out, steps = subdivision_inference(
        coarse, predictor, unc, 1, 5, shortcut=False, return_steps=True
    )
    up = torch.nn.functional.interpolate(
        coarse, scale_factor=2, mode="bilinear", align_corners=False
    )
    changed = (out != up).any(1).flatten(1)
    assert changed.sum(1).tolist() == [5, 5]
    assert steps[0].point_indices.shape == (2, 5)
    for r in range(2):
        assert set(changed[r].nonzero().flatten().tolist()) == set(
            steps[0].point_indices[r].tolist()
        )


def test_output_size_is_exact_for_odd_sizes():
    sizes = subdivision_sizes((21, 33), output_size=(333, 517))
    assert sizes[-1] == (333, 517) and sizes[0] == (42, 66)
    out = subdivision_inference(
        torch.randn(1, 4, 21, 33),
        lambda p: torch.zeros(1, 4, p.shape[1]),
        lambda x: x[:, :1],
        None,
        100,
        output_size=(333, 517),
    )
    assert out.shape == (1, 4, 333, 517)
    with pytest.raises(ValueError, match="smaller"):
        subdivision_sizes((8, 8), output_size=(4, 4))


def test_return_steps_records_each_step_and_low_precision():
    oracle = Oracle(disk_sdf)
    coarse = dense_point_prediction(oracle, 1, (7, 7)).to(torch.bfloat16)
    out, steps = subdivision_inference(
        coarse, oracle, calculate_uncertainty, 5, 784, return_steps=True
    )
    assert out.dtype == torch.bfloat16
    assert [s.size for s in steps] == [(28, 28), (56, 56), (112, 112), (224, 224)]
    assert [s.point_indices.shape[1] for s in steps] == [784, 784, 784, 784]


def test_inference_without_autograd_writes_in_place_with_the_same_result():
    """No grad: each step writes its predictions into its own upsampled map (one full-size map
    alive, not two); the result, the recorded steps and the caller's coarse logits are those of
    the out-of-place loop."""
    coarse = dense_point_prediction(Oracle(ring_sdf), 2, (7, 7))
    kept = coarse.clone()
    runs = []
    for grad in (True, False):
        with torch.set_grad_enabled(grad):
            runs.append(
                subdivision_inference(
                    coarse, Oracle(ring_sdf), calculate_uncertainty, 5, 300, return_steps=True
                )
            )
    (out_grad, steps_grad), (out, steps) = runs
    torch.testing.assert_close(out, out_grad)
    for a, b in zip(steps, steps_grad):
        torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(coarse, kept)


def _semantic_renderer(**options):
    """A stride-4 semantic renderer fed features directly (no backbone), 5 classes."""
    torch.manual_seed(0)
    head = PointHead(6, 5, fc_dim=8, coarse_pred_each_layer=False)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.5)
    config = replace_options(SemanticPointRendConfig(), **options)
    model = SemanticSegmenter(
        nn.Identity(),
        nn.Identity(),
        num_classes=5,
        coarse_stride=4,
        fine_index=0,
        fine_stride=4,
        point_head=head,
        config=config,
    )
    return model.eval()


def test_semantic_render_with_the_fused_head_equals_the_plain_head():
    model = _semantic_renderer(subdivision_num_points=30)
    fine, coarse = torch.randn(2, 6, 12, 10), torch.randn(2, 5, 12, 10)
    with torch.no_grad():
        fused = model.render(fine, coarse)
    plain = model.render(fine, coarse)  # autograd on: the plain head
    assert plain.requires_grad and fused.shape == (2, 5, 48, 40)
    torch.testing.assert_close(fused, plain.detach(), atol=1e-5, rtol=1e-5)


def test_semantic_render_with_fewer_steps_upsamples_to_the_canvas():
    fine, coarse = torch.randn(1, 6, 12, 10), torch.randn(1, 5, 12, 10)
    model = _semantic_renderer(subdivision_num_points=30, subdivision_steps=1)
    with torch.no_grad():
        out, steps = model.render(fine, coarse, return_steps=True)
    assert out.shape == (1, 5, 48, 40) and [s.size for s in steps] == [(24, 20)]
    up = torch.nn.functional.interpolate(
        steps[0].logits, size=(48, 40), mode="bilinear", align_corners=False
    )
    torch.testing.assert_close(out, up)
