"""Export PointRend models to ONNX (run in onnxruntime) and TorchScript (traced).

The exported graph runs the same subdivision as PyTorch: per step the same top-k of the
uncertainty map (``min(H * W, num_points)`` cells), gather, ``grid_sample`` and scatter, with no
fixed number of points. Sizes stay symbolic, so one file serves every input size:

* semantic: ``images`` ``N x 3 x H x W`` -> ``logits`` ``N x K x H x W`` (any N, H, W);
* instance: ``image`` ``3 x H x W`` (one image, as torchvision's Mask R-CNN exports) ->
  ``boxes`` ``D x 4`` (``x0, y0, x1, y1`` in input pixels), ``labels`` ``D`` (int64, 0 is the
  background), ``scores`` ``D``, ``masks`` ``D x 1 x H x W`` (probabilities), any H, W and D.

Input contract (both): float32 RGB in ``[0, 1]``; the model normalises with the ImageNet mean
and std itself (instance models also resize to their ``min_size`` / ``max_size``). A wrong rank
or channel count is an error in onnxruntime (static input dims) and in TorchScript (a reshape
to ``3`` channels in the graph); :class:`OnnxPredictor` also checks dtype and range.

ONNX export uses ``torch.onnx.export(..., dynamo=False)`` (the TorchScript-based exporter that
torchvision's Mask R-CNN export relies on), opset 17 (``GridSample`` needs 16).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from ._scripting import NotScriptableError

__all__ = [
    "FORMATS",
    "INSTANCE_OUTPUTS",
    "NotScriptableError",
    "OnnxPredictor",
    "check_input",
    "example_input",
    "export_from_config",
    "export_onnx",
    "export_torchscript",
    "model_task",
]

FORMATS = ("onnx", "torchscript")
INSTANCE_OUTPUTS = ("boxes", "labels", "scores", "masks")
DEFAULT_OPSET = 17
_INPUT_NAMES = {"semantic": "images", "instance": "image"}


def model_task(model: nn.Module) -> str:
    """``"semantic"`` for a :class:`SemanticSegmenter`, ``"instance"`` for a Mask R-CNN."""
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

    from .semantic import SemanticSegmenter

    if isinstance(model, SemanticSegmenter):
        return "semantic"
    if isinstance(model, GeneralizedRCNN):
        return "instance"
    raise ValueError(
        f"cannot export a {type(model).__name__}: expected a SemanticSegmenter or a Mask R-CNN"
    )


class _SemanticGraph(nn.Module):
    """``images N x 3 x H x W -> logits N x K x H x W``; the reshape fails on other channels."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        n, _, h, w = images.shape
        return self.model(images.reshape(n, 3, h, w))["out"]


class _InstanceGraph(nn.Module):
    """``image 3 x H x W -> (boxes, labels, scores, masks)`` of that image."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        # Without the reshape a 1-channel image would broadcast against the 3-channel mean.
        _, h, w = image.shape
        out = self.model([image.reshape(3, h, w)])[0]
        return out["boxes"], out["labels"], out["scores"], out["masks"]


def check_exportable(model: nn.Module) -> None:
    """Refuse a model whose masks have one size per box (``mask_resolution: box``): the exported
    graph returns one ``detections x 1 x H x W`` tensor rendered at a fixed grid."""
    branch = getattr(getattr(model, "roi_heads", None), "mask_branch", None)
    if branch is not None and getattr(branch.config, "mask_resolution", "fixed") == "box":
        raise ValueError(
            "cannot export a model with mask_resolution 'box' (a grid size per box is not "
            "traceable); export it with model.options.mask_resolution=fixed"
        )


def _graph_module(model: nn.Module, task: str) -> nn.Module:
    if task not in _INPUT_NAMES:
        raise ValueError(f"task must be 'semantic' or 'instance', got {task!r}")
    check_exportable(model)
    return (_SemanticGraph if task == "semantic" else _InstanceGraph)(model).eval()


def example_input(task: str, image_size: Sequence[int] = (160, 160), seed: int = 0) -> Tensor:
    """A random float32 image in ``[0, 1]``: ``1 x 3 x H x W`` (semantic) or ``3 x H x W``."""
    generator = torch.Generator().manual_seed(seed)
    h, w = int(image_size[0]), int(image_size[1])
    image = torch.rand(3, h, w, generator=generator)
    return image.unsqueeze(0) if task == "semantic" else image


@contextlib.contextmanager
def _quiet_tracing():
    """Tracing warns on every Python-side size check (validation only); the tests check the
    exported graphs at other sizes instead, so these warnings are silenced here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        warnings.filterwarnings("ignore", message=".*dynamic axes.*")
        warnings.filterwarnings("ignore", message=".*advanced indexing.*")
        warnings.filterwarnings("ignore", message="To copy construct from a tensor")
        yield


