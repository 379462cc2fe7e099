"""Export: ONNX (onnxruntime) and TorchScript give PyTorch's outputs, at sizes other than traced.

The models are tiny and untrained; their last layers are re-initialised with larger weights so
that the point head's predictions differ clearly from the interpolated coarse logits (the
subdivision matters) and masks are not all 0.5 (mask IoU means something).

Tolerances: semantic logits within 1e-4. Instances: labels equal, boxes within 1e-2 pixels,
scores within 1e-4, mask probabilities within 1e-3 and every detection's binarised mask
(>= 0.5) with IoU >= 0.99 between the two runtimes.
"""

from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

import pointrend
from pointrend.cli import main
from pointrend.engine.config import config_to_dict, load_config
from pointrend.export import (
    INSTANCE_OUTPUTS,
    OnnxPredictor,
    check_input,
    export_onnx,
    export_torchscript,
)
from pointrend.models import pointrend_deeplabv3, pointrend_maskrcnn, pointrend_semantic_fpn

SEMANTIC_SIZES = [(1, 64, 64), (2, 97, 131), (1, 160, 120), (3, 45, 70)]
INSTANCE_SIZES = [(120, 160), (97, 131), (160, 100), (200, 150)]
GREY = torch.full((3, 90, 110), 0.5)
CONFIGS = {
    "semantic": "configs/synthetic_semantic_pointrend_fpn_r18.yaml",
    "instance": "configs/synthetic_instance_pointrend_r18.yaml",
}


def images(shapes, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.rand(*shape, generator=generator) for shape in shapes]


ONNX_IMAGES = images([(3, h, w) for h, w in INSTANCE_SIZES])
TORCHSCRIPT_IMAGES = images([(3, h, w) for h, w in INSTANCE_SIZES[1:]] + [(3, 90, 110)], seed=2)


def sharpen_(*layers, std=0.01):
    """Larger last-layer weights: logits of order 1 instead of 0.001."""
    for layer in layers:
        nn.init.normal_(layer.weight, std=std)


@pytest.fixture(scope="module")
def semantic():
    torch.manual_seed(0)
    model = pointrend_semantic_fpn("resnet18", 5, subdivision_num_points=1024).eval()
    sharpen_(model.coarse_head.predictor, model.point_head.predictor)
    return model


@pytest.fixture(scope="module")
def instance():
    torch.manual_seed(0)
    model = pointrend_maskrcnn(
        "resnet18",
        4,
        box_head_dim=32,
        min_size=160,
        max_size=160,
        rpn_pre_nms_top_n_test=200,
        rpn_post_nms_top_n_test=100,
        box_detections_per_img=30,
    ).eval()
    branch = model.roi_heads.mask_branch
    sharpen_(branch.coarse_head.predictor, branch.point_head.predictor, std=0.02)
    # A score threshold that keeps at least 5 detections of every test image (the images then
    # give different numbers of detections) and none of the flat grey image.
    model.roi_heads.score_thresh = 0.0
    with torch.no_grad():
        scores = [model([image])[0]["scores"] for image in ONNX_IMAGES + TORCHSCRIPT_IMAGES]
        grey = model([GREY])[0]["scores"]
    model.roi_heads.score_thresh = min(float(s[4] + s[5]) / 2 for s in scores)
    assert grey.max() < model.roi_heads.score_thresh
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, semantic, instance):
    folder = tmp_path_factory.mktemp("export")
    return {
        "semantic.onnx": export_onnx(semantic, folder / "semantic.onnx"),
        "semantic.pt": export_torchscript(semantic, folder / "semantic.pt"),
        "instance.onnx": export_onnx(instance, folder / "instance.onnx"),
        "instance.pt": export_torchscript(instance, folder / "instance.pt"),
    }


def eager_semantic(model, x):
    with torch.no_grad():
        return model(x)["out"]


def eager_instance(model, image):
    with torch.no_grad():
        out = model([image])[0]
    return [out[k].numpy() for k in INSTANCE_OUTPUTS]


def mask_iou(a, b):
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else np.logical_and(a, b).sum() / union


def assert_instances_match(reference, got):
    boxes, labels, scores, masks = reference
    assert [g.shape for g in got] == [r.shape for r in reference]
    np.testing.assert_array_equal(got[1], labels)
    np.testing.assert_allclose(got[0], boxes, atol=1e-2, rtol=0)
    np.testing.assert_allclose(got[2], scores, atol=1e-4, rtol=0)
    np.testing.assert_allclose(got[3], masks, atol=1e-3, rtol=0)
    for ours, theirs in zip(got[3][:, 0] >= 0.5, masks[:, 0] >= 0.5):
        assert mask_iou(ours, theirs) >= 0.99


