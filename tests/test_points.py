import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointrend import (
    box_to_image_coords,
    calculate_semantic_uncertainty,
    calculate_uncertainty,
    generate_regular_grid_point_coords,
    get_uncertain_point_coords_on_grid,
    get_uncertain_point_coords_with_randomness,
    image_to_box_coords,
    point_sample,
    point_sample_fine_grained_features,
)
from pointrend.points import sample_training_points, select_class
from pointrend.settings import (
    INSTANCE_SETTINGS,
    SEMANTIC_SETTINGS,
    PointRendSettings,
    replace_options,
)


def test_point_sample_at_cell_centres_returns_cell_values():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 7)
    ys, xs = torch.meshgrid(torch.arange(5), torch.arange(7), indexing="ij")
    pts = torch.stack([(xs + 0.5) / 7, (ys + 0.5) / 5], -1).reshape(1, -1, 2).expand(2, -1, -1)
    out = point_sample(x, pts)
    assert out.shape == (2, 3, 35)
    torch.testing.assert_close(out, x.reshape(2, 3, 35), rtol=1e-5, atol=1e-6)


def test_point_sample_between_centres_is_bilinear_mix():
    x = torch.tensor([[[[0.0, 4.0], [8.0, 12.0]]]])
    # a quarter of the way from the centre of cell (0, 0) to that of cell (0, 1), halfway down
    pt = torch.tensor([[[0.25 + 0.25 * 0.5, 0.5]]])
    expected = (1 - 0.25) * ((0 + 8) / 2) + 0.25 * ((4 + 12) / 2)
    out = point_sample(x, pt)
    assert out.item() == pytest.approx(expected, rel=1e-5)


def test_point_sample_grid_form_and_zero_padding():
    x = torch.ones(1, 1, 4, 4)
    grid = torch.tensor([[[[0.5, 0.5], [-0.5, 0.5]]]])  # 1 x 1 x 2 x 2
    out = point_sample(x, grid)
    assert out.shape == (1, 1, 1, 2)
    assert out[0, 0, 0, 0] == pytest.approx(1.0)
    assert out[0, 0, 0, 1] == 0.0


def test_point_sample_gradients_reach_input():
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    pts = torch.rand(1, 10, 2)
    point_sample(x, pts).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_point_sample_mixed_dtypes():
    x = torch.randn(1, 2, 6, 6, dtype=torch.bfloat16)
    out = point_sample(x, torch.rand(1, 5, 2))  # float32 grid, bfloat16 input
    assert out.dtype == torch.bfloat16


def test_point_sample_shape_errors_name_the_shape():
    with pytest.raises(ValueError, match="N x C x H x W"):
        point_sample(torch.randn(2, 6, 6), torch.rand(2, 5, 2))
    with pytest.raises(ValueError, match="batch size"):
        point_sample(torch.randn(2, 1, 6, 6), torch.rand(3, 5, 2))


def test_regular_grid_is_row_major_cell_centres_x_first():
    g = generate_regular_grid_point_coords(3, 4, device="cpu")
    assert g.shape == (3, 16, 2)
    assert torch.equal(g[0], g[2])
    assert g[0, 1].tolist() == [pytest.approx(1.5 / 4), pytest.approx(0.5 / 4)]  # x moves first
    assert g[0, 4].tolist() == [pytest.approx(0.5 / 4), pytest.approx(1.5 / 4)]
    assert g[0, 15].tolist() == [pytest.approx(3.5 / 4), pytest.approx(3.5 / 4)]


