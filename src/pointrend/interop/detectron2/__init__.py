"""detectron2 checkpoints (the PointRend model zoo, a detectron2 trainer's output) as pointrend
models.

:func:`from_detectron2` reads a checkpoint (a zoo ``.pkl`` or a trainer ``.pth``) with its
detectron2 config (the merged ``config.yaml`` of a detectron2 run, or ``zoo=NAME`` for a published
model) and returns the pointrend model that computes what detectron2 computes: PointRend Mask
R-CNN for ``MODEL.META_ARCHITECTURE: GeneralizedRCNN``, PointRend Semantic FPN for
``SemanticSegmentor``. :func:`import_detectron2` also returns what a pointrend checkpoint stores
(model config, class names, label -> category id), which ``pointrend import-detectron2`` writes
(:mod:`pointrend.engine.imported`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from .config import D2Config, D2ImportError
from .reader import read_detectron2_weights

__all__ = [
    "D2Config",
    "D2ImportError",
    "ImportedModel",
    "from_detectron2",
    "import_detectron2",
    "read_detectron2_weights",
]


@dataclass
class ImportedModel:
    """An imported model and what its pointrend checkpoint records: ``model_config`` (the model
    section of a config: task, name, arch, backbone, num_classes, options), ``class_names``
    (by label) and ``label_to_category_id`` (empty when the dataset is unknown)."""

    model: nn.Module
    model_config: dict
    class_names: list[str]
    label_to_category_id: dict[int, int]


def _config(d2_config, zoo: str | None) -> tuple[D2Config, str | None]:
    """The detectron2 config and the zoo model's dataset (``None`` for a config file)."""
    from .zoo import zoo_config, zoo_model

    if (d2_config is None) == (zoo is None):
        raise D2ImportError("give exactly one of d2_config (a detectron2 config.yaml) and zoo")
    if zoo is not None:
        return zoo_config(zoo), zoo_model(zoo).dataset
    if isinstance(d2_config, D2Config):
        return d2_config, None
    return D2Config.from_yaml(d2_config), None


def _dataset_of(cfg: D2Config) -> str | None:
    """``"coco"`` / ``"cityscapes"`` when every dataset the config names is one of those."""
    names = [*cfg.get("DATASETS.TRAIN", ()), *cfg.get("DATASETS.TEST", ())]
    for dataset in ("coco", "cityscapes"):
        if names and all(str(n).startswith(dataset) for n in names):
            return dataset
    return None


def import_detectron2(
    checkpoint: str | Path | None, d2_config=None, zoo: str | None = None
) -> ImportedModel:
    """Import a detectron2 checkpoint (see the module docstring).

    Args:
        checkpoint: a ``.pkl`` / ``.pth`` file; ``None`` with ``zoo`` downloads the published
            checkpoint into torch's hub cache (an error names the URL and the destination
            when offline).
        d2_config: path of a detectron2 ``config.yaml`` (or a :class:`D2Config`).
        zoo: a published model's name (:data:`~pointrend.interop.detectron2.zoo.ZOO`).
    """
    from .checks import check_importable
    from .zoo import dataset_classes, fetch_checkpoint

    cfg, dataset = _config(d2_config, zoo)
    check_importable(cfg)
    if checkpoint is None:
        if zoo is None:
            raise D2ImportError("no checkpoint given (pass the file, or zoo=NAME to download it)")
        checkpoint = fetch_checkpoint(zoo)
    weights = read_detectron2_weights(checkpoint)
    arch = cfg.get("MODEL.META_ARCHITECTURE")
    if arch == "GeneralizedRCNN":
        from .instance import instance_model_config_from_detectron2, instance_model_from_detectron2

        spec = instance_model_config_from_detectron2(cfg)
        model = instance_model_from_detectron2(weights, cfg)
        names, to_category = dataset_classes(dataset or _dataset_of(cfg), spec["num_classes"])
    elif arch == "SemanticSegmentor":
        from . import semantic  # the semantic importer, loaded only when needed

        spec = semantic.semantic_model_config_from_detectron2(cfg)
        model = semantic.semantic_model_from_detectron2(weights, cfg)
        names, to_category = semantic.semantic_class_names(cfg), {}
    else:
        raise D2ImportError(
            f"{cfg.source}: MODEL.META_ARCHITECTURE {arch!r} is not supported "
            "(GeneralizedRCNN or SemanticSegmentor)"
        )
    return ImportedModel(model, spec, names, to_category)


def from_detectron2(
    checkpoint: str | Path | None, d2_config=None, zoo: str | None = None
) -> nn.Module:
    """The pointrend model (eval mode) of a detectron2 checkpoint: :func:`import_detectron2`'s
    model. Instance models take RGB images in ``[0, 1]`` and return torchvision's dicts (labels
    ``1..K``: detectron2 class ``c`` is label ``c + 1``)."""
    return import_detectron2(checkpoint, d2_config, zoo).model
