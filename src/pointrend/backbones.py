"""Backbones of every model: torchvision ResNet / ResNeXt (plain, dilated or with an FPN) and
MobileNetV3 with an FPN.

One builder serves both tasks: the instance models take :func:`fpn_backbone` (FPN with the extra
max-pool level torchvision's RPN uses), Semantic FPN takes :func:`resnet_fpn_backbone` without
that level, DeepLabV3 takes :func:`resnet_backbone` (no FPN, dilated).

State-dict keys are torchvision's: an FPN backbone has ``body.conv1``, ``body.layer1`` ...
``body.layer4`` and ``fpn.inner_blocks.0.0`` ..., the layout of torchvision's Mask R-CNN
``backbone.*``; a plain backbone has ``conv1`` ... ``layer4``, the layout of torchvision's
DeepLabV3 ``backbone.*``; a ResNet's ImageNet state dict maps onto either by its stage names
(:func:`pointrend.pretrained.load_torchvision_weights`).

Norm: ``"frozen"`` (:class:`FusedFrozenBatchNorm2d`: fixed statistics and affine) or ``"batch"``
(``BatchNorm2d``); ``None`` chooses as torchvision's detection models do: frozen when the weights
will be pretrained, batch when trained from scratch. Trainable stages count from the top (ResNet:
``layer4``, ``layer3``, ``layer2``, ``layer1``, then the stem: 0 to 5); ``None`` means 3 when
pretrained and all otherwise, as torchvision.

Geometry: a stride-``s`` map computed from an ``H x W`` image has ``ceil(H / s) x ceil(W / s)``
cells (every strided conv pads "same"); it covers the top-left ``s * ceil(H / s)`` rows and
``s * ceil(W / s)`` columns of the image zero-padded at the bottom and right.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor, nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool
from torchvision.ops.misc import FrozenBatchNorm2d

from ._scripting import NotScriptable

__all__ = [
    "MOBILENETS",
    "RESNETS",
    "FPNBackbone",
    "FusedFrozenBatchNorm2d",
    "StageOutputs",
    "dilate_resnet_",
    "fpn_backbone",
    "move_stride_to_1x1_",
    "norm_layer",
    "resnet_backbone",
    "resnet_fpn_backbone",
]

RESNETS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "resnext101_64x4d",
)
MOBILENETS = ("mobilenet_v3_large", "mobilenet_v3_small")
# MobileNetV3 stages at strides 4, 8, 16, 32 (torchvision's detection default returns only 16 and
# 32; PointRend needs a stride-4 map for its fine-grained features).
MOBILENET_RETURNED_STAGES = (1, 2, 3, 5)
RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")


class FusedFrozenBatchNorm2d(FrozenBatchNorm2d):
    """torchvision's ``FrozenBatchNorm2d`` (same buffers and state-dict keys) that, when no
    gradient is asked of its input, normalises with one ``F.batch_norm`` call (inference
    statistics) instead of computing a scale and a shift and then multiplying and adding:
    detectron2's ``FrozenBatchNorm2d`` does the same. The values agree to float32 rounding.

    Shapes: ``N x C x H x W`` -> the same.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return super().forward(x)
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=False,
            momentum=0.0,
            eps=self.eps,
        )


class StageOutputs(nn.ModuleDict):
    """The children of a network up to its last returned one; ``forward`` returns those outputs.

    Args:
        network: a module whose children run in order (a torchvision ResNet, or MobileNetV3's
            ``features``); later children are not kept.
        return_layers: child name -> output name, e.g. ``{"layer1": "0", "layer4": "1"}``.
        channels, strides: of each returned output, in order.
        source_prefix: the prefix of these children's keys in the network's own torchvision
            classification state dict (``""`` for a ResNet, ``"features."`` for MobileNetV3).

    Shapes:
        ``forward(images N x 3 x H x W) -> OrderedDict(name: N x channels[i] x h_i x w_i)``.
    """

    def __init__(
        self,
        network: nn.Module,
        return_layers: Mapping[str, str],
        channels: Sequence[int],
        strides: Sequence[int],
        source_prefix: str = "",
    ):
        names = [name for name, _ in network.named_children()]
        missing = sorted(set(return_layers) - set(names))
        if missing:
            raise ValueError(f"return_layers {missing} are not children of the network ({names})")
        last = max(names.index(name) for name in return_layers)
        super().__init__(OrderedDict(list(network.named_children())[: last + 1]))
        self.return_layers = dict(return_layers)
        self.channels = [int(c) for c in channels]
        self.strides = [int(s) for s in strides]
        self.source_prefix = source_prefix

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        out = OrderedDict()
        x = images
        for name, module in self.items():
            x = module(x)
            if name in self.return_layers:
                out[self.return_layers[name]] = x
        return out