def test_grid_selector_picks_most_uncertain_cells_and_their_centres():
    torch.manual_seed(1)
    u = torch.randn(2, 1, 5, 6)
    idx, coords = get_uncertain_point_coords_on_grid(u, 7)
    assert idx.shape == (2, 7) and coords.shape == (2, 7, 2)
    for r in range(2):
        expected = set(torch.argsort(u[r, 0].flatten(), descending=True)[:7].tolist())
        assert set(idx[r].tolist()) == expected
        for j, i in enumerate(idx[r].tolist()):
            assert coords[r, j, 0].item() == pytest.approx((i % 6 + 0.5) / 6)
            assert coords[r, j, 1].item() == pytest.approx((i // 6 + 0.5) / 5)
    # sampling the map at the returned centres gives back the selected uncertainties
    picked = point_sample(u, coords)[:, 0]
    torch.testing.assert_close(picked, torch.gather(u.flatten(1), 1, idx))


def test_grid_selector_is_capped_at_map_size():
    idx, coords = get_uncertain_point_coords_on_grid(torch.randn(1, 1, 3, 3), 100)
    assert idx.shape == (1, 9)
    assert sorted(idx[0].tolist()) == list(range(9))


def test_uncertainty_functions():
    logits = torch.tensor([[[2.0, -0.5]], [[0.1, 3.0]]])  # R=2, C=1, P=2
    torch.testing.assert_close(calculate_uncertainty(logits), -logits.abs())
    multi = torch.randn(4, 5, 3, 3)
    cls = torch.tensor([0, 4, 2, 2])
    u = calculate_uncertainty(multi, cls)
    assert u.shape == (4, 1, 3, 3)
    torch.testing.assert_close(u[1, 0], -multi[1, 4].abs())
    with pytest.raises(ValueError, match="classes"):
        calculate_uncertainty(multi)
    sem = torch.tensor([[[1.0], [3.0], [2.5]]])  # N=1, K=3, P=1
    assert calculate_semantic_uncertainty(sem).item() == pytest.approx(-0.5)
    assert (calculate_semantic_uncertainty(torch.randn(2, 4, 8)) <= 0).all()


def test_training_sampler_follows_the_papers_definition():
    """k * N uniform candidates, the int(beta * N) most uncertain kept, N - int(beta * N) fresh
    uniform points after them: checked on the statistics of that definition, not on the draws.

    The uncertainty grows with x: the logits are a channel of ones and a ramp ``x``, and the
    uncertainty is their ratio (the ramp, undisturbed by the zero padding at the map's border).
    So the kept points are the ``int(beta * N)`` largest x of ``k * N`` uniform candidates: the
    j-th largest of n uniforms has mean ``1 - j / (n + 1)``; their y and the fresh points are
    uniform."""
    R, N, k, beta = 400, 50, 3, 0.75
    kept, candidates = int(beta * N), int(k * N)  # 37 (not 38) of 150
    width = 1000
    ramp = (torch.arange(width) + 0.5) / width
    coarse = torch.stack([torch.ones(4, width), ramp.expand(4, width)])[None].expand(R, -1, -1, -1)

    def uncertainty(values):  # R x 2 x P -> R x 1 x P
        return values[:, 1:] / values[:, :1]

    torch.manual_seed(0)
    pts = get_uncertain_point_coords_with_randomness(coarse, uncertainty, N, k, beta)
    assert pts.shape == (R, N, 2) and pts.min() >= 0 and pts.max() <= 1
    x, y = pts[..., 0], pts[..., 1]
    smallest_kept = x[:, :kept].min(dim=1).values
    assert abs(smallest_kept.mean().item() - (1 - kept / (candidates + 1))) < 0.01
    assert (smallest_kept > 0.6).all()
    assert abs(y[:, :kept].mean().item() - 0.5) < 0.015  # y plays no part in the choice
    assert abs(x[:, kept].mean().item() - 0.5) < 0.05  # the first fresh point is uniform
    distinct = (pts[:, :, None] - pts[:, None]).abs().sum(-1) + torch.eye(N) > 0
    assert distinct.all()  # the fresh points are new draws, not reused candidates
    fresh = x[:, kept:]
    assert abs(fresh.mean().item() - 0.5) < 0.02
    assert abs((fresh > 0.5).float().mean().item() - 0.5) < 0.03
    none_kept = get_uncertain_point_coords_with_randomness(coarse, uncertainty, N, 1, 0.0)
    assert abs(none_kept[..., 0].mean().item() - 0.5) < 0.02  # beta = 0: all uniform


def _disk_logits(size, radius=0.3):
    c = (torch.arange(size) + 0.5) / size - 0.5
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return ((radius - (xx**2 + yy**2).sqrt()) * 20).view(1, 1, size, size)


def test_training_sampler_concentrates_on_edges():
    torch.manual_seed(0)
    coarse = _disk_logits(14).expand(8, -1, -1, -1)
    N, beta = 196, 0.75
    pts = get_uncertain_point_coords_with_randomness(coarse, calculate_uncertainty, N, 3, beta)
    dist_to_edge = ((pts - 0.5).norm(dim=-1) - 0.3).abs()
    near = dist_to_edge < 0.08  # band of area ~ 2 * 0.08 * 2*pi*0.3 = 0.30 of the unit square
    important, fresh = near[:, : int(beta * N)], near[:, int(beta * N) :]
    assert important.float().mean() > 0.75
    assert fresh.float().mean() < 0.45  # uniform points hit the band at about its area


def test_training_sampler_validates_ratios():
    with pytest.raises(ValueError, match="oversample_ratio"):
        get_uncertain_point_coords_with_randomness(
            torch.randn(1, 1, 4, 4), calculate_uncertainty, 10, 0.5, 0.5
        )
    with pytest.raises(ValueError, match="importance_sample_ratio"):
        get_uncertain_point_coords_with_randomness(
            torch.randn(1, 1, 4, 4), calculate_uncertainty, 10, 2, 1.5
        )


def test_box_coordinate_mappings_round_trip():
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 8.0, 8.0]])
    pts = torch.tensor(
        [[[0.0, 0.0], [1.0, 1.0], [0.5, 0.25]], [[0.5, 0.5], [0.25, 1.0], [1.0, 0.0]]]
    )
    img = box_to_image_coords(boxes, pts)
    assert img[0].tolist() == [[10, 20], [30, 60], [20, 30]]
    torch.testing.assert_close(image_to_box_coords(boxes, img), pts)


