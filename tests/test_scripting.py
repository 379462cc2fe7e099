"""``torch.jit.script`` of a pointrend model stops with one line that names the alternative
(docs/export.md, "TorchScript: traced, not scripted"); the traced TorchScript export works."""

import warnings

import pytest
import torch

from pointrend.export import NotScriptableError, export_torchscript
from pointrend.models import (
    deeplabv3,
    maskrcnn,
    pointrend_deeplabv3,
    pointrend_maskrcnn,
    pointrend_semantic_fpn,
    semantic_fpn,
)

SMALL = {
    "pointrend_maskrcnn": lambda: pointrend_maskrcnn("resnet18", 3, box_head_dim=16),
    "maskrcnn": lambda: maskrcnn("resnet18", 3, box_head_dim=16),
    "pointrend_semantic_fpn": lambda: pointrend_semantic_fpn("resnet18", 3),
    "semantic_fpn": lambda: semantic_fpn("resnet18", 3),
    "pointrend_deeplabv3": lambda: pointrend_deeplabv3("resnet18", 3),
    "deeplabv3": lambda: deeplabv3("resnet18", 3),
}


def _script(module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated
        return torch.jit.script(module)


@pytest.mark.parametrize("builder", sorted(SMALL))
def test_scripting_a_model_names_the_traced_and_onnx_exports(builder):
    model = SMALL[builder]().eval()
    with pytest.raises(NotScriptableError) as err:
        _script(model)
    message = str(err.value)
    assert "cannot be compiled with torch.jit.script" in message
    assert "export_torchscript" in message and "export_onnx" in message
    assert "docs/export.md" in message and "\n" not in message


def test_the_traced_torchscript_export_is_the_way(tmp_path):
    torch.manual_seed(0)
    model = pointrend_semantic_fpn("resnet18", 3, subdivision_num_points=64).eval()
    path = export_torchscript(model, tmp_path / "semantic.pt", example=torch.rand(1, 3, 64, 64))
    loaded = torch.jit.load(str(path))
    image = torch.rand(1, 3, 48, 80)  # another size than the example's
    with torch.no_grad():
        torch.testing.assert_close(loaded(image), model(image)["out"])


def test_a_semantic_model_exports_with_torch_export():
    torch.manual_seed(0)
    model = pointrend_semantic_fpn("resnet18", 3, subdivision_num_points=64).eval()
    image = torch.rand(1, 3, 64, 64)
    program = torch.export.export(model, (image,), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(image)["out"], model(image)["out"])
