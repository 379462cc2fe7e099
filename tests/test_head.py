import torch

from pointrend import PointHead


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