def test_fine_grained_features_for_a_batch_equal_per_image_sampling():
    torch.manual_seed(0)
    feats = [torch.randn(3, 4, 16, 20), torch.randn(3, 2, 8, 10)]
    strides = [4, 8]
    boxes = [
        torch.tensor([[5.0, 6.0, 40.0, 50.0], [0.0, 0.0, 80.0, 64.0]]),
        torch.zeros(0, 4),
        torch.tensor([[10.0, 10.0, 10.0, 30.0], [-5.0, -5.0, 20.0, 20.0], [1.0, 2.0, 3.0, 4.0]]),
    ]
    pts = torch.rand(5, 9, 2)
    out, img = point_sample_fine_grained_features(feats, strides, boxes, pts)
    assert out.shape == (5, 6, 9) and img.shape == (5, 9, 2)
    b_of = [0, 0, 2, 2, 2]
    cat = torch.cat(boxes)
    for r in range(5):
        abs_pts = box_to_image_coords(cat[r : r + 1], pts[r : r + 1])
        ref = []
        for f, s in zip(feats, strides):
            H, W = f.shape[-2:]
            ref.append(
                point_sample(f[b_of[r] : b_of[r] + 1], abs_pts / torch.tensor([W * s, H * s]))
            )
        torch.testing.assert_close(out[r : r + 1], torch.cat(ref, 1))


def test_fine_grained_features_with_no_boxes():
    out, img = point_sample_fine_grained_features(
        [torch.randn(2, 4, 8, 8)], [4], [torch.zeros(0, 4)] * 2, torch.zeros(0, 5, 2)
    )
    assert out.shape == (0, 4, 5) and img.shape == (0, 5, 2)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 3),
    c=st.integers(1, 4),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    p=st.integers(1, 30),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
)
def test_point_functions_properties(n, c, h, w, p, dtype):
    x = torch.randn(n, c, h, w).to(dtype)
    pts = torch.rand(n, p, 2)
    out = point_sample(x, pts)
    assert out.shape == (n, c, p) and out.dtype == dtype
    # bilinear sampling inside the map never leaves the range of the map's values
    lo, hi = x.float().amin(), x.float().amax()
    inner = point_sample(x, pts * 0 + 0.5)
    assert (inner.float() >= lo - 1e-2).all() and (inner.float() <= hi + 1e-2).all()
    idx, coords = get_uncertain_point_coords_on_grid(x[:, :1], p)
    assert idx.shape == (n, min(p, h * w)) and (coords > 0).all() and (coords < 1).all()
    u = calculate_semantic_uncertainty(x)
    assert u.shape == (n, 1, h, w) and (u <= 0).all()
    sampled = get_uncertain_point_coords_with_randomness(x[:, :1], calculate_uncertainty, p, 2, 0.5)
    assert sampled.shape == (n, p, 2) and sampled.min() >= 0 and sampled.max() <= 1
    assert not math.isnan(float(sampled.sum()))


