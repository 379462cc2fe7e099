import pytest
import torch

from pointrend import PointHead
from pointrend._fused_head import FusedPointHead, inference_point_head
from pointrend.points import point_sample


def test_shapes_class_specific_and_agnostic():
    head = PointHead(16, 5)
    assert head(torch.randn(3, 16, 40), torch.randn(3, 5, 40)).shape == (3, 5, 40)
    agn = PointHead(16, 5, cls_agnostic=True)
    assert agn(torch.randn(3, 16, 40), torch.randn(3, 1, 40)).shape == (3, 1, 40)


def test_coarse_each_layer_widens_every_layer():
    each = PointHead(16, 5, fc_dim=32, num_fc=3, coarse_pred_each_layer=True)
    once = PointHead(16, 5, fc_dim=32, num_fc=3, coarse_pred_each_layer=False)
    assert [m.in_channels for m in each.fc_layers] == [21, 37, 37]
    assert each.predictor.in_channels == 37
    assert [m.in_channels for m in once.fc_layers] == [21, 32, 32]
    assert once.predictor.in_channels == 32


def test_predictor_init_is_small():
    head = PointHead(8, 3)
    assert head.predictor.weight.std() < 0.01
    assert head.predictor.bias.abs().max() == 0


def test_wrong_coarse_channels_error():
    import pytest

    with pytest.raises(ValueError, match="coarse channels"):
        PointHead(8, 3)(torch.randn(1, 8, 4), torch.randn(1, 2, 4))


def test_trains_on_toy_task():
    torch.manual_seed(0)
    head = PointHead(2, 1, fc_dim=32, num_fc=2)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    pts = torch.rand(4, 2, 256)
    target = ((pts - 0.5).norm(dim=1, keepdim=True) < 0.3).float()
    coarse = torch.zeros(4, 1, 256)
    losses = []
    for _ in range(150):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(pts, coarse), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_forward_equals_conv1d_layers():
    torch.manual_seed(0)
    head = PointHead(6, 3, fc_dim=8, num_fc=2)
    fine, coarse = torch.randn(2, 6, 11), torch.randn(2, 3, 11)
    x = torch.cat([fine, coarse], 1)
    for layer in head.fc_layers:
        x = torch.cat([torch.relu(layer(x)), coarse], 1)
    torch.testing.assert_close(head(fine, coarse), head.predictor(x))


def _conv1d_reference(head, fine, coarse):
    """The head written out: Conv1d layers on concatenated inputs."""
    x = torch.cat([fine, coarse], 1)
    for layer in head.fc_layers:
        x = torch.relu(layer(x))
        x = torch.cat([x, coarse], 1) if head.coarse_pred_each_layer else x
    return head.predictor(x)


def _random_head(each, num_fc, fc_dim=8):
    torch.manual_seed(0)
    head = PointHead(6, 4, fc_dim=fc_dim, num_fc=num_fc, coarse_pred_each_layer=each)
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.5)
    return head


@pytest.mark.parametrize("each", [True, False])
@pytest.mark.parametrize("num_fc", [0, 1, 3])
def test_fused_head_equals_the_plain_head(each, num_fc):
    """All classes or one class row per region, raw or projected fine features: the fused head
    gives the plain head's logits."""
    head = _random_head(each, num_fc)
    fine_map = torch.randn(3, 6, 5, 7)
    points = torch.rand(3, 13, 2)
    fine, coarse = point_sample(fine_map, points), torch.randn(3, 4, 13)
    classes = torch.tensor([3, 0, 2])
    with torch.no_grad():
        expected = head(fine, coarse)
        picked = expected.gather(1, classes.view(3, 1, 1).expand(-1, 1, 13))
        fused = FusedPointHead(head)
        torch.testing.assert_close(fused(fine, coarse), expected)
        torch.testing.assert_close(fused(fine, coarse, classes), picked)
        if num_fc:
            projected = point_sample(fused.project_fine_features(fine_map), points)
            torch.testing.assert_close(
                fused(projected, coarse, classes, fine_projected=True), picked
            )
            torch.testing.assert_close(fused(projected, coarse, fine_projected=True), expected)


