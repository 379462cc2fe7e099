"""What a detectron2 config must say for pointrend to import it, checked before any weight is
mapped: the architecture (``ROI_HEADS.NAME``, ``MASK_ON``, ``KEYPOINT_ON``) and the class counts.
A config whose weights happen to fit a model pointrend builds, but that computes something
else (a Cascade or C4 head, keypoints, no masks), is refused, naming the key and its value."""

from __future__ import annotations

from .config import D2Config, D2ImportError

__all__ = ["check_importable"]

# key -> the value pointrend's instance models implement (a key the config lacks is not checked:
# zoo entries and older merged configs leave defaults out)
_INSTANCE = {
    "MODEL.ROI_HEADS.NAME": "StandardROIHeads",
    "MODEL.MASK_ON": True,
    "MODEL.KEYPOINT_ON": False,
    "MODEL.PROPOSAL_GENERATOR.NAME": "RPN",
    "MODEL.LOAD_PROPOSALS": False,
}
_WHY = {
    "MODEL.ROI_HEADS.NAME": "pointrend imports StandardROIHeads (FPN, one box head); Cascade "
    "and C4 (Res5ROIHeads) heads are not implemented",
    "MODEL.MASK_ON": "pointrend imports instance segmentation models (MASK_ON: true)",
    "MODEL.KEYPOINT_ON": "keypoint heads are not implemented",
    "MODEL.PROPOSAL_GENERATOR.NAME": "pointrend's models propose boxes with an RPN",
    "MODEL.LOAD_PROPOSALS": "pointrend's models propose boxes with an RPN",
}
_CLASSES = {
    "GeneralizedRCNN": "MODEL.ROI_HEADS.NUM_CLASSES",
    "SemanticSegmentor": "MODEL.SEM_SEG_HEAD.NUM_CLASSES",
}


def check_importable(cfg: D2Config) -> None:
    """Raise :class:`D2ImportError` naming the first config key whose value pointrend cannot
    import (the architecture and the class count, as detectron2 counts them: no background)."""
    arch = cfg.get("MODEL.META_ARCHITECTURE")
    if arch == "GeneralizedRCNN":
        for key, value in _INSTANCE.items():
            found = cfg.get(key, value)
            if found != value:
                raise D2ImportError(
                    f"{cfg.source}: {key} = {found!r} is not supported: {_WHY[key]}"
                )
    if arch in _CLASSES:
        key = _CLASSES[arch]
        count = cfg.get(key)
        if count < 1:
            raise D2ImportError(
                f"{cfg.source}: {key} = {count}: detectron2 counts the classes without the "
                "background, at least 1"
            )
