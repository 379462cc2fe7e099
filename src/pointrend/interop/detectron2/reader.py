"""Reading detectron2 checkpoints without running their code.

Two file kinds:

* a model-zoo ``.pkl``: a pickle of ``{"model": {name: numpy array}, "__author__": ...}``, written
  by numpy 1.x (``numpy.core.multiarray._reconstruct``; some need ``encoding="latin1"``) or 2.x
  (``numpy._core``). Unpickling can run any code a file names, so :class:`RestrictedUnpickler`
  admits only numpy array reconstruction, dtypes and plain containers; anything else is refused
  with :class:`~pointrend.interop.detectron2.D2ImportError` before it is called.
* a ``.pth`` written by detectron2's trainer: ``torch.save`` of ``{"model": {name: tensor},
  "iteration": ..., "optimizer": ..., ...}``, read with ``torch.load(weights_only=True)``; only
  ``"model"`` is used.

Key names are returned as current detectron2 names: a leading ``module.`` is dropped,
non-persistent buffers old files may hold (``pixel_mean``, ``pixel_std``, anchor cell anchors)
are dropped, and the older PointRend layouts are renamed as detectron2 renames them on load:
``roi_heads.mask_point_head.*`` -> ``roi_heads.mask_head.point_head.*``,
``roi_heads.mask_coarse_head.*`` -> ``roi_heads.mask_head.coarse_head.*``, then
``...coarse_head.coarse_mask_fc{k}`` -> ``...coarse_head.fc{k}``.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from .config import D2ImportError

__all__ = ["RestrictedUnpickler", "read_detectron2_weights", "current_key"]

# (module, name) a zoo pickle may reference: numpy array and scalar reconstruction, dtypes.
_NUMPY_GLOBALS = {
    (module, name)
    for core in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
} | {("numpy", "ndarray"), ("numpy", "dtype")}
# protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1")
_PLAIN_GLOBALS = {("collections", "OrderedDict"), ("builtins", "bytearray"), ("_codecs", "encode")}
_OLD_PREFIXES = (
    ("roi_heads.mask_point_head.", "roi_heads.mask_head.point_head."),
    ("roi_heads.mask_coarse_head.", "roi_heads.mask_head.coarse_head."),
)
_FC_RENAMED_HEADS = ("roi_heads.mask_head.coarse_head.", "roi_heads.mask_head.parameter_head.")
_NOT_WEIGHTS = ("pixel_mean", "pixel_std")


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only numpy's array reconstruction and plain containers."""

    def __init__(self, file, source: str, **options):
        super().__init__(file, **options)
        self.source = source

    def find_class(self, module: str, name: str):
        if (module, name) in _NUMPY_GLOBALS or (module, name) in _PLAIN_GLOBALS:
            return _resolve(module, name)
        raise D2ImportError(
            f"{self.source}: refused to unpickle {module}.{name}: a detectron2 .pkl holds only "
            "numpy arrays and plain containers (the file may be corrupt or malicious)"
        )

    def persistent_load(self, pid):
        raise D2ImportError(f"{self.source}: refused a persistent reference in the pickle: {pid!r}")


def _resolve(module: str, name: str):
    """The admitted global, from the installed numpy whichever numpy wrote the file."""
    if module == "numpy":
        return getattr(np, name)
    if module == "collections":
        from collections import OrderedDict

        return OrderedDict
    if module == "builtins":
        return bytearray
    if module == "_codecs":
        return _latin1_bytes
    submodule = module.rsplit(".", 1)[1]  # multiarray / numeric
    core = getattr(np, "_core", None) or np.core
    return getattr(getattr(core, submodule), name)


def _latin1_bytes(text: str, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` restricted to the two encodings pickle uses for bytes."""
    if encoding not in ("latin1", "latin-1", "utf-8") or not isinstance(text, str):
        raise D2ImportError(f"refused to unpickle bytes encoded as {encoding!r}")
    return text.encode(encoding)


def _unpickle(path: Path) -> object:
    data = path.read_bytes()
    try:
        return RestrictedUnpickler(io.BytesIO(data), str(path)).load()
    except UnicodeDecodeError:  # a Python 2 pickle of numpy arrays: their bytes need latin1
        return RestrictedUnpickler(io.BytesIO(data), str(path), encoding="latin1").load()
    except D2ImportError:
        raise
    except Exception as err:
        raise D2ImportError(f"{path}: not a readable detectron2 .pkl: {err}") from err


def _load_pth(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise D2ImportError(
            f"{path}: not a readable detectron2 .pth (loaded with weights_only=True): {err}"
        ) from err


def current_key(key: str) -> str:
    """A checkpoint key under its current detectron2 name (``module.`` and old layouts)."""
    if key.startswith("module."):
        key = key[len("module.") :]
    for old, new in _OLD_PREFIXES:
        if key.startswith(old):
            key = new + key[len(old) :]
    for head in _FC_RENAMED_HEADS:
        if key.startswith(head + "coarse_mask_fc"):
            key = head + "fc" + key[len(head + "coarse_mask_fc") :]
    return key


def _as_tensor(value: object, key: str, source: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value.detach().clone()
    elif isinstance(value, np.ndarray) and value.dtype.kind in "fiub":
        tensor = torch.from_numpy(np.ascontiguousarray(value).copy())
    else:
        raise D2ImportError(f"{source}: {key} is a {type(value).__name__}, not an array of numbers")
    if tensor.is_floating_point():
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise D2ImportError(
                f"{source}: {key} holds {bad} non-finite value(s) (NaN or infinity): the "
                "checkpoint is broken; nothing was imported"
            )
    return tensor


def read_detectron2_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The model weights of a detectron2 checkpoint (``.pkl`` of the zoo or trainer ``.pth``).

    Returns:
        ``{current detectron2 key: tensor}``; non-persistent buffers are left out.
    """
    path = Path(path)
    if not path.is_file():
        raise D2ImportError(f"detectron2 checkpoint not found: {path}")
    content = _unpickle(path) if path.suffix == ".pkl" else _load_pth(path)
    if isinstance(content, dict) and "model" in content:
        content = content["model"]
    if not isinstance(content, dict) or not content:
        raise D2ImportError(f"{path}: holds no model weights (expected a dict with 'model')")
    weights: dict[str, torch.Tensor] = {}
    for key, value in content.items():
        name = current_key(str(key))
        if name in _NOT_WEIGHTS or "anchor_generator.cell_anchors" in name:
            continue
        if name in weights:
            raise D2ImportError(f"{path}: {key} and another key both map to {name}")
        weights[name] = _as_tensor(value, str(key), str(path))
    return weights
