"""ResNet feature extractors for the semantic models: plain / dilated ResNet and ResNet-FPN.

Both keep torchvision's module names (``conv1``, ``bn1``, ``layer1`` ... ``layer4``; FPN under
``fpn``), so torchvision ResNet state dicts load without renaming (minus ``fc``), and a
torchvision Mask R-CNN ``backbone.*`` state dict has the same keys as :class:`ResNetFPN`.

Geometry: a stride-``s`` map of size ``h x w`` computed from an ``H x W`` image (any size, not
only multiples of 32) has ``h = ceil(H / s)`` (every strided conv pads "same"); it covers the top-left
``s*h x s*w`` pixels of the image zero-padded at the bottom and right. That is the one convention
of the semantic package (see :mod:`pointrend.semantic.pointrend`).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torchvision
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.ops import FeaturePyramidNetwork

__all__ = [
    "RESNET_DEPTHS",
    "ResNetFeatures",
    "ResNetFPN",
    "dilate_resnet_",
    "build_resnet",
    "backbone_state_dict_from_torchvision_resnet",
]

RESNET_DEPTHS = {
    18: (torchvision.models.resnet18, torchvision.models.ResNet18_Weights),
    34: (torchvision.models.resnet34, torchvision.models.ResNet34_Weights),
    50: (torchvision.models.resnet50, torchvision.models.ResNet50_Weights),
    101: (torchvision.models.resnet101, torchvision.models.ResNet101_Weights),
}


def dilate_resnet_(resnet: ResNet, dilate: Sequence[bool]) -> list[int]:
    """Replace the stride of ``layer2..layer4`` by dilation where ``dilate`` says, in place.

    The same scheme as torchvision's ``replace_stride_with_dilation`` (the first block of a
    dilated stage keeps the previous dilation, later blocks use the new one; padding equals the
    dilation), applied to the built modules so that it works for ``BasicBlock`` ResNets
    (18 / 34) as well, which torchvision refuses to dilate.

    Args:
        resnet: a torchvision ResNet (modified in place).
        dilate: three flags, for ``layer2``, ``layer3`` and ``layer4``.

    Returns:
        The output strides of ``layer1..layer4``, e.g. ``[4, 8, 16, 16]`` for
        ``(False, False, True)``.
    """
    if len(dilate) != 3:
        raise ValueError(f"dilate needs 3 flags (layer2, layer3, layer4), got {list(dilate)}")
    strides, stride, dilation = [4], 4, 1
    for layer, flag in zip([resnet.layer2, resnet.layer3, resnet.layer4], dilate):
        previous = dilation
        if flag:
            dilation *= 2
        else:
            stride *= 2
        strides.append(stride)
        for index, block in enumerate(layer):
            block_dilation = previous if index == 0 else dilation
            for conv in block.modules():
                if not isinstance(conv, nn.Conv2d):
                    continue
                if flag and index == 0 and conv.stride == (2, 2):
                    conv.stride = (1, 1)
                if conv.kernel_size == (3, 3):
                    conv.dilation = (block_dilation, block_dilation)
                    conv.padding = (block_dilation, block_dilation)
    return strides


def build_resnet(
    depth: int,
    dilate: Sequence[bool] = (False, False, False),
    norm_layer: Callable[[int], nn.Module] | None = None,
) -> tuple[ResNet, list[int]]:
    """A randomly initialised torchvision ResNet of ``depth`` (18, 34, 50, 101), dilated."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(RESNET_DEPTHS)}, got {depth}")
    builder, _ = RESNET_DEPTHS[depth]
    resnet = builder(weights=None, norm_layer=norm_layer or nn.BatchNorm2d)
    return resnet, dilate_resnet_(resnet, dilate)


class ResNetFeatures(nn.Module):
    """The stem and four stages of a torchvision ResNet; ``forward`` returns res2..res5.

    Args:
        resnet: a torchvision ResNet (its ``fc`` and ``avgpool`` are not kept).
        strides: output strides of ``layer1..layer4`` (from :func:`dilate_resnet_`).

    Shapes:
        ``forward(images N x 3 x H x W) -> [res2, res3, res4, res5]``, ``res_i`` of
        ``N x channels[i] x ceil(H / strides[i]) x ceil(W / strides[i])``.
    """

    def __init__(
        self, resnet: ResNet, strides: Sequence[int] = (4, 8, 16, 32), num_stages: int = 4
    ):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = (
            resnet.conv1,
            resnet.bn1,
            resnet.relu,
            resnet.maxpool,
        )
        self.layer1, self.layer2 = resnet.layer1, resnet.layer2
        if num_stages not in (3, 4):
            raise ValueError(f"num_stages must be 3 (res2..res4) or 4, got {num_stages}")
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4 if num_stages == 4 else None
        expansion = 4 if isinstance(resnet.layer1[0], Bottleneck) else 1
        channels = [64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        self.channels = channels[:num_stages]
        self.strides = [int(s) for s in strides][:num_stages]

    def forward(self, images: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        return [c2, c3, c4] if self.layer4 is None else [c2, c3, c4, self.layer4(c4)]


class ResNetFPN(nn.Module):
    """A ResNet with torchvision's ``FeaturePyramidNetwork`` on res2..res5 -> P2..P5.

    No extra max-pool level (the semantic head does not use it). Every level has
    ``out_channels`` channels; P_i has stride ``2**i`` and size ``ceil(H / 2**i)``.
    """

    def __init__(self, body: ResNetFeatures, out_channels: int = 256):
        super().__init__()
        if body.strides != [4, 8, 16, 32][: len(body.strides)]:
            raise ValueError(f"an FPN needs an undilated ResNet, got strides {body.strides}")
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.channels), out_channels)
        self.out_channels = out_channels
        self.strides = list(body.strides)

    def forward(self, images: Tensor) -> list[Tensor]:
        levels = OrderedDict((str(i), f) for i, f in enumerate(self.body(images)))
        return list(self.fpn(levels).values())


def backbone_state_dict_from_torchvision_resnet(
    state_dict: Mapping[str, Tensor], prefix: str = ""
) -> dict[str, Tensor]:
    """A torchvision ResNet (ImageNet) state dict -> :class:`ResNetFeatures` keys.

    Drops the classifier (``fc.*``) and prepends ``prefix`` (e.g. ``"body."`` for
    :class:`ResNetFPN`). Pure: the input is not modified.
    """
    return {prefix + k: v for k, v in state_dict.items() if not k.startswith("fc.")}
