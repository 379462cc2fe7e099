"""Anchors and RoI pooling computed as detectron2 computes them (options of the instance builders).

* :class:`NominalStrideAnchorGenerator` (``rpn_anchor_rule="detectron2"``): cell anchors not
  rounded to whole pixels (size 32, ratio 0.5 is +-22.63 x +-11.31, not +-23 x +-11) and each
  level's anchors spaced by its nominal stride (4, 8, ... 64). torchvision rounds the cell anchors
  and derives a level's stride as ``padded_size // grid_size``, which for a padded width of 480
  puts the stride-64 level's anchors 60 pixels apart.
* :class:`AlignedMultiScaleRoIAlign` (``roi_align_aligned=True``): RoIAlign with
  ``aligned=True`` (a box edge at pixel coordinate ``x`` samples the feature map at
  ``x * scale - 0.5``: pixel centres at half-integers) at torchvision's FPN level of each box;
  with ``sampling_ratio=0`` it samples ``ceil(bin size)`` points per bin, as detectron2's
  ``ROIAlignV2``. torchvision's pooler has no ``aligned`` flag.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign, roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales

from .._tracing import is_tracing, merge_roi_levels

__all__ = ["NominalStrideAnchorGenerator", "AlignedMultiScaleRoIAlign", "ANCHOR_RULES"]

ANCHOR_RULES = ("torchvision", "detectron2")


class NominalStrideAnchorGenerator(AnchorGenerator):
    """Anchors at ``k * stride`` of each level's nominal stride, cell anchors unrounded.

    Args:
        sizes, aspect_ratios: as :class:`AnchorGenerator` (one tuple per level; ratio = h / w).
        strides: the stride of each level, in image pixels (``len(sizes)`` values).

    Shapes: ``forward(images, features) -> [A_total x 4]`` per image, in the layout of
    :class:`AnchorGenerator` (levels in order, then cells row-major, anchors fastest).
    """

    def __init__(self, sizes, aspect_ratios, strides):
        super().__init__(sizes, aspect_ratios)
        if len(strides) != len(sizes):
            raise ValueError(f"need one stride per anchor level ({len(sizes)}), got {strides}")
        self.strides = [int(s) for s in strides]

    def generate_anchors(self, scales, aspect_ratios, dtype=torch.float32, device=None) -> Tensor:
        """``A x 4`` zero-centred anchors ``(-w/2, -h/2, w/2, h/2)``, not rounded."""
        scales = torch.as_tensor(scales, dtype=dtype, device=device)
        ratios = torch.as_tensor(aspect_ratios, dtype=dtype, device=device)
        h_ratios = torch.sqrt(ratios)
        ws = (scales[None, :] / h_ratios[:, None]).reshape(-1)
        hs = (scales[None, :] * h_ratios[:, None]).reshape(-1)
        return torch.stack([-ws, -hs, ws, hs], dim=1) / 2

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        if len(feature_maps) != len(self.strides):
            raise ValueError(
                f"got {len(feature_maps)} feature maps for {len(self.strides)} anchor levels"
            )
        grid_sizes = [list(f.shape[-2:]) for f in feature_maps]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        strides = [[torch.tensor(s, dtype=torch.int64, device=device)] * 2 for s in self.strides]
        self.set_cell_anchors(dtype, device)
        anchors = torch.cat(self.grid_anchors(grid_sizes, strides))
        return [anchors for _ in image_list.image_sizes]


class AlignedMultiScaleRoIAlign(MultiScaleRoIAlign):
    """:class:`MultiScaleRoIAlign` whose RoIAlign is ``aligned=True``.

    Same arguments and level assignment as torchvision's; ``sampling_ratio=0`` is adaptive.

    Shapes: ``forward(features, boxes [R_i x 4], image_shapes) -> R x C x S x S``.
    """

    def forward(
        self, x: dict[str, Tensor], boxes: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        levels_in = _filter_input(x, self.featmap_names)
        if self.scales is None or self.map_levels is None:
            self.scales, self.map_levels = _setup_scales(
                levels_in, image_shapes, self.canonical_scale, self.canonical_level
            )
        rois = _convert_to_roi_format(boxes)
        options = dict(
            output_size=self.output_size, sampling_ratio=self.sampling_ratio, aligned=True
        )
        if len(levels_in) == 1:
            return roi_align(levels_in[0], rois, spatial_scale=self.scales[0], **options)
        levels = self.map_levels(boxes)
        indices = [torch.where(levels == level)[0] for level in range(len(levels_in))]
        pooled = [
            roi_align(features, rois[index], spatial_scale=scale, **options)
            for features, scale, index in zip(levels_in, self.scales, indices)
        ]
        if is_tracing():
            return merge_roi_levels(levels, pooled)
        shape = (rois.shape[0], levels_in[0].shape[1], *self.output_size)
        result = levels_in[0].new_zeros(shape)
        for index, level_result in zip(indices, pooled):
            result[index] = level_result.to(result.dtype)
        return result