def test_semantic_onnx_matches_pytorch_at_other_sizes(semantic, exported):
    predictor = OnnxPredictor(exported["semantic.onnx"])
    assert predictor.task == "semantic"
    for (n, h, w), x in zip(SEMANTIC_SIZES, images([(n, 3, h, w) for n, h, w in SEMANTIC_SIZES])):
        reference = eager_semantic(semantic, x)
        got = predictor(x)
        assert got.shape == (n, 5, h, w)
        np.testing.assert_allclose(got, reference.numpy(), atol=1e-4, rtol=0)
        # The subdivision changed the upsampled coarse logits (the points matter).
        with torch.no_grad():
            _, coarse = semantic._features(x)
        upsampled = nn.functional.interpolate(coarse, scale_factor=4, mode="bilinear")
        assert (reference - upsampled[..., :h, :w]).abs().max() > 0.1


def test_semantic_picks_the_same_number_of_points_as_pytorch(semantic, exported):
    """At 97 x 131 the last step has 100 x 132 cells and refines 1024 of them, as in PyTorch:
    pixels the points did not reach keep the bilinear value, in both runtimes."""
    (x,) = images([(1, 3, 97, 131)], seed=3)
    with torch.no_grad():
        features, coarse = semantic._features(x)
        _, steps = semantic.render(features[0], coarse, return_steps=True)
    assert [s.point_indices.shape[1] for s in steps] == [1024, 1024]
    got = torch.from_numpy(OnnxPredictor(exported["semantic.onnx"])(x))
    prev = nn.functional.interpolate(steps[0].logits, size=(100, 132), mode="bilinear")
    changed = (got - prev[..., :97, :131]).abs().amax(1).flatten() > 1e-3
    picked = torch.zeros(100, 132, dtype=torch.bool)
    picked.view(-1)[steps[1].point_indices[0]] = True
    assert torch.equal(changed, picked[:97, :131].flatten())


def test_deeplab_onnx_matches_pytorch(tmp_path):
    """DeepLabV3 (stride 16 coarse, stride 4 fine): the map-size ratio depends on the size."""
    torch.manual_seed(0)
    model = pointrend_deeplabv3("resnet18", 3, subdivision_num_points=512).eval()
    sharpen_(model.coarse_head[4], model.point_head.predictor)
    predictor = OnnxPredictor(export_onnx(model, tmp_path / "deeplab.onnx"))
    for x in images([(1, 3, 97, 131), (2, 3, 70, 50)]):
        np.testing.assert_allclose(predictor(x), eager_semantic(model, x).numpy(), atol=1e-4)


def test_semantic_torchscript_matches_eager(semantic, exported):
    traced = torch.jit.load(str(exported["semantic.pt"]))
    for x in images([(n, 3, h, w) for n, h, w in SEMANTIC_SIZES[1:]]):
        with torch.no_grad():
            torch.testing.assert_close(traced(x), eager_semantic(semantic, x), atol=1e-5, rtol=0)


def test_instance_onnx_matches_pytorch(instance, exported):
    predictor = OnnxPredictor(exported["instance.onnx"])
    counts = []
    for image in ONNX_IMAGES:
        reference = eager_instance(instance, image)
        got = predictor(image)
        assert list(got) == list(INSTANCE_OUTPUTS)
        assert_instances_match(reference, list(got.values()))
        assert got["masks"].shape[-2:] == image.shape[-2:]
        counts.append(len(reference[0]))
    assert min(counts) > 0 and len(set(counts)) > 1, counts  # detections, in varying numbers
    got = predictor(GREY)
    assert got["boxes"].shape == (0, 4) and got["masks"].shape == (0, 1, 90, 110)


def test_instance_torchscript_matches_eager(instance, exported):
    traced = torch.jit.load(str(exported["instance.pt"]))
    for image in TORCHSCRIPT_IMAGES:
        with torch.no_grad():
            got = [t.numpy() for t in traced(image)]
        reference = eager_instance(instance, image)
        assert len(reference[0]) > 0
        assert_instances_match(reference, got)


