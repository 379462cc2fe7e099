"""torchvision's trained weights into this library's models: one mapping for every source.

Three layouts of torchvision state dicts map onto the models of :mod:`pointrend.models`:

* ``"classification"``: an ImageNet classifier (ResNet / ResNeXt ``conv1``, ``layer1`` ...;
  MobileNetV3 ``features.*``) -> the model's backbone body, wherever it sits (``backbone.`` for
  DeepLabV3, ``backbone.body.`` under an FPN); the classifier is dropped.
* ``"maskrcnn"``: torchvision's Mask R-CNN -> the same keys (``backbone``, ``rpn``,
  ``roi_heads.box_*``; ``roi_heads.mask_*`` only into a model that has torchvision's mask head).
* ``"deeplabv3"``: torchvision's DeepLabV3 -> ``backbone.*`` and ``classifier.*`` as
  ``coarse_head.*``; the auxiliary classifier is dropped.

Rules: a part of the source whose destination the model does not have at all is dropped (the
PointRend mask branch replaces torchvision's mask head; a backbone without ``layer4`` takes no
``layer4``); in a part the model has, every key must exist in the model with the same shape, or a
``ValueError`` names it, except the class-count layers (box predictor, mask logits, the last
classifier conv), which load only when their class count is the model's.
"""

from __future__ import annotations

from collections.abc import Mapping

import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum
from torchvision.models.detection import MaskRCNN_ResNet50_FPN_Weights
from torchvision.ops.misc import FrozenBatchNorm2d

from .backbones import StageOutputs

__all__ = [
    "LAYOUTS",
    "load_pretrained",
    "load_torchvision_weights",
    "map_torchvision_state_dict",
    "torchvision_weights",
]

LAYOUTS = ("classification", "maskrcnn", "deeplabv3")
# (source prefix, model prefix or None to drop), per layout.
_PARTS = {
    "maskrcnn": [
        (prefix, prefix)
        for prefix in (
            "backbone.",
            "rpn.",
            "roi_heads.box_head.",
            "roi_heads.box_predictor.",
            "roi_heads.mask_head.",
            "roi_heads.mask_predictor.",
        )
    ],
    "deeplabv3": [("backbone.", "backbone."), ("classifier.", "coarse_head.")],
}
_CLASS_LAYERS = (
    "roi_heads.box_predictor.",
    "roi_heads.mask_predictor.mask_fcn_logits.",
    "coarse_head.4.",
)
# torchvision trained these with FrozenBatchNorm2d's eps = 0 (its builders set it on load).
_ZERO_EPS = (MaskRCNN_ResNet50_FPN_Weights.COCO_V1,)


def _classification_parts(model: nn.Module) -> list[tuple[str, str]]:
    """Each child of the model's backbone body: its key prefix in the classifier -> in the model."""
    for path, module in model.named_modules():
        if isinstance(module, StageOutputs):
            base = path + "." if path else ""
            return [(module.source_prefix + f"{c}.", f"{base}{c}.") for c in module]
    raise ValueError(f"{type(model).__name__} has no backbone body to take classifier weights")


def map_torchvision_state_dict(
    state_dict: Mapping[str, Tensor], model: nn.Module, layout: str
) -> dict[str, Tensor]:
    """The entries of a torchvision ``state_dict`` that carry over to ``model``, under its keys.

    Args:
        state_dict: torchvision's keys, of the ``layout`` (one of :data:`LAYOUTS`).
        model: the destination (only its keys and shapes are read).

    Raises:
        ValueError: naming the key, when a key of a part the model has is missing from the
            model or has another shape (other than the class-count layers).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    parts = _classification_parts(model) if layout == "classification" else _PARTS[layout]
    own = model.state_dict()
    present = [dst for _, dst in parts if any(k.startswith(dst) for k in own)]
    mapped = {}
    for key, value in state_dict.items():
        found = next(((src, dst) for src, dst in parts if key.startswith(src)), None)
        if found is None or found[1] not in present:
            continue
        target = found[1] + key[len(found[0]) :]
        if target not in own:
            if target.endswith("num_batches_tracked"):
                continue  # FrozenBatchNorm2d keeps no counter
            raise ValueError(f"state dict key {key!r} has no counterpart {target!r} in the model")
        if own[target].shape != value.shape:
            if target.startswith(_CLASS_LAYERS):
                continue  # another class count: the model keeps its own
            raise ValueError(
                f"state dict key {key!r} has shape {tuple(value.shape)}, the model's {target!r} "
                f"is {tuple(own[target].shape)}"
            )
        mapped[target] = value
    return mapped


def load_torchvision_weights(
    model: nn.Module, state_dict: Mapping[str, Tensor], layout: str
) -> list[str]:
    """Load the part of a torchvision ``state_dict`` that fits ``model``
    (:func:`map_torchvision_state_dict`); returns the model's keys left as they were."""
    mapped = map_torchvision_state_dict(state_dict, model, layout)
    result = model.load_state_dict(mapped, strict=False)
    return sorted(k for k in result.missing_keys if not k.endswith("num_batches_tracked"))


def torchvision_weights(model_name: str, weights) -> WeightsEnum | None:
    """``None``, a weights enum or its name (``"DEFAULT"``, ``"COCO"`` for the default COCO
    weights of a detection / segmentation model) -> torchvision's enum for ``model_name``."""
    if weights is None:
        return None
    enum = torchvision.models.get_model_weights(model_name)
    if isinstance(weights, str) and weights.upper() == "COCO" and "COCO" in enum.DEFAULT.name:
        weights = "DEFAULT"
    try:
        return enum.verify(weights)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"weights={weights!r} are not torchvision weights of {model_name} (known: "
            f"{', '.join(['DEFAULT', *(w.name for w in enum)])})"
        ) from error


def load_pretrained(model: nn.Module, weights: WeightsEnum, layout: str) -> list[str]:
    """Download (torchvision's cache) and load ``weights`` with :func:`load_torchvision_weights`."""
    state = weights.get_state_dict(progress=True, check_hash=True)
    missing = load_torchvision_weights(model, state, layout)
    if weights in _ZERO_EPS:
        for module in model.modules():
            if isinstance(module, FrozenBatchNorm2d):
                module.eps = 0.0
    return missing