class FPNBackbone(NotScriptable, nn.Module):
    """``body`` (:class:`StageOutputs`) followed by torchvision's ``FeaturePyramidNetwork``.

    Every level has ``out_channels`` channels; level ``i`` has the stride of the body's output
    ``i`` (:attr:`strides`). With ``max_pool_level`` a ``"pool"`` level (stride-2 subsampling of
    the last level) is appended, as torchvision's detection backbones do for the RPN.

    Shapes:
        ``forward(images N x 3 x H x W) -> OrderedDict("0": N x C x h_0 x w_0, ...)``.

    ``torch.jit.script`` of a model holding it stops with
    :class:`~pointrend._scripting.NotScriptableError` (trace or export to ONNX instead).
    """

    def __init__(self, body: StageOutputs, out_channels: int = 256, max_pool_level: bool = True):
        super().__init__()
        self.body = body
        extra = LastLevelMaxPool() if max_pool_level else None
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=extra)
        self.out_channels = out_channels
        self.strides = list(body.strides)

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(self.body(images))


def norm_layer(norm: str | None, pretrained: bool) -> Callable[[int], nn.Module]:
    """``"frozen"`` -> :class:`FusedFrozenBatchNorm2d`, ``"batch"`` -> ``BatchNorm2d``, ``None``:
    by ``pretrained`` (frozen when pretrained)."""
    if norm is None:
        norm = "frozen" if pretrained else "batch"
    if norm not in ("frozen", "batch"):
        raise ValueError(f"norm must be 'frozen', 'batch' or None, got {norm!r}")
    return FusedFrozenBatchNorm2d if norm == "frozen" else nn.BatchNorm2d


def _trainable(value: int | None, pretrained: bool, max_layers: int) -> int:
    if value is None:
        return 3 if pretrained else max_layers
    if not 0 <= value <= max_layers:
        raise ValueError(f"trainable_backbone_layers must be in [0, {max_layers}], got {value}")
    return value


