"""``torch.jit.script`` and pointrend's models: a one-line refusal that says what to use instead.

pointrend's modules are written in ordinary Python that TorchScript's compiler does not accept
(postponed annotations and ``X | None`` unions, dataclass settings read at run time,
comprehensions with conditions, closures, ``OrderedDict`` return types, ``tuple(tensor.shape)``
in messages), and ``torch.jit.script`` is deprecated in the torch pointrend supports. Rather than
fail deep inside the compiler ("Unknown type annotation: 'float'"), the modules every model holds
(:class:`~pointrend.backbones.FPNBackbone`, :class:`~pointrend.semantic.SemanticSegmenter`)
refuse scripting up front: ``torch.jit.script`` calls ``__prepare_scriptable__`` on every
submodule before compiling. Tracing (``torch.jit.trace``, the ONNX export) does not call it.
"""

from __future__ import annotations

__all__ = ["NotScriptable", "NotScriptableError"]


class NotScriptableError(RuntimeError):
    """``torch.jit.script`` was asked to compile a pointrend model."""


class NotScriptable:
    """Mixin of an ``nn.Module`` that ``torch.jit.script`` refuses with
    :class:`NotScriptableError` (see the module docstring)."""

    def __prepare_scriptable__(self):
        raise NotScriptableError(
            f"{type(self).__name__}: pointrend models cannot be compiled with torch.jit.script "
            "(their Python is outside TorchScript's subset); export a traced TorchScript or an "
            "ONNX file instead: pointrend.export.export_torchscript / export_onnx, or "
            "`pointrend export --format torchscript|onnx` (docs/export.md)"
        )