def test_bad_input_is_an_error_not_a_wrong_answer(exported):
    # onnxruntime itself refuses a wrong channel count or rank (static input dims) ...
    session = onnxruntime.InferenceSession(str(exported["semantic.onnx"]))
    for shape in [(1, 4, 64, 64), (1, 1, 64, 64), (3, 64, 64)]:
        with pytest.raises(Exception, match="images"):
            session.run(None, {"images": np.random.rand(*shape).astype(np.float32)})
    # ... the predictor names the problem, dtype and range included ...
    predictor = OnnxPredictor(exported["instance.onnx"])
    for bad, message in [
        (torch.rand(4, 64, 64), "3 x H x W"),
        (torch.rand(1, 3, 64, 64), "3 x H x W"),
        ((torch.rand(3, 64, 64) * 255).to(torch.uint8), "divide uint8 images by 255"),
        (torch.rand(3, 64, 64) * 255, r"in \[0, 1\]"),
        (torch.rand(3, 64, 64).double(), "float32"),
    ]:
        with pytest.raises(ValueError, match=message):
            predictor(bad)
    with pytest.raises(ValueError, match="N x 3 x H x W"):
        check_input(np.zeros((2, 1, 8, 8), np.float32), "semantic")
    # ... and the traced modules fail on a wrong channel count (a 1-channel image would
    # otherwise broadcast against the 3-channel mean and give detections).
    with pytest.raises(RuntimeError):
        torch.jit.load(str(exported["instance.pt"]))(torch.rand(1, 64, 64))
    with pytest.raises(RuntimeError):
        torch.jit.load(str(exported["semantic.pt"]))(torch.rand(1, 4, 64, 64))


def checkpoint_for(task, tmp_path, **options):
    """A training-style checkpoint of the config's model with random weights."""
    from pointrend.engine.build import build_model

    cfg = load_config(CONFIGS[task])
    cfg.model.options.update(options)
    torch.manual_seed(0)
    model = build_model(cfg.model, 5 if task == "semantic" else 4).eval()
    if task == "semantic":
        sharpen_(model.coarse_head.predictor, model.point_head.predictor)
    else:
        branch = model.roi_heads.mask_branch
        sharpen_(branch.coarse_head.predictor, branch.point_head.predictor, std=0.02)
    path = tmp_path / f"{task}.pt"
    torch.save({"model": model.state_dict(), "config": config_to_dict(cfg), "iteration": 0}, path)
    return model, path


def test_cli_export_round_trip(tmp_path, capsys):
    model, weights = checkpoint_for("semantic", tmp_path)
    out = tmp_path / "semantic.onnx"
    argv = ["export", CONFIGS["semantic"], "--weights", str(weights), "--out", str(out)]
    assert main(argv + ["--format", "onnx", "--size", "64", "96"]) == 0
    assert "semantic model (5 classes)" in capsys.readouterr().out
    predictor = OnnxPredictor(out)
    assert predictor.metadata["num_classes"] == "5"
    (x,) = images([(1, 3, 81, 113)])
    np.testing.assert_allclose(predictor(x), eager_semantic(model, x).numpy(), atol=1e-4)

    model, weights = checkpoint_for("instance", tmp_path, box_score_thresh=0.0)
    out = tmp_path / "instance_traced.pt"  # not over the weights: an input is never an output
    argv = ["export", CONFIGS["instance"], "--weights", str(weights), "--out", str(out)]
    overrides = ["--set", "model.options.box_score_thresh=0.0"]
    assert main(argv + ["--format", "torchscript"] + overrides) == 0
    (image,) = images([(3, 100, 140)])
    with torch.no_grad():
        got = [t.numpy() for t in torch.jit.load(str(out))(image)]
    reference = eager_instance(model, image)
    assert len(reference[0]) > 0
    assert_instances_match(reference, got)


def test_cli_export_errors_name_the_problem(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    argv = ["export", CONFIGS["semantic"], "--weights", str(missing), "--out", str(tmp_path / "m")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "weights file not found" in err and str(missing) in err
    assert not (tmp_path / "m").exists()
    _, weights = checkpoint_for("semantic", tmp_path)
    argv = ["export", CONFIGS["semantic"], "--weights", str(weights), "--out", str(tmp_path / "m")]
    assert main(argv + ["--opset", "11"]) == 1
    assert "opset must be >= 16" in capsys.readouterr().err


def test_only_the_tracing_module_asks_whether_it_is_traced():
    """Trace-only code stays behind ``pointrend._tracing``: the core modules never test for
    tracing themselves, and nothing else calls ``torch.jit.is_tracing`` directly."""
    src = Path(pointrend.__file__).parent
    for name in ("points.py", "render.py", "head.py", "_fused_head.py"):
        assert "is_tracing" not in (src / name).read_text(), name
    direct = [
        str(p.relative_to(src))
        for p in src.rglob("*.py")
        if "jit.is_tracing" in p.read_text() and p.name != "_tracing.py"
    ]
    assert direct == []