@pytest.mark.parametrize("each", [True, False])
def test_plain_head_values_and_gradients_equal_the_conv1d_formulation(each):
    # float64: the two formulations sum in different orders, float32 rounding would show
    head = _random_head(each, num_fc=3).double()
    fine = torch.randn(2, 6, 9, dtype=torch.float64, requires_grad=True)
    coarse = torch.randn(2, 4, 9, dtype=torch.float64, requires_grad=True)
    inputs = [fine, coarse, *head.parameters()]
    ours, ref = head(fine, coarse), _conv1d_reference(head, fine, coarse)
    torch.testing.assert_close(ours, ref)
    ours_grad = torch.autograd.grad(ours.square().sum(), inputs)
    ref_grad = torch.autograd.grad(ref.square().sum(), inputs)
    for a, b in zip(ours_grad, ref_grad):
        torch.testing.assert_close(a, b)


class _Predictor(torch.nn.Module):
    """What a renderer does: predict with ``inference_point_head(head)``."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, fine, coarse):
        return inference_point_head(self.head)(fine, coarse)


def test_inference_head_is_fused_only_without_autograd_and_tracing():
    head = PointHead(6, 4, fc_dim=8)
    assert inference_point_head(head) is head
    fine, coarse = torch.randn(1, 6, 5), torch.randn(1, 4, 5)
    with torch.no_grad():
        assert isinstance(inference_point_head(head), FusedPointHead)
        traced = torch.jit.trace(_Predictor(head), (fine, coarse))
        torch.testing.assert_close(traced(fine, coarse), head(fine, coarse))
    assert "aten::_convolution" in str(traced.inlined_graph)  # the plain head was traced


def test_forward_hooks_fire_on_the_head_and_its_layers():
    """Training and reference calls go through the Conv1d layers (their hooks see every point
    of every region as one sequence, ``1 x channels x NP``)."""
    head = PointHead(6, 4, fc_dim=8, num_fc=2).train()
    seen = []
    for name, layer in head.named_modules():
        if isinstance(layer, torch.nn.Conv1d):
            layer.register_forward_hook(lambda m, args, out, name=name: seen.append((name, out)))
    fine = torch.randn(2, 6, 5, requires_grad=True)
    out = head(fine, torch.randn(2, 4, 5))
    assert [(name, tuple(y.shape)) for name, y in seen] == [
        ("fc_layers.0", (1, 8, 10)),
        ("fc_layers.1", (1, 8, 10)),
        ("predictor", (1, 4, 10)),
    ]
    torch.testing.assert_close(seen[-1][1].view(4, 2, 5).transpose(0, 1), out)
    out.sum().backward()
    assert fine.grad is not None


def test_forward_hooks_fire_on_the_plain_head():
    head = PointHead(6, 4, fc_dim=8)
    seen = []
    head.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape))
    head.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    head(torch.randn(2, 6, 5), torch.randn(2, 4, 5))
    assert seen == [(2, 6, 5), (2, 4, 5)]


def test_compiled_head_equals_eager():
    """One graph (``fullgraph``) through dynamo and AOTAutograd, values and gradients. The
    ``aot_eager`` backend keeps the test quick; inductor (which builds C++) gives the same
    values too, more slowly."""
    head = _random_head(True, num_fc=2)
    fine = torch.randn(2, 6, 7, requires_grad=True)
    coarse = torch.randn(2, 4, 7)
    compiled = torch.compile(head, backend="aot_eager", fullgraph=True)
    ours, ref = compiled(fine, coarse), head(fine, coarse)
    torch.testing.assert_close(ours, ref)
    grads = [
        torch.autograd.grad(out.square().sum(), [fine, *head.parameters()]) for out in (ours, ref)
    ]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_no_regions_and_projection_needs_hidden_layers():
    head = PointHead(6, 4, fc_dim=8)
    with torch.no_grad():
        fused = FusedPointHead(head)
        assert head(torch.randn(0, 6, 5), torch.randn(0, 4, 5)).shape == (0, 4, 5)
        assert fused(torch.randn(0, 6, 5), torch.randn(0, 4, 5)).shape == (0, 4, 5)
        out = fused(torch.randn(0, 6, 5), torch.randn(0, 4, 5), torch.zeros(0, dtype=torch.long))
        assert out.shape == (0, 1, 5)
    with pytest.raises(ValueError, match="hidden layers"):
        FusedPointHead(PointHead(6, 4, num_fc=0)).project_fine_features(torch.randn(1, 6, 3, 3))
    with pytest.raises(ValueError, match="coarse channels"):
        fused(torch.randn(1, 6, 5), torch.randn(1, 3, 5))


@pytest.mark.parametrize("fc_dim", [6, 8])  # the input's buffer reused as a hidden one, or not
def test_fused_workspace_reuse_across_calls_gives_the_same_logits(fc_dim):
    head = _random_head(True, num_fc=3, fc_dim=fc_dim)
    with torch.no_grad():
        fused = FusedPointHead(head)
        for _ in range(3):
            fine, coarse = torch.randn(2, 6, 9), torch.randn(2, 4, 9)
            torch.testing.assert_close(fused(fine, coarse), _conv1d_reference(head, fine, coarse))
        assert {"input", "hidden"} <= set(fused.workspace)
        fused(torch.randn(3, 6, 5), torch.randn(3, 4, 5))  # new size
        assert fused.workspace["input"].shape == (6 + 4 + 1, 3, 5)


def _fused_equals_reference(head, fine, coarse):
    with torch.no_grad():
        fused = inference_point_head(head)
        assert isinstance(fused, FusedPointHead)
        torch.testing.assert_close(fused(fine, coarse), _conv1d_reference(head, fine, coarse))


def test_fused_head_follows_the_heads_dtype_and_loaded_weights():
    """The fused head reads the head's parameters: after ``.to(float64)`` and after loading other
    weights it still equals the reference (a stale copy of the weights would not)."""
    head = _random_head(True, num_fc=2)
    fused = FusedPointHead(head)
    fine, coarse = torch.randn(2, 6, 9), torch.randn(2, 4, 9)
    with torch.no_grad():
        before = fused(fine, coarse)
    head.to(torch.float64)
    fine64, coarse64 = fine.double(), coarse.double()
    _fused_equals_reference(head, fine64, coarse64)
    with torch.no_grad():  # the same wrapper (its float32 buffers replaced), float64 weights
        torch.testing.assert_close(
            fused(fine64, coarse64), _conv1d_reference(head, fine64, coarse64)
        )

    other = PointHead(6, 4, fc_dim=8, num_fc=2).double()
    for p in other.parameters():
        torch.nn.init.normal_(p, std=0.5)
    head.load_state_dict(other.state_dict())
    _fused_equals_reference(head, fine64, coarse64)
    with torch.no_grad():
        after = fused(fine64, coarse64)
        torch.testing.assert_close(after, _conv1d_reference(other, fine64, coarse64))
    assert not torch.allclose(after, before.double())


def test_fused_head_holds_no_copy_of_the_weights():
    head = _random_head(False, num_fc=1)
    fused = FusedPointHead(head)
    assert fused.state_dict().keys() == {f"head.{k}" for k in head.state_dict()}
    assert list(fused.parameters()) == list(head.parameters())
    with torch.no_grad():
        head.predictor.bias.add_(1.0)  # an in-place change is seen at the next call
        fine, coarse = torch.randn(1, 6, 4), torch.randn(1, 4, 4)
        torch.testing.assert_close(fused(fine, coarse), _conv1d_reference(head, fine, coarse))