def test_select_class_picks_each_regions_channel():
    logits = torch.randn(3, 5, 4, 6)
    classes = torch.tensor([4, 0, 2], dtype=torch.int32)
    picked = select_class(logits, classes)
    assert picked.shape == (3, 1, 4, 6)
    for r, k in enumerate(classes.tolist()):
        torch.testing.assert_close(picked[r, 0], logits[r, k])
    torch.testing.assert_close(calculate_uncertainty(logits, classes), -picked.abs())


def test_training_sampler_modes():
    coarse = torch.randn(3, 1, 7, 7)
    torch.manual_seed(5)
    uncertain = sample_training_points(coarse, calculate_uncertainty, 20, "uncertain", 2, 0.5)
    torch.manual_seed(5)
    reference = get_uncertain_point_coords_with_randomness(
        coarse, calculate_uncertainty, 20, 2, 0.5
    )
    torch.testing.assert_close(uncertain, reference)

    grid = sample_training_points(coarse, calculate_uncertainty, 20, "grid")
    torch.testing.assert_close(grid, generate_regular_grid_point_coords(3, 4))  # isqrt(20) = 4

    torch.manual_seed(5)
    uniform = sample_training_points(coarse, calculate_uncertainty, 20, "uniform")
    torch.manual_seed(5)
    torch.testing.assert_close(uniform, torch.rand(3, 20, 2))
    with pytest.raises(ValueError, match="'random'"):
        sample_training_points(coarse, calculate_uncertainty, 20, "random")


@pytest.mark.parametrize(
    "field, value",
    [
        ("train_num_points", 0),
        ("train_point_sampling", "random"),
        ("oversample_ratio", 0.5),
        ("importance_sample_ratio", 1.5),
        ("subdivision_steps", -1),
        ("subdivision_num_points", -1),
        ("point_head_fc_dim", 0),
        ("point_head_num_fc", -1),
    ],
)
def test_settings_refuse_bad_values_naming_field_and_value(field, value):
    with pytest.raises(ValueError, match=f"{field} must be .* got {value!r}"):
        PointRendSettings(**{field: value})


def test_replace_options_sets_own_fields_then_the_pointrend_settings():
    from pointrend.instance import PointRendMaskConfig
    from pointrend.semantic import SemanticPointRendConfig

    config = replace_options(PointRendMaskConfig(), coarse_head_fc_dim=64, train_num_points=50)
    assert config.coarse_head_fc_dim == 64 and config.pointrend.point_head_fc_dim == 256
    assert config.pointrend.train_num_points == 50
    assert config.pointrend.subdivision_num_points == INSTANCE_SETTINGS.subdivision_num_points
    semantic = replace_options(SemanticPointRendConfig(), point_head_fc_dim=64)
    assert semantic.pointrend.point_head_fc_dim == 64
    assert semantic.pointrend.train_num_points == SEMANTIC_SETTINGS.train_num_points == 2048
    assert not SEMANTIC_SETTINGS.point_head_coarse_pred_each_layer
    assert INSTANCE_SETTINGS.point_head_coarse_pred_each_layer
    with pytest.raises(ValueError, match="train_num_point'"):
        replace_options(SemanticPointRendConfig(), train_num_point=5)
    with pytest.raises(ValueError, match="oversample_ratio must be >= 1, got 0.5"):
        replace_options(PointRendMaskConfig(), oversample_ratio=0.5)


def test_uniform_training_points_ignore_the_logits():
    """``train_point_sampling="uniform"``: N points drawn as one uniform draw, whatever the
    coarse logits (the uncertain mode with beta = 0 draws its candidates first, so it differs)."""
    from pointrend.instance import PointRendMaskBranch, PointRendMaskConfig

    uniform = replace_options(PointRendMaskConfig(), train_point_sampling="uniform")
    branch = PointRendMaskBranch(8, 3, uniform)
    points = []
    for logits in (torch.randn(4, 1, 7, 7), 100 * torch.randn(4, 1, 7, 7)):
        torch.manual_seed(3)
        points.append(branch.training_points(logits))
    torch.testing.assert_close(points[0], points[1])
    torch.manual_seed(3)
    torch.testing.assert_close(points[0], torch.rand(4, 196, 2))
    no_importance = replace_options(
        PointRendMaskConfig(), oversample_ratio=1, importance_sample_ratio=0.0
    )
    torch.manual_seed(3)
    other = PointRendMaskBranch(8, 3, no_importance).training_points(torch.randn(4, 1, 7, 7))
    assert not torch.equal(other, points[0])
