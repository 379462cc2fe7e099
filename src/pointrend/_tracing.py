"""What changes when a model is traced for export (``torch.jit.trace``, the ONNX exporter).

Tracing records one run of the Python code as a graph, so the code must avoid what the graph
cannot keep: ``int()`` of a size (the traced input's value would be frozen), branches on the
number of boxes, in-place writes the exporter cannot express. Everything that differs under
tracing lives in this module: the rest of the library asks :func:`is_tracing` once, at the
point where it hands over to a function here, and otherwise reads as plain eager PyTorch.
"""

from __future__ import annotations

import torch

__all__ = ["is_tracing"]


def is_tracing() -> bool:
    """True while ``torch.jit.trace`` (and so the TorchScript-based ONNX exporter) records."""
    return torch.jit.is_tracing()