def export_onnx(
    model: nn.Module,
    path: str | Path,
    task: str | None = None,
    example: Tensor | None = None,
    opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``model`` (put in eval mode, on CPU) to an ONNX file.

    Args:
        model: a :class:`SemanticSegmenter` or a (PointRend) Mask R-CNN.
        path: the ``.onnx`` file to write.
        task: ``"semantic"`` / ``"instance"`` (default: from the model's type).
        example: the input traced (:func:`example_input` by default). Its size does not
            matter: batch (semantic), height and width are dynamic axes, and so is the number
            of detections.
        opset: ONNX opset (>= 16 for ``GridSample``).
        metadata: extra string pairs stored in the model (``pointrend_task`` is always set).

    Returns:
        ``path``. Inputs and outputs are named as in the module docstring.
    """
    if opset < 16:
        raise ValueError(f"opset must be >= 16 (GridSample, used for point sampling), got {opset}")
    task = task or model_task(model)
    graph = _graph_module(model.cpu(), task)
    example = example_input(task) if example is None else example
    name = _INPUT_NAMES[task]
    if task == "semantic":
        outputs = ["logits"]
        axes = {
            name: {0: "batch", 2: "height", 3: "width"},
            "logits": {0: "batch", 2: "height", 3: "width"},
        }
    else:
        outputs = list(INSTANCE_OUTPUTS)
        axes = {
            name: {1: "height", 2: "width"},
            "masks": {0: "detections", 2: "height", 3: "width"},
        }
        axes.update({k: {0: "detections"} for k in ("boxes", "labels", "scores")})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_tracing(), torch.no_grad():
        torch.onnx.export(
            graph,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[name],
            output_names=outputs,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    _write_onnx_metadata(path, {"pointrend_task": task, **(metadata or {})})
    return path


def _write_onnx_metadata(path: Path, metadata: dict[str, str]) -> None:
    import onnx

    proto = onnx.load(str(path))
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = str(key), str(value)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))


def export_torchscript(
    model: nn.Module,
    path: str | Path,
    task: str | None = None,
    example: Tensor | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Trace ``model`` (eval mode, CPU) to a TorchScript file (``torch.jit.load`` reads it).

    Tracing, not scripting: torchvision's detection code is scriptable but the PointRend parts
    (closures, dataclass configs) are not. Sizes stay symbolic, as for ONNX, so the traced
    module takes any input size; its inputs and outputs are those of :func:`export_onnx`
    (a tuple of four tensors for instances). ``metadata`` is stored as ``pointrend.json``.
    """
    task = task or model_task(model)
    graph = _graph_module(model.cpu(), task)
    example = example_input(task) if example is None else example
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    extra = {"pointrend.json": json.dumps({"pointrend_task": task, **(metadata or {})})}
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(graph, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def export_from_config(
    config_path: str | Path,
    weights: str | Path,
    format: str,
    out: str | Path,
    overrides: Sequence[str] = (),
    image_size: Sequence[int] | None = None,
    opset: int = DEFAULT_OPSET,
    device: str = "cpu",
) -> dict:
    """Build the model of a YAML config, load ``weights`` (``weights_only=True``), export it
    traced on ``device`` (``cpu``: a graph that runs anywhere; see the device rule of
    :mod:`pointrend.engine.distributed`).

    Also runs the exported file (onnxruntime for ONNX, when installed) and the PyTorch model
    on one random image of ``image_size`` (default: the config's data ``image_size``) and
    reports the largest difference.

    Returns:
        ``{"path", "task", "format", "num_classes", "max_abs_diff"}``; ``max_abs_diff`` is
        ``None`` when onnxruntime is missing or the two runs found different detections.
    """
    from .engine.inference import load_trained_model

    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
    if not Path(config_path).is_file():
        raise FileNotFoundError(f"config file not found: {config_path}")
    if not Path(weights).is_file():
        raise FileNotFoundError(f"weights file not found: {weights}")
    trained = load_trained_model(weights, config_path, list(overrides), device=device)
    model, task = trained.model.eval(), trained.task
    side = trained.config.train_data.image_size
    example = example_input(task, image_size or (side, side)).to(trained.device)
    metadata = {
        "num_classes": str(trained.num_classes),
        "class_names": json.dumps(trained.class_names),
        "input": "float32 RGB in [0, 1]; normalised inside the model",
    }
    if format == "onnx":
        path = export_onnx(model, out, task, example, opset, metadata)
    else:
        path = export_torchscript(model, out, task, example, metadata)
    return {
        "path": str(path),
        "task": task,
        "format": format,
        "num_classes": trained.num_classes,
        "max_abs_diff": _max_difference(model, path, format, task, example),
    }


def _max_difference(
    model: nn.Module, path: Path, format: str, task: str, example: Tensor
) -> float | None:
    """Largest absolute difference between PyTorch and the exported file on ``example``."""
    with torch.no_grad():
        reference = [t.cpu() for t in _as_tuple(_graph_module(model, task)(example))]
        if format == "torchscript":
            loaded = torch.jit.load(str(path), map_location=example.device)
            exported = [t.cpu().numpy() for t in _as_tuple(loaded(example))]
        else:
            try:
                exported = list(_as_tuple(OnnxPredictor(path).run(example.cpu())))
            except ImportError:
                return None
    pairs = list(zip(reference, exported))
    if any(tuple(r.shape) != tuple(e.shape) for r, e in pairs):
        return None
    diffs = [float(np.abs(r.numpy().astype(np.float64) - e).max()) for r, e in pairs if e.size]
    return max(diffs, default=0.0)


def _as_tuple(outputs) -> tuple:
    if isinstance(outputs, dict):
        return tuple(outputs[k] for k in INSTANCE_OUTPUTS)
    return tuple(outputs) if isinstance(outputs, tuple | list) else (outputs,)


def check_input(images, task: str) -> np.ndarray:
    """Check images against the input contract; a ``ValueError`` names what is wrong.

    Args:
        images: a tensor or array, ``N x 3 x H x W`` (semantic) or ``3 x H x W`` (instance),
            float32 RGB in ``[0, 1]``.

    Returns:
        The images as a contiguous float32 numpy array.
    """
    array = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
    shape = "N x 3 x H x W" if task == "semantic" else "3 x H x W (one image)"
    rank, channel_axis = (4, 1) if task == "semantic" else (3, 0)
    if array.ndim != rank or array.shape[channel_axis] != 3:
        raise ValueError(f"{task} input must be {shape} RGB, got shape {array.shape}")
    if min(array.shape[-2:]) < 1:
        raise ValueError(f"{task} input has an empty image: shape {array.shape}")
    if array.dtype != np.float32:
        hint = " (divide uint8 images by 255)" if array.dtype == np.uint8 else ""
        raise ValueError(f"input must be float32 RGB in [0, 1], got {array.dtype}{hint}")
    if array.size and not np.isfinite(array).all():
        raise ValueError("input holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(
            f"input values must be in [0, 1] (RGB / 255; the model normalises itself), "
            f"got [{low:.3g}, {high:.3g}]"
        )
    return np.ascontiguousarray(array)


class OnnxPredictor:
    """An exported ``.onnx`` model in onnxruntime, with the input contract checked first.

    ``predictor(images)`` returns the logits ``N x K x H x W`` (semantic) or a dict of
    ``boxes``, ``labels``, ``scores``, ``masks`` (instance) as numpy arrays; bad input (rank,
    channels, dtype, values outside ``[0, 1]``) raises a ``ValueError``.
    """

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)):
        import onnxruntime

        if not Path(path).is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}")
        self.session = onnxruntime.InferenceSession(str(path), providers=list(providers))
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.task = self.metadata.get("pointrend_task")
        if self.task not in _INPUT_NAMES:
            raise ValueError(f"{path} is not a pointrend export (no pointrend_task metadata)")
        self.input_name = self.session.get_inputs()[0].name

    def run(self, images) -> list[np.ndarray]:
        """The raw outputs, in the order of the graph's outputs."""
        return self.session.run(None, {self.input_name: check_input(images, self.task)})

    def __call__(self, images):
        outputs = self.run(images)
        return outputs[0] if self.task == "semantic" else dict(zip(INSTANCE_OUTPUTS, outputs))
