"""The point head for inference without autograd: :class:`FusedPointHead`, a faster forward.

The renderers predict thousands of points per step for every region. Without autograd they use
:class:`FusedPointHead` instead of calling the head; it gives the head's values (up to float
rounding) from the head's own parameters, read at every call (it holds no copy of them), with
these differences in how they are computed:

* Bias inside the product: each layer is one matrix product ``[W | b] @ [x; coarse; 1]`` over
  all points (the row of ones adds the bias). ``[W | b]`` is concatenated from the layer's
  ``weight`` and ``bias`` at every call, a copy far smaller than the products.
* No concatenation: each product is written into the top rows of a buffer whose bottom rows
  already hold ``[coarse; 1]``; two buffers serve in turn, and they are kept in
  :attr:`FusedPointHead.workspace` for the next call of the same size (the steps of one
  rendering), so the large buffers are allocated once.
* Class rows only: given each region's class, only that row of the predictor is applied
  (``N x 1 x P``, the values selecting that channel afterwards would give).
* Projected first layer: the first layer's product with the fine features can be applied to
  the whole feature map once (:meth:`FusedPointHead.project_fine_features`) and sampled at the
  points (exact: bilinear sampling is linear), which is cheaper when more points are predicted
  than the map has pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._tracing import is_recording
from .head import PointHead

__all__ = ["FusedPointHead", "inference_point_head"]


class FusedPointHead(nn.Module):
    """A :class:`PointHead`'s forward for inference only, on its ``[W | b]`` matrices.

    It reads ``head``'s parameters at every call (the head is its only submodule: ``.to()``,
    ``state_dict`` and ``load_state_dict`` reach the weights it uses). It writes into reused
    buffers: use it without autograd.

    Shapes:
        ``forward(fine N x C x P, coarse N x K x P) -> N x K' x P``; with ``classes`` (``N``
        class indices) ``N x 1 x P``; with ``fine_projected`` the fine features are samples of
        :meth:`project_fine_features` (``N x fc_dim x P``).
    """

    def __init__(self, head: PointHead):
        super().__init__()
        self.head = head
        self.workspace: dict[str, Tensor] = {}

    @property
    def coarse_channels(self) -> int:
        return self.head.coarse_channels

    @property
    def num_hidden(self) -> int:
        return len(self.head.fc_layers)

    def weights(self) -> list[Tensor]:
        """``[W | b]`` of each hidden layer, then of the predictor: ``C_out x (C_in + 1)``."""
        layers = [*self.head.fc_layers, self.head.predictor]
        with torch.no_grad():
            return [torch.cat([layer.weight[:, :, 0], layer.bias[:, None]], 1) for layer in layers]

    def project_fine_features(self, features: Tensor) -> Tensor:
        """The first layer's fine-feature product over a whole map: ``N x C x H x W`` ->
        ``N x fc_dim x H x W`` (no bias), channels-last in memory (the layout point sampling
        reads fastest)."""
        if not self.num_hidden:
            raise ValueError("project_fine_features needs a point head with hidden layers")
        weight = self.head.fc_layers[0].weight[:, : -self.coarse_channels, 0]
        rows = features.permute(0, 2, 3, 1)  # N x H x W x C
        return F.linear(rows, weight.to(features.dtype)).permute(0, 3, 1, 2)

    def forward(
        self,
        fine: Tensor,
        coarse: Tensor,
        classes: Tensor | None = None,
        fine_projected: bool = False,
    ) -> Tensor:
        if coarse.shape[1] != self.coarse_channels:
            raise ValueError(
                f"the point head expects {self.coarse_channels} coarse channels, got "
                f"coarse features of shape {tuple(coarse.shape)}"
            )
        N, _, P = fine.shape
        K = coarse.shape[1]
        weights = self.weights()
        if fine_projected:  # the first layer's fine columns are already applied
            if not self.num_hidden:
                raise ValueError("fine_projected needs a point head with hidden layers")
            weights = [weights[0][:, -(K + 1) :], *weights[1:]]
        x = self._hidden(
            weights[:-1],
            fine.transpose(0, 1),
            coarse.to(fine.dtype).transpose(0, 1),
            fine_projected,
        )
        predictor = weights[-1]
        if classes is None:
            out = torch.mm(predictor, x).view(predictor.shape[0], N, P)
            return out.transpose(0, 1).contiguous()
        rows = predictor[classes.to(torch.long)]  # N x (D + 1): each region's class row
        points = x.view(x.shape[0], N, P).transpose(0, 1)  # N x (D + 1) x P
        return torch.bmm(rows.unsqueeze(1), points)

    def _hidden(
        self, weights: list[Tensor], fine: Tensor, coarse: Tensor, fine_projected: bool
    ) -> Tensor:
        """The hidden layers on ``C x N x P`` fine and ``K x N x P`` coarse features.

        Returns the predictor's input, ``(D + K + 1) x NP`` (``(D + 1) x NP`` when the coarse
        logits feed only the first layer), ``D`` the last hidden width (or C without hidden
        layers).
        """
        C, N, P = fine.shape
        K = coarse.shape[0]
        x = self._buffer("input", (C + K + 1, N, P), fine)
        x[:C] = fine
        x[C : C + K] = coarse
        x[C + K] = 1.0
        x = x.view(C + K + 1, N * P)
        if fine_projected and weights:  # x[:C] is W_fine @ fine already: add the rest in place
            x[:C].addmm_(weights[0], x[C:]).relu_()
            weights = weights[1:]
            if not self.head.coarse_pred_each_layer:  # later layers take [x; 1] only
                x = torch.cat([x[:C], x[-1:]])
        if not weights:
            return x
        fixed = x[C:] if self.head.coarse_pred_each_layer else x[-1:]
        dim = weights[0].shape[0]
        buffers = [self._buffer("hidden", (dim + fixed.shape[0], N * P), x)]
        buffers[0][dim:] = fixed
        if len(weights) > 1:
            # The input's own buffer serves again once its features are used, if it fits.
            if x.shape[0] == buffers[0].shape[0]:
                buffers.append(x)
            else:
                buffers.append(self._buffer("hidden_2", tuple(buffers[0].shape), x))
                buffers[1][dim:] = fixed
        for i, weight in enumerate(weights):
            out = buffers[i % 2]
            torch.mm(weight, x, out=out[:dim]).relu_()
            x = out
        return x

    def _buffer(self, key: str, shape: tuple, like: Tensor) -> Tensor:
        """An uninitialised tensor of ``shape``: ``workspace[key]`` again when it fits, else new."""
        buffer = self.workspace.get(key)
        fits = buffer is not None and buffer.shape == shape
        if not fits or buffer.dtype != like.dtype or buffer.device != like.device:
            buffer = self.workspace[key] = like.new_empty(shape)
        return buffer


def inference_point_head(head: PointHead) -> PointHead | FusedPointHead:
    """What a renderer predicts points with: a :class:`FusedPointHead` of ``head`` (its buffers
    serve the steps of one rendering) when autograd is off and nothing is being traced, else
    ``head`` itself (gradients, export, ``torch.compile`` and module hooks then see the plain
    module)."""
    if is_recording():
        return head
    return FusedPointHead(head)