def dilate_resnet_(resnet: nn.Module, dilate: Sequence[bool]) -> list[int]:
    """Replace the stride of ``layer2..layer4`` by dilation where ``dilate`` says, in place.

    The scheme of torchvision's ``replace_stride_with_dilation`` (the first block of a dilated
    stage keeps the previous dilation, later blocks use the new one; padding equals the
    dilation), applied to the built modules so that it works for ``BasicBlock`` ResNets (18 / 34)
    as well, which torchvision refuses to dilate.

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


def move_stride_to_1x1_(resnet: nn.Module) -> None:
    """Put the stride of ``layer2..layer4``'s first bottleneck in its 1x1 ``conv1``, in place.

    torchvision's bottleneck strides its 3x3 ``conv2``; the original MSRA ResNets (Caffe2,
    detectron2's ``STRIDE_IN_1X1``) stride the first 1x1 conv instead. Same parameters and
    output sizes, different function: weights trained one way need the same placement.
    ``BasicBlock`` ResNets (18 / 34, whose ``conv1`` is the 3x3) and dilated stages are left as
    they are; so are stages a :class:`StageOutputs` did not keep.
    """
    for name in RESNET_STAGES[1:]:
        if not hasattr(resnet, name):  # stages after the last returned one are not built
            continue
        block = getattr(resnet, name)[0]
        conv3x3 = getattr(block, "conv2", None)
        if getattr(block, "conv3", None) is None or conv3x3.stride != (2, 2):
            continue
        block.conv1.stride, conv3x3.stride = (2, 2), (1, 1)


def _freeze_resnet_(resnet: nn.Module, trainable_layers: int) -> None:
    """Freeze all but the top ``trainable_layers`` stages (5: everything, the stem's norm too)."""
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, parameter in resnet.named_parameters():
        if not name.startswith(tuple(train)):
            parameter.requires_grad_(False)


def _check_returned(name: str, returned: Sequence[int]) -> list[int]:
    returned = [int(k) for k in returned]
    if not returned or returned != sorted(set(returned)) or returned[0] < 1 or returned[-1] > 4:
        raise ValueError(
            f"returned stages of {name} must be increasing stages among 1..4 (1: the stride-4 "
            f"res2, which PointRend samples), got {returned}"
        )
    return returned


def resnet_backbone(
    name: str,
    *,
    returned_layers: Sequence[int] = (1, 2, 3, 4),
    dilation: Sequence[bool] = (False, False, False),
    norm: str | None = None,
    pretrained: bool = False,
    trainable_layers: int | None = None,
) -> StageOutputs:
    """A randomly initialised torchvision ResNet / ResNeXt returning the stages asked for.

    Args:
        name: one of :data:`RESNETS`.
        returned_layers: stages (1 = ``layer1``, stride 4 ... 4 = ``layer4``), named ``"0"``,
            ``"1"``, ... in order; stages after the last are not built into the backbone.
        dilation: flags for ``layer2..layer4`` (:func:`dilate_resnet_`; DeepLabV3 output stride
            16 is ``(False, False, True)``, 8 is ``(False, True, True)``).
        norm, pretrained, trainable_layers: see the module docstring. ``pretrained`` says that
            weights will be loaded (:mod:`pointrend.pretrained`); it only sets the defaults.
    """
    if name not in RESNETS:
        raise ValueError(f"backbone must be one of {list(RESNETS)}, got {name!r}")
    returned = _check_returned(name, returned_layers)
    net = torchvision.models.get_model(name, weights=None, norm_layer=norm_layer(norm, pretrained))
    strides = dilate_resnet_(net, dilation)
    _freeze_resnet_(net, _trainable(trainable_layers, pretrained, 5))
    width = net.inplanes // 8  # channels of layer1's output; each later stage doubles them
    return StageOutputs(
        net,
        {RESNET_STAGES[k - 1]: str(i) for i, k in enumerate(returned)},
        [width * 2 ** (k - 1) for k in returned],
        [strides[k - 1] for k in returned],
    )


def resnet_fpn_backbone(
    name: str,
    *,
    returned_layers: Sequence[int] = (1, 2, 3, 4),
    fpn_channels: int = 256,
    max_pool_level: bool = True,
    norm: str | None = None,
    pretrained: bool = False,
    trainable_layers: int | None = None,
) -> FPNBackbone:
    """A ResNet / ResNeXt (undilated) with an FPN on the returned stages.

    ``returned_layers=[1, 2, 3]`` drops ``layer4`` (3/4 of a ResNet-18's weights): a small CPU
    model. Other arguments: :func:`resnet_backbone` and :class:`FPNBackbone`.
    """
    body = resnet_backbone(
        name,
        returned_layers=returned_layers,
        norm=norm,
        pretrained=pretrained,
        trainable_layers=trainable_layers,
    )
    return FPNBackbone(body, fpn_channels, max_pool_level)


def _mobilenet_fpn_backbone(
    name: str, fpn_channels: int, norm: str | None, pretrained: bool, trainable_layers: int | None
) -> FPNBackbone:
    """MobileNetV3 ``features`` with an FPN on its stride-4, 8, 16 and 32 stages.

    Stages start at the stem and at every block that halves the resolution (a stride-2 conv);
    the last block closes the last stage. Freezing counts stages from the top, as torchvision.
    """
    net = torchvision.models.get_model(name, weights=None, norm_layer=norm_layer(norm, pretrained))
    features = net.features
    halves = [
        i
        for i, block in enumerate(features)
        if i > 0 and any(getattr(m, "stride", None) == (2, 2) for m in block.modules())
    ]
    starts = [0, *halves, len(features) - 1]
    trainable = _trainable(trainable_layers, pretrained, len(starts))
    frozen = len(features) if trainable == 0 else starts[len(starts) - trainable]
    for block in features[:frozen]:
        block.requires_grad_(False)
    returned = [starts[k] for k in MOBILENET_RETURNED_STAGES]
    body = StageOutputs(
        features,
        {str(index): str(i) for i, index in enumerate(returned)},
        [features[index].out_channels for index in returned],
        [4, 8, 16, 32],
        source_prefix="features.",
    )
    return FPNBackbone(body, fpn_channels, max_pool_level=True)


def fpn_backbone(
    name: str,
    *,
    returned_layers: Sequence[int] | None = None,
    fpn_channels: int = 256,
    norm: str | None = None,
    pretrained: bool = False,
    trainable_layers: int | None = None,
) -> FPNBackbone:
    """The instance models' backbone: a ResNet / ResNeXt or MobileNetV3 with an FPN whose first
    level has stride 4, plus the max-pool level (:func:`resnet_fpn_backbone`)."""
    if name in MOBILENETS:
        if returned_layers is not None:
            raise ValueError(f"backbone_returned_layers is for ResNet backbones, not {name!r}")
        return _mobilenet_fpn_backbone(name, fpn_channels, norm, pretrained, trainable_layers)
    if name not in RESNETS:
        raise ValueError(f"backbone must be one of {list(RESNETS + MOBILENETS)}, got {name!r}")
    returned = list(returned_layers or (1, 2, 3, 4))
    if returned[0] != 1:
        raise ValueError(
            f"backbone_returned_layers must start at 1 (the stride-4 level PointRend samples), "
            f"got {returned}"
        )
    return resnet_fpn_backbone(
        name,
        returned_layers=returned,
        fpn_channels=fpn_channels,
        norm=norm,
        pretrained=pretrained,
        trainable_layers=trainable_layers,
    )
