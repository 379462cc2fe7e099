"""Imported models as pointrend checkpoints: what ``pointrend import-detectron2`` writes, and the
published models converted once for ``--weights zoo:NAME`` and :func:`pointrend.models.from_zoo`."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..interop.detectron2 import ImportedModel, import_detectron2
from ..interop.detectron2.zoo import fetch_checkpoint, zoo_checkpoint_path
from .checkpoint import atomic_save, atomic_write
from .config import ModelConfig, TrainConfig, config_to_dict
from .outputs import check_import_outputs

__all__ = ["converted_zoo_checkpoint", "write_imported_checkpoint"]


def write_imported_checkpoint(imported: ImportedModel, path: str | Path) -> Path:
    """Write an ordinary pointrend checkpoint (weights, config with the model options, class
    names, label -> category id) that ``pointrend predict / eval / export`` accept, and beside it
    its config as YAML (``OUT.yaml``: the model section to fine-tune from, with
    ``model.weights: OUT.pt``; its data sections are to be filled in). Existing files are
    replaced (``pointrend import-detectron2`` refuses that without ``--overwrite``); an ``OUT``
    ending in ``.yaml``, or a folder or device at either path, is refused."""
    path = Path(path)
    check_import_outputs(path, [], overwrite=True)  # OUT and OUT.yaml: two regular files
    config = config_to_dict(TrainConfig(model=ModelConfig(**imported.model_config)))
    checkpoint = {
        "model": imported.model.state_dict(),
        "config": config,
        "num_classes": imported.model_config["num_classes"],
        "class_names": list(imported.class_names),
    }
    if imported.label_to_category_id:
        checkpoint["label_to_category_id"] = dict(imported.label_to_category_id)
    atomic_save(checkpoint, path)
    config["model"]["weights"] = str(path)
    config["model"]["num_classes"] = None  # from the fine-tuning data
    text = f"# {path.name} imported from detectron2; set train_data to fine-tune from it\n"
    text += yaml.safe_dump(config, sort_keys=False)
    atomic_write(path.with_suffix(".yaml"), lambda f: f.write(text), binary=False)
    return path


def converted_zoo_checkpoint(name: str) -> Path:
    """The pointrend checkpoint of the published model ``name``: downloaded (once, into torch's
    hub cache: :func:`~pointrend.interop.detectron2.zoo.fetch_checkpoint`), converted once and kept beside the download as
    ``<file>.pointrend.pt`` (with its ``.yaml``); later calls read that file. Offline, the error
    names the URL and where to put the file."""
    converted = zoo_checkpoint_path(name).with_suffix(".pointrend.pt")
    if converted.is_file():
        return converted
    imported = import_detectron2(fetch_checkpoint(name), zoo=name)
    return write_imported_checkpoint(imported, converted)  # atomic: a concurrent call is safe
