"""The point head: a small MLP applied to every point independently."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["PointHead"]


class PointHead(nn.Module):
    """Predict logits at points from fine-grained features and the coarse prediction there.

    The MLP is written as 1x1 ``Conv1d`` layers so that it runs on ``N x C x P`` point features
    with shared weights for every point: ``num_fc`` hidden layers of ``fc_dim`` channels with ReLU,
    then a linear predictor. With ``coarse_pred_each_layer`` the coarse logits are concatenated
    again to the input of every layer (SPEC.md, on by default for instances).

    Args:
        in_channels: channels of the fine-grained point features.
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

    def forward(
        self,
        fine_grained_features: Tensor,
        coarse_features: Tensor,
        classes: Tensor | None = None,
        fine_projected: bool = False,
        workspace: dict | None = None,
    ) -> Tensor:
        """Logits at the points: ``N x C x P``, ``N x K x P`` -> ``N x K' x P``.

        With ``classes`` (``N`` class indices, class-specific heads) only the output channel of
        each region's class is computed: ``N x 1 x P``, the values that selecting it afterwards
        would give. With ``fine_projected`` the fine features are samples of
        :meth:`project_fine_features` (``N x fc_dim x P``) instead of raw features. A
        ``workspace`` dict (kept by the caller across calls of the same size, e.g. the steps
        of one rendering) lets inference reuse its large buffers instead of allocating fresh
        memory every call (page faults cost as much as a tenth of the products here).
        """
        if coarse_features.shape[1] != self.coarse_channels:
            raise ValueError(
                f"PointHead expects {self.coarse_channels} coarse channels, got "
                f"coarse_features of shape {tuple(coarse_features.shape)}"
            )
        N, C, P = fine_grained_features.shape
        K = coarse_features.shape[1]
        fine = fine_grained_features.transpose(0, 1)  # C x N x P
        coarse = coarse_features.to(fine.dtype).transpose(0, 1)  # K x N x P
        # Layout: channels x (every point of every region), so that each layer is one matrix
        # product [W | b] @ [x; coarse; 1] over all points (the Conv1d's result, about twice as
        # fast on CPUs; the row of ones adds the bias inside the product).
        weights = [
            torch.cat([layer.weight[:, :, 0], layer.bias[:, None]], dim=1)
            for layer in [*self.fc_layers, self.predictor]
        ]
        if fine_projected:  # the first layer's fine columns are already applied
            if not self.fc_layers:
                raise ValueError("fine_projected needs a head with hidden layers")
            weights[0] = weights[0][:, -(K + 1) :]
        if torch.is_grad_enabled() or torch.jit.is_tracing():
            extra = torch.cat([coarse.reshape(K, N * P), coarse.new_ones(1, N * P)])
            x = fine.reshape(C, N * P)
            for i, weight in enumerate(weights[:-1]):
                if i == 0 and fine_projected:
                    x = (x + torch.mm(weight, extra)).relu_()
                else:
                    keep = extra if i == 0 or self.coarse_pred_each_layer else extra[-1:]
                    x = torch.mm(weight, torch.cat([x, keep])).relu_()
            keep = extra if not weights[:-1] or self.coarse_pred_each_layer else extra[-1:]
            x = torch.cat([x, keep])
        else:
            x = self._hidden_in_place(weights[:-1], fine, coarse, fine_projected, workspace)
        if classes is None:
            out = torch.mm(weights[-1], x).view(weights[-1].shape[0], N, P)
            return out.transpose(0, 1).contiguous()
        rows = weights[-1][classes.to(torch.long)]  # N x (D + 1): each region's class
        points = x.view(x.shape[0], N, P).transpose(0, 1)  # N x (D + 1) x P
        return torch.bmm(rows.unsqueeze(1), points)

    def project_fine_features(self, features: Tensor) -> Tensor:
        """The first layer's fine-feature product over a whole map: ``N x C x H x W`` ->
        ``N x fc_dim x H x W`` (no bias).

        Bilinear sampling is linear, so sampling this map at points gives the first layer's
        product with the features sampled there (pass it with ``fine_projected=True``). It is
        cheaper whenever more points are predicted than the map has pixels (many boxes).
        """
        if not self.fc_layers:
            raise ValueError("project_fine_features needs a head with hidden layers")
        weight = self.fc_layers[0].weight[:, :, 0]
        width = weight.shape[1] - self.coarse_channels
        # As N x H x W x C rows times W_f^T: the result is channels-last, the layout that point
        # sampling reads fastest.
        rows = features.permute(0, 2, 3, 1)
        return F.linear(rows, weight[:, :width].to(features.dtype)).permute(0, 3, 1, 2)

    def _hidden_in_place(
        self,
        weights: list[Tensor],
        fine: Tensor,
        coarse: Tensor,
        fine_projected: bool = False,
        workspace: dict | None = None,
    ) -> Tensor:
        """The hidden layers without autograd, on ``C x N x P`` fine and ``K x N x P`` coarse.

        Each product is written into the top rows of a buffer whose bottom rows already hold
        [coarse; 1], two buffers in turn: no layer copies its input (``torch.cat`` costs about
        as much as the product here). Returns the predictor's input ``(D + K + 1) x NP``.
        """
        C, N, P = fine.shape
        K = coarse.shape[0]
        x = _buffer(workspace, "input", (C + K + 1, N, P), fine)
        x[:C] = fine
        x[C : C + K] = coarse
        x[C + K] = 1.0
        x = x.view(C + K + 1, N * P)
        if fine_projected and weights:  # x[:C] is W_f @ fine already: add the rest in place
            x[:C].addmm_(weights[0], x[C:]).relu_()
            weights = weights[1:]
            if not self.coarse_pred_each_layer:  # later layers take [x; 1] only
                x = torch.cat([x[:C], x[-1:]])
        if not weights:
            return x
        fixed = x[C:] if self.coarse_pred_each_layer else x[-1:]
        dim = weights[0].shape[0]
        buffers = [_buffer(workspace, "hidden", (dim + fixed.shape[0], N * P), x)]
        buffers[0][dim:] = fixed
        if len(weights) > 1:
            # The input's own buffer serves again once its features are used, if it fits.
            if x.shape[0] == buffers[0].shape[0]:
                buffers.append(x)
            else:
                buffers.append(_buffer(workspace, "hidden_2", tuple(buffers[0].shape), x))
                buffers[1][dim:] = fixed
        for i, weight in enumerate(weights):
            out = buffers[i % 2]
            torch.mm(weight, x, out=out[:dim]).relu_()
            x = out
        return x


def _buffer(workspace: dict | None, key: str, shape: tuple, like: Tensor) -> Tensor:
    """An uninitialised tensor of ``shape``: ``workspace[key]`` again when it fits, else new."""
    if workspace is None:
        return like.new_empty(shape)
    buffer = workspace.get(key)
    if buffer is None or buffer.shape != shape or buffer.dtype != like.dtype:
        buffer = workspace[key] = like.new_empty(shape)
    return buffer
