"""detectron2 instance-model weights under pointrend's key names and shapes.

Keys are renamed by pattern (``backbone.bottom_up.res{s}`` -> ``backbone.body.layer{s-1}``,
``fpn_lateral{l}`` -> ``fpn.inner_blocks.{l-2}``, the RPN, box head and mask heads to
torchvision's and PointRend's names). detectron2 counts no background in its mask heads and puts
it last in its box classifier; pointrend counts it first: the classifier's rows become
``[K, 0, ..., K-1]`` and the box deltas, mask predictors and point head get a background slot of
zeros (rows, and a zero input column for the background coarse logit), which changes no
foreground value. A BGR model's first conv gets its input channels reversed (RGB input).
"""

from __future__ import annotations

import re

import torch
from torch import Tensor, nn

from .common import load_weights, misfit, no_place, rename_weights

__all__ = ["load_mapped", "pointrend_key", "rename_instance_weights", "with_background"]

# detectron2 key pattern -> pointrend key template (applied with re.fullmatch / expand)
_RENAMES = [
    (r"backbone\.bottom_up\.stem\.conv1\.weight", r"backbone.body.conv1.weight"),
    (r"backbone\.bottom_up\.stem\.conv1\.norm\.(\w+)", r"backbone.body.bn1.\1"),
    (
        r"backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.weight",
        r"backbone.body.layer<\1>.\2.conv\3.weight",
    ),
    (
        r"backbone\.bottom_up\.res(\d)\.(\d+)\.conv(\d)\.norm\.(\w+)",
        r"backbone.body.layer<\1>.\2.bn\3.\4",
    ),
    (
        r"backbone\.bottom_up\.res(\d)\.0\.shortcut\.weight",
        r"backbone.body.layer<\1>.0.downsample.0.weight",
    ),
    (
        r"backbone\.bottom_up\.res(\d)\.0\.shortcut\.norm\.(\w+)",
        r"backbone.body.layer<\1>.0.downsample.1.\2",
    ),
    (r"backbone\.fpn_lateral(\d)\.(\w+)", r"backbone.fpn.inner_blocks.<\1>.0.\2"),
    (r"backbone\.fpn_output(\d)\.(\w+)", r"backbone.fpn.layer_blocks.<\1>.0.\2"),
    (r"proposal_generator\.rpn_head\.conv\.(\w+)", r"rpn.head.conv.0.0.\1"),
    (r"proposal_generator\.rpn_head\.objectness_logits\.(\w+)", r"rpn.head.cls_logits.\1"),
    (r"proposal_generator\.rpn_head\.anchor_deltas\.(\w+)", r"rpn.head.bbox_pred.\1"),
    (r"roi_heads\.box_head\.fc1\.(\w+)", r"roi_heads.box_head.fc6.\1"),
    (r"roi_heads\.box_head\.fc2\.(\w+)", r"roi_heads.box_head.fc7.\1"),
    (r"roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(\w+)", r"roi_heads.box_predictor.\1.\2"),
    (
        r"roi_heads\.mask_head\.coarse_head\.reduce_spatial_dim_conv\.(\w+)",
        r"roi_heads.mask_branch.coarse_head.reduce.\1",
    ),
    (
        r"roi_heads\.mask_head\.coarse_head\.fc(\d)\.(\w+)",
        r"roi_heads.mask_branch.coarse_head.fcs.<\1>.\2",
    ),
    (
        r"roi_heads\.mask_head\.coarse_head\.prediction\.(\w+)",
        r"roi_heads.mask_branch.coarse_head.predictor.\1",
    ),
    (
        r"roi_heads\.mask_head\.point_head\.fc(\d)\.(\w+)",
        r"roi_heads.mask_branch.point_head.fc_layers.<\1>.\2",
    ),
    (
        r"roi_heads\.mask_head\.point_head\.predictor\.(\w+)",
        r"roi_heads.mask_branch.point_head.predictor.\1",
    ),
    (r"roi_heads\.mask_head\.mask_fcn(\d)\.(\w+)", r"roi_heads.mask_head.<\1>.0.\2"),
    (r"roi_heads\.mask_head\.deconv\.(\w+)", r"roi_heads.mask_predictor.conv5_mask.\1"),
    (r"roi_heads\.mask_head\.predictor\.(\w+)", r"roi_heads.mask_predictor.mask_fcn_logits.\1"),
]
# index shift of each <n> group: res{s} -> layer{s-1}, fpn level l -> l-2, fc{k} -> k-1
_SHIFTS = {
    "layer": -1,
    "inner_blocks.": -2,
    "layer_blocks.": -2,
    "fcs.": -1,
    "fc_layers.": -1,
    "mask_head.": -1,
}
_SHIFTED = re.compile("(" + "|".join(map(re.escape, _SHIFTS)) + r")<(\d+)>")


def _shifted_index(match: re.Match) -> str:
    prefix, index = match.group(1), int(match.group(2))
    return f"{prefix}{index + _SHIFTS[prefix]}"


def pointrend_key(key: str) -> str | None:
    """The pointrend key of a detectron2 instance-model key, or ``None`` if it has none."""
    for pattern, template in _RENAMES:
        match = re.fullmatch(pattern, key)
        if match:
            out = match.expand(template)
            return _SHIFTED.sub(_shifted_index, out)
    return None


def with_background(key: str, value: Tensor, k: int) -> Tensor:
    """Add pointrend's background slot to a detectron2 head tensor (see the module docstring)."""
    if key.startswith("roi_heads.box_predictor.cls_score."):
        return torch.cat([value[k:], value[:k]])  # background last -> first
    if key.startswith("roi_heads.box_predictor.bbox_pred."):
        return torch.cat([value.new_zeros(4, *value.shape[1:]), value])
    if key.startswith("roi_heads.mask_predictor.mask_fcn_logits."):
        return torch.cat([value.new_zeros(1, *value.shape[1:]), value])
    if key.startswith("roi_heads.mask_branch.coarse_head.predictor."):
        cells = value.shape[0] // k
        return torch.cat([value.new_zeros(cells, *value.shape[1:]), value])
    if key.startswith("roi_heads.mask_branch.point_head."):
        if key.endswith(".weight"):  # out x (width + K) x 1: a zero column before the K coarse
            width = value.shape[1] - k
            value = torch.cat(
                [
                    value[:, :width],
                    value.new_zeros(value.shape[0], 1, *value.shape[2:]),
                    value[:, width:],
                ],
                dim=1,
            )
        if ".predictor." in key:
            value = torch.cat([value.new_zeros(1, *value.shape[1:]), value])
    return value


def rename_instance_weights(
    weights: dict[str, Tensor], k: int, flip: bool, source: str = "detectron2 checkpoint"
) -> dict[str, Tensor]:
    """detectron2 weights of a K-class model -> pointrend's state dict (``flip``: reverse the
    first conv's input channels). Keys with no place raise :class:`D2ImportError`, naming them."""
    state, _, unused = rename_weights(
        weights, pointrend_key, flip, lambda name, value: with_background(name, value, k)
    )
    if unused:
        raise misfit(source, [no_place(unused)])
    return state


def load_mapped(model: nn.Module, state: dict[str, Tensor], source: str) -> None:
    """Load ``state`` into ``model``: every model weight given, with its shape, else an error
    naming the keys (``num_batches_tracked`` counters excepted): :func:`.common.load_weights`."""
    load_weights(model, state, source)
