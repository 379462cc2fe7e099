"""The Semantic FPN coarse head (panoptic-FPN style).

Each input level goes through ``max(1, log2(stride / common_stride))`` stages of
conv3x3 - GroupNorm - ReLU, each stage followed by a 2x bilinear upsampling
(``align_corners=False``) when the level is coarser than the common stride; the levels, now all
at the common stride (4 for P2..P5, 8 for P3..P5), are summed and a 1x1 conv predicts K classes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["SemanticFPNHead"]


class SemanticFPNHead(nn.Module):
    """Sum of per-level conv/upsample towers, then a 1x1 classifier.

    Args:
        in_channels: channels of every input level (the FPN's ``out_channels``).
        num_classes: K.
        in_strides: strides of the input levels, finest first, powers of two (``(4, 8, 16, 32)``
            for P2..P5, ``(8, 16, 32)`` for P3..P5).
        conv_dims: channels of the towers (128 in the paper's Semantic FPN).
        num_groups: GroupNorm groups (``conv_dims`` must be divisible by it).

    Shapes:
        ``forward([N x C x h_i x w_i for each level]) -> N x K x h_0 x w_0``: logits at the
        finest input level's stride (:attr:`output_stride`) and size. Coarser levels upsampled
        2x per stage can be a little larger than the finest level when the image size is not a
        multiple of the coarsest stride (``8 * ceil(H / 32) >= ceil(H / 4)``); they are cropped
        at the bottom / right, which is exact under the package's convention that every map
        covers the top-left ``stride * size`` pixels of the image.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        in_strides: Sequence[int] = (4, 8, 16, 32),
        conv_dims: int = 128,
        num_groups: int = 32,
    ):
        super().__init__()
        strides = [int(s) for s in in_strides]
        if not strides or strides != sorted(strides) or any(s & (s - 1) for s in strides):
            raise ValueError(f"in_strides must be increasing powers of two, got {list(in_strides)}")
        if conv_dims % num_groups:
            raise ValueError(f"conv_dims={conv_dims} is not divisible by num_groups={num_groups}")
        self.in_strides = strides
        self.output_stride = strides[0]
        towers = []
        for stride in strides:
            num_stages = max(1, int(math.log2(stride // self.output_stride)))
            layers: list[nn.Module] = []
            for stage in range(num_stages):
                layers += [
                    nn.Conv2d(
                        in_channels if stage == 0 else conv_dims,
                        conv_dims,
                        kernel_size=3,
                        padding=1,
                        bias=False,
                    ),
                    nn.GroupNorm(num_groups, conv_dims),
                    nn.ReLU(inplace=True),
                ]
                if stride != self.output_stride:
                    layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            towers.append(nn.Sequential(*layers))
        self.towers = nn.ModuleList(towers)
        self.predictor = nn.Conv2d(conv_dims, num_classes, kernel_size=1)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        nn.init.normal_(self.predictor.weight, std=0.001)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        if len(features) != len(self.towers):
            raise ValueError(
                f"SemanticFPNHead expects {len(self.towers)} levels (strides {self.in_strides}), "
                f"got {len(features)}"
            )
        h, w = features[0].shape[-2:]
        total = None
        for tower, feature in zip(self.towers, features):
            x = tower(feature)
            if x.shape[-2] < h or x.shape[-1] < w:
                raise ValueError(
                    f"a level of size {tuple(feature.shape[-2:])} upsampled to "
                    f"{tuple(x.shape[-2:])} does not cover the finest level {(h, w)}"
                )
            x = x[..., :h, :w]
            total = x if total is None else total + x
        return self.predictor(total)
