"""The point head: a small MLP applied to every point independently."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._tracing import may_be_zero

__all__ = ["PointHead"]


class PointHead(nn.Module):
    """Predict logits at points from fine-grained features and the coarse prediction there.

    Conventions:

    * The MLP is written as 1x1 ``Conv1d`` layers, so that it runs on ``N x C x P`` point
      features with the same weights for every point: ``num_fc`` hidden layers of ``fc_dim``
      channels, each followed by ReLU, then a linear predictor (no activation). ``forward``
      calls the layers on the points of all regions as one sequence (``1 x channels x NP``):
      each layer is then one matrix product over every point, which CPUs run faster than N of
      them, backward included. Forward hooks on the layers see that layout; without regions
      and under tracing they see ``N x channels x P`` (each region a batch entry: an exported
      graph then takes no regions, which ``Conv`` does not as an empty sequence).
    * The first layer's input is the fine-grained features followed by the coarse logits at the
      points: ``[fine; coarse]``, ``C + K`` channels.
    * With ``coarse_pred_each_layer`` the coarse logits are concatenated again after every
      hidden layer, so every later layer (the predictor included) takes ``[hidden; coarse]``,
      ``fc_dim + K`` channels (the instance head); without, only the first layer sees them (the
      semantic head).
    * Class-agnostic heads take and predict one channel (``K = 1``).
    * Initialisation: hidden layers Kaiming normal (fan out), zero bias; the predictor normal
      with std 0.001 and zero bias, so a new head starts near the coarse prediction's scale.

    The parameters are ``fc_layers.{i}.weight / bias`` (``Conv1d``) and ``predictor.weight /
    bias``. Without autograd the renderers predict with a fused copy of these weights instead
    of calling this module (:class:`pointrend._fused_head.FusedPointHead`): same values, less
    time and memory.

    Args:
        in_channels: C, channels of the fine-grained point features.
        num_classes: K, the number of classes of the coarse prediction and of the output.
        fc_dim: width of the hidden layers.
        num_fc: number of hidden layers.
        coarse_pred_each_layer: concatenate the coarse logits to every layer's input.
        cls_agnostic: predict one logit per point instead of K (the coarse input then has one
            channel as well).

    Shapes:
        ``forward(fine_grained_features N x C x P, coarse_features N x K x P) -> N x K' x P``
        with ``K' = 1`` when class-agnostic, else K.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        fc_dim: int = 256,
        num_fc: int = 3,
        coarse_pred_each_layer: bool = True,
        cls_agnostic: bool = False,
    ):
        super().__init__()
        if num_classes < 1 or in_channels < 1 or fc_dim < 1 or num_fc < 0:
            raise ValueError(
                f"invalid PointHead sizes: in_channels={in_channels}, num_classes={num_classes}, "
                f"fc_dim={fc_dim}, num_fc={num_fc}"
            )
        self.num_classes = num_classes
        self.coarse_channels = 1 if cls_agnostic else num_classes
        self.coarse_pred_each_layer = coarse_pred_each_layer
        self.cls_agnostic = cls_agnostic

        extra = self.coarse_channels if coarse_pred_each_layer else 0
        layers = []
        width = in_channels + self.coarse_channels
        for _ in range(num_fc):
            layers.append(nn.Conv1d(width, fc_dim, kernel_size=1))
            width = fc_dim + extra
        self.fc_layers = nn.ModuleList(layers)
        self.predictor = nn.Conv1d(width, self.coarse_channels, kernel_size=1)

        for layer in self.fc_layers:
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)
        nn.init.zeros_(self.predictor.bias)

    def forward(self, fine_grained_features: Tensor, coarse_features: Tensor) -> Tensor:
        """Logits at the points: ``N x C x P``, ``N x K x P`` -> ``N x K' x P``."""
        if coarse_features.shape[1] != self.coarse_channels:
            raise ValueError(
                f"PointHead expects {self.coarse_channels} coarse channels, got "
                f"coarse_features of shape {tuple(coarse_features.shape)}"
            )
        fine = fine_grained_features
        coarse = coarse_features.to(fine.dtype)
        N, _, P = fine.shape
        if may_be_zero(N):  # each region a batch entry (Conv takes no empty sequence)
            return self._layers(fine, coarse)
        out = self._layers(_one_sequence(fine), _one_sequence(coarse))  # 1 x K' x NP
        return out.view(-1, N, P).transpose(0, 1).contiguous()

    def _layers(self, fine: Tensor, coarse: Tensor) -> Tensor:
        """The layers on ``B x C x L`` fine and ``B x K x L`` coarse features -> ``B x K' x L``."""
        x = torch.cat([fine, coarse], dim=1)
        for layer in self.fc_layers:
            x = torch.relu(layer(x))
            if self.coarse_pred_each_layer:
                x = torch.cat([x, coarse], dim=1)
        return self.predictor(x)


def _one_sequence(features: Tensor) -> Tensor:
    """The points of all regions as one sequence: ``N x C x P`` -> ``1 x C x NP``."""
    return features.transpose(0, 1).flatten(1).unsqueeze(0)
