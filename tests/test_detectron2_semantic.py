"""detectron2's PointRend Semantic FPN imported as a pointrend model: outputs against
detectron2's own on the fixture (weights regenerated from their rule), the zoo model's key list,
the options that make the difference, and the errors."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pointrend.backbones import move_stride_to_1x1_, resnet_backbone
from pointrend.engine.build import build_model
from pointrend.engine.config import ModelConfig
from pointrend.interop.detectron2 import D2Config, D2ImportError
from pointrend.interop.detectron2.semantic import (
    semantic_class_names,
    semantic_model_config_from_detectron2,
    semantic_model_from_detectron2,
)
from pointrend.models import pointrend_semantic_fpn, semantic_fpn
from pointrend.resize import shortest_edge_size
from tests.detectron2_semantic_weights import (
    FIXTURE,
    fixture_config,
    fixture_image,
    fixture_outputs,
    fixture_weights,
    generate_weights,
    spec,
)

ZOO_KEYS = (
    Path(__file__).parent
    / "fixtures/detectron2/zoo/pointrend_semantic_R_101_FPN_1x_cityscapes.json"
)


def d2_config(**changes) -> D2Config:
    return D2Config({**fixture_config(), **changes}, "fixture config")


@pytest.fixture(scope="module")
def imported():
    return semantic_model_from_detectron2(fixture_weights(), d2_config())


def run(model, index: int) -> torch.Tensor:
    with torch.no_grad():
        return model(fixture_image(index))["out"][0]


def test_regenerated_weights_have_the_stored_sums():
    # fixture_weights() checks the sha256 of all bytes; the sums locate a difference by key
    weights, sums = fixture_weights(), spec()["weights"]["per_key_float64_sum"]
    assert set(weights) == set(sums)
    worst = max(abs(weights[k].double().sum().item() - v) / (1 + abs(v)) for k, v in sums.items())
    assert worst < 1e-9


@pytest.mark.parametrize("index", [0, 1])  # 256 x 512 (a multiple of 32), 200 x 333 (padded)
def test_labels_and_logits_equal_detectron2s(imported, index):
    expected = fixture_outputs()
    logits = run(imported, index)
    labels = expected[f"img{index}_labels"]
    assert logits.shape == (5, *labels.shape)
    assert (logits.argmax(0).numpy() == labels).mean() >= 0.999
    y, x = expected[f"img{index}_logits_crop64_origin_yx"]
    crop = logits[:, y : y + 64, x : x + 64].numpy()
    assert np.abs(crop - expected[f"img{index}_logits_crop64"].astype(np.float32)).max() < 3e-3
    means = logits.mean((1, 2)).numpy()
    assert np.abs(means - expected[f"img{index}_logits_class_means"]).max() < 1e-4


def test_padding_to_32_is_what_makes_the_unaligned_image_match(imported):
    labels = fixture_outputs()["img1_labels"]
    imported.size_divisibility = 1
    try:
        unpadded = run(imported, 1).argmax(0).numpy()
    finally:
        imported.size_divisibility = 32
    assert (unpadded == labels).mean() < 0.95


def test_stored_builder_config_rebuilds_the_same_model(imported):
    fields = semantic_model_config_from_detectron2(d2_config())
    assert fields["options"]["size_divisibility"] == 32 and fields["options"]["stride_in_1x1"]
    rebuilt = build_model(ModelConfig(**fields), fields["num_classes"])
    rebuilt.load_state_dict(imported.state_dict())
    assert torch.equal(run(rebuilt.eval(), 1), run(imported, 1))


def test_every_key_of_the_zoo_model_maps():
    zoo = json.loads(ZOO_KEYS.read_text())
    weights = {key: torch.zeros(shape) for key, shape in zoo["keys"]}
    model = semantic_model_from_detectron2(weights, D2Config(zoo["effective"], ZOO_KEYS.name))
    params = sum(p.numel() for p in model.state_dict().values() if p.is_floating_point())
    assert params == zoo["num_elements"]
    assert model.num_classes == 19 and len(model.backbone.body.layer3) == 23
    assert (model.test_min_size, model.test_max_size) == (1024, 2048)


def test_coarse_prediction_at_every_point_head_layer_is_imported():
    # the zoo's earlier semantic file: COARSE_PRED_EACH_LAYER True (fc2, fc3, predictor take 256 + K)
    widened = ("point_head.fc2.weight", "point_head.fc3.weight", "point_head.predictor.weight")
    keys = [
        [key, [shape[0], shape[1] + 5, 1] if key.endswith(widened) else shape]
        for key, shape in spec()["weights"]["keys_and_shapes"]
    ]
    weights = generate_weights(keys, 0, [])
    cfg = d2_config(**{"MODEL.POINT_HEAD.COARSE_PRED_EACH_LAYER": True})
    model = semantic_model_from_detectron2(weights, cfg)
    assert model.point_head.predictor.weight.shape == (5, 261, 1)


def test_plain_semantic_fpn_head_imports_as_the_baseline():
    head_keys = ("sem_seg_head.point_head.",)
    weights = {k: v for k, v in fixture_weights().items() if not k.startswith(head_keys)}
    cfg = d2_config(**{"MODEL.SEM_SEG_HEAD.NAME": "SemSegFPNHead"})
    assert semantic_model_config_from_detectron2(cfg)["name"] == "coarse"
    model = semantic_model_from_detectron2(weights, cfg)
    assert model.point_head is None
    coarse = torch.from_numpy(fixture_outputs()["img0_coarse_logits"].astype(np.float32))
    with torch.no_grad():
        ours = model.coarse_head(model._features(fixture_image(0))[0])[0]
    assert (ours - coarse).abs().max() < 3e-3


def test_missing_and_unused_keys_are_named():
    weights = dict(fixture_weights())
    del weights["sem_seg_head.point_head.fc2.bias"]
    weights["sem_seg_head.point_head.fc9.weight"] = torch.zeros(1)
    with pytest.raises(D2ImportError, match=r"fc9\.weight.*point_head\.fc_layers\.1\.bias"):
        semantic_model_from_detectron2(weights, d2_config())


def test_wrong_shape_names_both_keys():
    weights = dict(fixture_weights())
    weights["sem_seg_head.coarse_sem_seg_head.predictor.bias"] = torch.zeros(7)
    with pytest.raises(D2ImportError, match=r"predictor\.bias has shape \(7,\).*\(5,\)"):
        semantic_model_from_detectron2(weights, d2_config())


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("MODEL.SEM_SEG_HEAD.NORM", "", "MODEL.SEM_SEG_HEAD.NORM = ''"),
        ("MODEL.POINT_HEAD.SUBDIVISION_STEPS", 3, "SUBDIVISION_STEPS = 3"),
        ("MODEL.POINT_HEAD.NUM_CLASSES", 6, "POINT_HEAD.NUM_CLASSES = 6"),
        ("MODEL.RESNETS.DEPTH", 200, r"\(200, 1, 64\)"),
        ("MODEL.SEM_SEG_HEAD.IN_FEATURES", ["p2", "p3"], r"IN_FEATURES \['p2', 'p3'\]"),
    ],
)
def test_unsupported_configs_name_the_key(key, value, message):
    with pytest.raises(D2ImportError, match=message):
        semantic_model_config_from_detectron2(d2_config(**{key: value}))


def test_missing_config_key_is_named():
    values = fixture_config()
    del values["MODEL.PIXEL_STD"]
    with pytest.raises(D2ImportError, match="MODEL.PIXEL_STD is not set"):
        semantic_model_config_from_detectron2(D2Config(values, "cfg.yaml"))


def test_input_convention_from_the_config():
    options = semantic_model_config_from_detectron2(d2_config())["options"]
    assert options["image_mean"] == pytest.approx([123.675 / 255, 116.28 / 255, 103.53 / 255])
    assert options["image_std"] == pytest.approx([1 / 255] * 3)
    rgb = semantic_model_config_from_detectron2(
        d2_config(**{"INPUT.FORMAT": "RGB", "MODEL.PIXEL_STD": [58.395, 57.12, 57.375]})
    )["options"]
    assert rgb["image_mean"] == pytest.approx([103.53 / 255, 116.28 / 255, 123.675 / 255])
    assert rgb["image_std"] == pytest.approx([58.395 / 255, 57.12 / 255, 57.375 / 255])


def test_class_names():
    assert semantic_class_names(d2_config()) == [f"class_{k}" for k in range(5)]
    zoo = json.loads(ZOO_KEYS.read_text())["effective"]
    cityscapes = D2Config({**zoo, "DATASETS.TEST": ["cityscapes_fine_sem_seg_val"]})
    names = semantic_class_names(cityscapes)
    assert len(names) == 19 and names[:3] == ["road", "sidewalk", "building"]
    assert names[-1] == "bicycle"


def test_stride_in_1x1_moves_the_stride_and_keeps_the_sizes():
    body = resnet_backbone("resnet50")
    images = torch.rand(1, 3, 64, 96)
    before = body(images)
    move_stride_to_1x1_(body)
    for layer in (body.layer2, body.layer3, body.layer4):
        assert layer[0].conv1.stride == (2, 2) and layer[0].conv2.stride == (1, 1)
    after = body(images)
    assert [v.shape for v in after.values()] == [v.shape for v in before.values()]
    assert not torch.allclose(after["3"], before["3"])
    basic = resnet_backbone("resnet18")
    move_stride_to_1x1_(basic)
    assert basic.layer2[0].conv1.stride == (2, 2) and basic.layer2[0].conv2.stride == (1, 1)


def test_size_divisibility_trains_and_is_an_identity_on_multiples():
    torch.manual_seed(0)
    small = {"backbone_returned_layers": [1, 2, 3], "subdivision_num_points": 256}
    plain = pointrend_semantic_fpn("resnet18", 3, **small).eval()
    padded = pointrend_semantic_fpn("resnet18", 3, size_divisibility=32, **small).eval()
    padded.load_state_dict(plain.state_dict())
    with torch.no_grad():
        aligned = torch.rand(1, 3, 64, 96)
        assert torch.equal(plain(aligned)["out"], padded(aligned)["out"])
        odd = padded(torch.rand(1, 3, 50, 70))["out"]
    assert odd.shape == (1, 3, 50, 70)
    losses = padded.train()(torch.rand(2, 3, 50, 70), torch.randint(0, 3, (2, 50, 70)))
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())


def test_normalisation_options_are_checked():
    with pytest.raises(ValueError, match="image_std must be positive"):
        semantic_fpn("resnet18", 3, image_std=[0.2, 0.0, 0.2])
    with pytest.raises(ValueError, match=r"image_mean needs 3 values"):
        semantic_fpn("resnet18", 3, image_mean=[0.5])
    with pytest.raises(ValueError, match="size_divisibility must be a positive integer"):
        semantic_fpn("resnet18", 3, size_divisibility=0)


def test_padded_model_exports_to_onnx_with_dynamic_sizes(tmp_path):
    from pointrend.export import OnnxPredictor, export_onnx

    torch.manual_seed(0)
    model = pointrend_semantic_fpn(
        "resnet18",
        3,
        backbone_returned_layers=[1, 2, 3],
        subdivision_num_points=512,
        size_divisibility=32,
        stride_in_1x1=True,
        norm="frozen",
    ).eval()
    torch.nn.init.normal_(model.point_head.predictor.weight, std=0.01)
    predictor = OnnxPredictor(export_onnx(model, tmp_path / "padded.onnx"))
    for shape in [(1, 3, 97, 131), (2, 3, 50, 70)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            reference = model(x)["out"].numpy()
        assert predictor(x).shape == reference.shape
        np.testing.assert_allclose(predictor(x), reference, atol=1e-4, rtol=0)


def test_coarse_head_on_p3_to_p5_maps_by_the_config():
    # COMMON_STRIDE 8: p3 one stage, p4 one stage + upsample, p5 two stages + upsamples
    kept = {"p3.0", "p4.0", "p5.0", "p5.2"}
    keys = []
    for key, shape in spec()["weights"]["keys_and_shapes"]:
        match = re.match(r"sem_seg_head\.coarse_sem_seg_head\.(p\d\.\d)\.", key)
        if match is None or match[1] in kept:
            keys.append([key, shape])
    cfg = d2_config(
        **{
            "MODEL.SEM_SEG_HEAD.IN_FEATURES": ["p3", "p4", "p5"],
            "MODEL.SEM_SEG_HEAD.COMMON_STRIDE": 8,
            "MODEL.POINT_HEAD.SUBDIVISION_STEPS": 3,
        }
    )
    model = semantic_model_from_detectron2(generate_weights(keys, 0, []), cfg)
    assert model.coarse_stride == 8 and len(model.coarse_head.towers) == 3
    with torch.no_grad():
        assert model(torch.rand(1, 3, 40, 60))["out"].shape == (1, 5, 40, 60)


def test_batch_norm_and_freeze_at_from_the_config():
    cfg = d2_config(**{"MODEL.RESNETS.NORM": "BN", "MODEL.BACKBONE.FREEZE_AT": 2})
    model = semantic_model_from_detectron2(fixture_weights(), cfg)
    body = model.backbone.body
    assert isinstance(body.bn1, torch.nn.BatchNorm2d)
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad
    frozen = semantic_model_from_detectron2(fixture_weights(), d2_config())
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():  # eval: batch norm with the checkpoint's statistics = FrozenBN
        torch.testing.assert_close(model(x)["out"], frozen(x)["out"], atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "size, min_size, max_size, expected",
    [
        ((200, 333), 1024, 2048, (1024, 1705)),  # 333 * 5.12 = 1704.96
        ((3000, 4000), 1024, 2048, (1024, 1365)),  # 1365.33
        ((1000, 5000), 1024, 2048, (410, 2048)),  # the long side caps: 1024 * 0.4 = 409.6
        ((5000, 1000), 800, 0, (4000, 800)),
        ((1024, 2048), 1024, 2048, (1024, 2048)),
    ],
)
def test_shortest_edge_size(size, min_size, max_size, expected):
    assert shortest_edge_size(*size, min_size, max_size) == expected


def test_test_time_resize_follows_detectrons_pipeline(imported):
    # detectron2: the uint8 image resized by PIL (bilinear), the logits resized back bilinearly
    height, width = 200, 333
    size = shortest_edge_size(height, width, 128, 2048)
    photo = Image.open(FIXTURE / "image_1.png").convert("RGB").resize(size[::-1], Image.BILINEAR)
    small = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        expected = F.interpolate(imported(small)["out"], size=(height, width), mode="bilinear")
    imported.test_min_size = 128
    try:
        logits = run(imported, 1)
    finally:
        imported.test_min_size = 0
    assert logits.shape == (5, height, width)
    assert (logits.argmax(0) == expected[0].argmax(0)).float().mean() >= 0.995
    assert not torch.equal(logits, run(imported, 1))


def test_test_time_resize_is_refused_by_export(tmp_path):
    from pointrend.export import export_torchscript

    model = pointrend_semantic_fpn(
        "resnet18", 3, backbone_returned_layers=[1, 2, 3], test_min_size=160
    ).eval()
    with pytest.raises(RuntimeError, match="test_min_size=0"):
        export_torchscript(model, tmp_path / "resized.pt")
