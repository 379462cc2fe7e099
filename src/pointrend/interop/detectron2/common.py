"""What the instance and the semantic importers share: the ResNet / FPN backbone of a detectron2
config, its input convention, the table-driven refusal of values pointrend does not implement,
and the strict conversion of detectron2's weights into a model's state dict.

A detectron2 config value either becomes a builder option, or is required to equal the one value
pointrend implements (:func:`check_required`: a config with another value is refused naming the
key, the value and what pointrend implements). A key the config lacks is not checked: zoo entries
and older merged configs leave defaults out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from torch import Tensor, nn

from .config import D2Config, D2ImportError

__all__ = [
    "BACKBONE_REQUIRED",
    "FIRST_CONV",
    "IGNORED_KEYS",
    "POINT_HEAD_OPTIONS",
    "POINT_HEAD_REQUIRED",
    "RESNETS",
    "backbone_options",
    "input_normalisation",
    "check_backbone",
    "check_required",
    "check_weights",
    "load_weights",
    "misfit",
    "no_place",
    "point_head_options",
    "rename_weights",
    "resnet_name",
]

# (MODEL.RESNETS DEPTH, NUM_GROUPS, WIDTH_PER_GROUP) -> torchvision's ResNet / ResNeXt
RESNETS = {
    (18, 1, 64): "resnet18",
    (34, 1, 64): "resnet34",
    (50, 1, 64): "resnet50",
    (101, 1, 64): "resnet101",
    (152, 1, 64): "resnet152",
    (50, 32, 4): "resnext50_32x4d",
    (101, 32, 8): "resnext101_32x8d",
    (101, 64, 4): "resnext101_64x4d",
}
_RES2_FEATURES = ["res2", "res3", "res4", "res5"]
# the ResNet-FPN backbone both tasks build: key -> the value pointrend implements
BACKBONE_REQUIRED = {
    "MODEL.BACKBONE.NAME": "build_resnet_fpn_backbone",
    "MODEL.RESNETS.RES5_DILATION": 1,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": 64,
    "MODEL.RESNETS.OUT_FEATURES": _RES2_FEATURES,
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": [False, False, False, False],
    "MODEL.FPN.IN_FEATURES": _RES2_FEATURES,
    "MODEL.FPN.NORM": "",
    "MODEL.FPN.FUSE_TYPE": "sum",
}
# detectron2's StandardPointHead on P2, as both tasks' PointRend heads build it
POINT_HEAD_REQUIRED = {
    "MODEL.POINT_HEAD.NAME": "StandardPointHead",
    "MODEL.POINT_HEAD.IN_FEATURES": ["p2"],
    "MODEL.POINT_HEAD.CLS_AGNOSTIC_MASK": False,
}
# MODEL.POINT_HEAD keys both tasks map to the same builder option: key -> (option, type,
# the default of detectron2's add_pointrend_config, for a config that leaves the key out)
POINT_HEAD_OPTIONS = {
    "TRAIN_NUM_POINTS": ("train_num_points", int, 14 * 14),
    "OVERSAMPLE_RATIO": ("oversample_ratio", float, 3.0),
    "IMPORTANCE_SAMPLE_RATIO": ("importance_sample_ratio", float, 0.75),
    "SUBDIVISION_NUM_POINTS": ("subdivision_num_points", int, 28 * 28),
    "FC_DIM": ("point_head_fc_dim", int, 256),
    "NUM_FC": ("point_head_num_fc", int, 3),
}
# keys of every detectron2 config that change nothing a checkpoint computes: the device it ran on
# and the file its training started from
IGNORED_KEYS = ("MODEL.DEVICE", "MODEL.WEIGHTS")
_NORMS = ("FrozenBN", "BN", "SyncBN")  # all read as fixed statistics at inference
_FORMATS = ("BGR", "RGB")
FIRST_CONV = "backbone.body.conv1.weight"  # its input channels are reversed for a BGR model
_NOT_WEIGHTS = ("pixel_mean", "pixel_std")  # buffers some checkpoints hold; from the config


def _plain(value):
    """Tuples (as YAML or a zoo table may give them) as lists, nested ones too."""
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def check_required(cfg: D2Config, required: Mapping[str, object], why: str = "") -> None:
    """Raise :class:`D2ImportError` for the first key of ``required`` the config sets to another
    value (``why``: what pointrend implements instead, appended to the message)."""
    for key, value in required.items():
        found = cfg.get(key, value)
        if _plain(found) != _plain(value):
            reason = f": {why}" if why else ""
            raise D2ImportError(
                f"{cfg.source}: {key} = {found!r} is not supported (pointrend imports "
                f"{value!r}){reason}"
            )


def point_head_options(cfg: D2Config) -> dict[str, int | float]:
    """The builder options of :data:`POINT_HEAD_OPTIONS` read from the config."""
    return {
        option: kind(cfg.get(f"MODEL.POINT_HEAD.{key}", default))
        for key, (option, kind, default) in POINT_HEAD_OPTIONS.items()
    }


def resnet_name(cfg: D2Config) -> str:
    """The torchvision name of the config's ResNet / ResNeXt (``resnet50``,
    ``resnext101_32x8d``); its ``RES2_OUT_CHANNELS`` must be torchvision's (64 for the basic
    blocks of depth 18 / 34, else 256)."""
    arch = (
        int(cfg.get("MODEL.RESNETS.DEPTH")),
        int(cfg.get("MODEL.RESNETS.NUM_GROUPS", 1)),
        int(cfg.get("MODEL.RESNETS.WIDTH_PER_GROUP", 64)),
    )
    if arch not in RESNETS:
        raise D2ImportError(
            f"{cfg.source}: MODEL.RESNETS DEPTH / NUM_GROUPS / WIDTH_PER_GROUP = {arch} is not "
            f"one of torchvision's ResNets / ResNeXts {sorted(RESNETS)}"
        )
    check_required(cfg, {"MODEL.RESNETS.RES2_OUT_CHANNELS": 64 if arch[0] < 50 else 256})
    return RESNETS[arch]


def check_backbone(cfg: D2Config) -> None:
    """Refuse a backbone, norm or input format pointrend does not build (naming the key)."""
    check_required(cfg, BACKBONE_REQUIRED)
    norm = cfg.get("MODEL.RESNETS.NORM")
    if norm not in _NORMS:
        raise D2ImportError(
            f"{cfg.source}: MODEL.RESNETS.NORM = {norm!r} is not supported (one of {list(_NORMS)})"
        )
    fmt = cfg.get("INPUT.FORMAT")
    if fmt not in _FORMATS:
        raise D2ImportError(f"{cfg.source}: INPUT.FORMAT = {fmt!r} is not supported (BGR or RGB)")


def input_normalisation(cfg: D2Config) -> tuple[list[float], list[float], bool]:
    """``(image_mean, image_std, flip)``: the RGB ``[0, 1]`` normaliser equal to detectron2's
    (``PIXEL_MEAN / 255``, ``PIXEL_STD / 255`` in RGB order) and whether the first conv's input
    channels are to be reversed (a BGR model)."""
    fmt = cfg.get("INPUT.FORMAT")
    if fmt not in _FORMATS:
        raise D2ImportError(f"{cfg.source}: INPUT.FORMAT = {fmt!r} is not supported (BGR or RGB)")
    mean = [float(v) / 255 for v in cfg.get("MODEL.PIXEL_MEAN")]
    std = [float(v) / 255 for v in cfg.get("MODEL.PIXEL_STD")]
    if len(mean) != 3 or len(std) != 3:
        raise D2ImportError(f"{cfg.source}: MODEL.PIXEL_MEAN / PIXEL_STD need 3 values")
    flip = fmt == "BGR"
    return (mean[::-1], std[::-1], flip) if flip else (mean, std, flip)


def backbone_options(cfg: D2Config) -> dict:
    """The builder options both tasks take from the backbone and input sections:
    ``trainable_backbone_layers`` (``5 - BACKBONE.FREEZE_AT``), ``stride_in_1x1``,
    ``fpn_channels``, ``image_mean`` and ``image_std``."""
    mean, std, _ = input_normalisation(cfg)
    return {
        "trainable_backbone_layers": 5 - int(cfg.get("MODEL.BACKBONE.FREEZE_AT")),
        "stride_in_1x1": bool(cfg.get("MODEL.RESNETS.STRIDE_IN_1X1")),
        "fpn_channels": int(cfg.get("MODEL.FPN.OUT_CHANNELS")),
        "image_mean": mean,
        "image_std": std,
    }


def rename_weights(
    weights: Mapping[str, Tensor],
    rename: Callable[[str], str | None],
    flip: bool,
    convert: Callable[[str, Tensor], Tensor] | None = None,
) -> tuple[dict[str, Tensor], dict[str, str], list[str]]:
    """detectron2 weights under pointrend's names: ``(state, origin, unused)``.

    ``rename`` gives a detectron2 key's pointrend key (``None``: it has none, the key is listed in
    ``unused``); values become float32, the first conv's input channels are reversed when
    ``flip``, then ``convert(pointrend key, tensor)`` reshapes what the task needs. ``origin``
    maps each pointrend key back to its detectron2 key (for error messages). Batch norm counters
    and the normaliser buffers some checkpoints hold are skipped.
    """
    state: dict[str, Tensor] = {}
    origin: dict[str, str] = {}
    unused: list[str] = []
    for key, value in weights.items():
        if key.endswith("num_batches_tracked") or key in _NOT_WEIGHTS:
            continue
        name = rename(key)
        if name is None:
            unused.append(key)
            continue
        value = value.float()
        if name == FIRST_CONV and flip:
            value = value[:, [2, 1, 0]]
        state[name] = convert(name, value) if convert else value
        origin[name] = key
    return state, origin, unused


def _listed(keys: Iterable[str]) -> str:
    keys = sorted(keys)
    return f"{keys[:8]}{' ...' if len(keys) > 8 else ''}"


def no_place(unused: Iterable[str]) -> str:
    """The problem of detectron2 keys that have no place in the model, naming them."""
    unused = list(unused)
    return f"{len(unused)} detectron2 key(s) have no place: {_listed(unused)}"


def misfit(source: str, problems: list[str]) -> D2ImportError:
    """The one-line error of weights that do not fit the model."""
    return D2ImportError(f"{source}: the weights do not fit the model: {'; '.join(problems)}")


def check_weights(
    model: nn.Module,
    state: Mapping[str, Tensor],
    source: str,
    origin: Mapping[str, str] | None = None,
    unused: Iterable[str] = (),
) -> None:
    """Check that ``state`` fits ``model``: every model weight given, with its shape, and every
    detectron2 key used (``unused``: those :func:`rename_weights` had no place for), else one
    :class:`D2ImportError` naming the unused (and unexpected) and the missing keys and the wrong
    shapes (``num_batches_tracked`` counters excepted: detectron2 does not keep them)."""
    origin = origin or {}
    expected = {
        k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    missing = set(expected) - set(state)
    extra = set(state) - set(expected)
    wrong = sorted(n for n in set(state) & set(expected) if state[n].shape != expected[n].shape)
    unused = list(unused) + [origin.get(n, n) for n in extra]
    problems = []
    if unused:
        problems.append(no_place(unused))
    if missing:
        problems.append(f"missing {_listed(missing)}")
    problems += [
        f"{origin.get(n, n)} has shape {tuple(state[n].shape)}, the model's {n} "
        f"{tuple(expected[n].shape)}"
        for n in wrong[:4]
    ]
    if problems:
        raise misfit(source, problems)


def load_weights(
    model: nn.Module,
    state: Mapping[str, Tensor],
    source: str,
    origin: Mapping[str, str] | None = None,
    unused: Iterable[str] = (),
) -> None:
    """Load ``state`` into ``model`` after :func:`check_weights` (same arguments)."""
    check_weights(model, state, source, origin, unused)
    model.load_state_dict(dict(state), strict=False)
