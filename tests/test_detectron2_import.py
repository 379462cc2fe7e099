"""Importing detectron2 PointRend instance checkpoints: outputs equal to detectron2's own.

The reference is detectron2 itself: ``tests/fixtures/detectron2/instance`` holds its outputs on 3
images for a PointRend R50-FPN (3 classes, no test-time resize, 10 detections per image) whose
weights follow a deterministic rule (:mod:`detectron2_fixture` regenerates them and checks the
stored sha256). The weights are written as detectron2 writes them (zoo ``.pkl`` from numpy 1.x
and 2.x, in the current and both older PointRend key layouts; trainer ``.pth``), imported through
the CLI and rebuilt from the written checkpoint as ``pointrend predict`` does.

Targets: every detectron2 detection matched one-to-one by class and box IoU >= 0.999 (matched by
overlap: the scores are nearly tied), scores within 1e-4, no extra detection; 224x224 mask
probabilities within 2e-3 (the fixture stores float16; a few values within 2e-2, where a
subdivision step's near-tie is broken the other way); pasted masks IoU >= 0.99 each and
>= 0.995 on average.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
import yaml
from detectron2_fixture import (
    INSTANCE,
    ZOO,
    box_iou,
    d2_config_yaml,
    fixture_image,
    instance_spec,
    instance_weights,
    old_layout,
    weights_sha256,
    write_trainer_pth,
    write_zoo_pkl,
)

from pointrend.cli import main
from pointrend.engine.inference import load_trained_model
from pointrend.interop.detectron2 import D2Config, D2ImportError, read_detectron2_weights
from pointrend.interop.detectron2.instance import (
    instance_model_from_detectron2 as from_detectron2_weights,
)
from pointrend.interop.detectron2.instance import (
    instance_options,
    load_mapped,
    map_instance_weights,
    mask_head_kind,
)
from pointrend.interop.detectron2.zoo import NOT_SUPPORTED, dataset_classes, zoo_config
from pointrend.interop.detectron2.zoo import ZOO as PUBLISHED
from pointrend.models import from_detectron2, maskrcnn, pointrend_maskrcnn

D2 = np.load(INSTANCE / "d2_outputs.npz")
NUM_IMAGES = len(instance_spec()["inference"]["images"])


@pytest.fixture(scope="module")
def d2_config(tmp_path_factory):
    return d2_config_yaml(tmp_path_factory.mktemp("d2") / "config.yaml")


@pytest.fixture(scope="module")
def imported_file(tmp_path_factory, d2_config):
    """The fixture imported through the CLI from a numpy 1.x zoo .pkl (current key layout)."""
    folder = tmp_path_factory.mktemp("import")
    pkl = write_zoo_pkl(instance_weights(), folder / "model_final.pkl", "numpy.core")
    out = folder / "imported.pt"
    argv = ["import-detectron2", str(pkl), "--d2-config", str(d2_config), "--out", str(out)]
    assert main(argv) == 0
    return out


@pytest.fixture(scope="module")
def imported(imported_file):
    """The imported checkpoint rebuilt from its own config, as ``pointrend predict`` does."""
    return load_trained_model(imported_file)


def run_stages(model, image):
    """Detections of one image with the 224x224 probabilities before pasting."""
    with torch.no_grad():
        images, _ = model.transform([image])
        features = model.backbone(images.tensors)
        proposals, _ = model.rpn(images, features)
        detections, _ = model.roi_heads(features, proposals, images.image_sizes)
        probs224 = detections[0]["masks"][:, 0].clone()
        result = model.transform.postprocess(detections, images.image_sizes, [image.shape[-2:]])
    return result[0], probs224


def match_detections(boxes, labels, d2_boxes, d2_classes):
    """Index of our detection matching each detectron2 one: same class, highest box IoU."""
    iou = box_iou(boxes, d2_boxes)
    iou[labels[:, None] != d2_classes[None, :] + 1] = -1
    best, index = iou.max(0)
    return best, index


def mask_iou(a, b):
    return (a & b).sum((1, 2)).double() / (a | b).sum((1, 2)).clamp(min=1).double()


def test_regenerated_weights_are_the_fixtures():
    weights = instance_weights()
    spec = instance_spec()["weights"]
    assert len(weights) == spec["num_tensors"]
    assert sum(w.numel() for w in weights.values()) == spec["num_elements"]
    assert weights_sha256(weights) == spec["sha256_of_concatenated_float32_bytes_in_key_order"]


@pytest.mark.parametrize("image", range(NUM_IMAGES))
def test_imported_model_gives_detectron2s_detections_and_masks(imported, image):
    result, probs224 = run_stages(imported.model, fixture_image(image))
    d2_boxes = torch.from_numpy(D2[f"img{image}_boxes"])
    d2_classes = torch.from_numpy(D2[f"img{image}_classes"]).long()
    assert len(result["boxes"]) == len(d2_boxes)  # no extra detection, none missing
    best, index = match_detections(result["boxes"], result["labels"], d2_boxes, d2_classes)
    assert best.min() >= 0.999, best
    assert sorted(index.tolist()) == list(range(len(d2_boxes)))  # one-to-one
    d2_scores = torch.from_numpy(D2[f"img{image}_scores"])
    assert (result["scores"][index] - d2_scores).abs().max() <= 1e-4
    d2_probs = torch.from_numpy(D2[f"img{image}_mask_probs224"].astype(np.float32))
    # float16 storage: 2e-3. A subdivision step refines the most uncertain cells; where two are
    # tied to float32 rounding, a last-bit difference upstream (thread count, a fused batch norm)
    # refines the other one: a few values then differ by up to about 1e-2.
    difference = (probs224[index] - d2_probs).abs()
    assert (difference > 2e-3).float().mean() <= 1e-4 and difference.max() <= 2e-2
    ious = mask_iou(result["masks"][index, 0] > 0.5, torch.from_numpy(D2[f"img{image}_masks"]))
    assert ious.min() >= 0.99 and ious.mean() >= 0.995, ious


def test_imported_checkpoint_records_classes_and_options(imported):
    assert imported.num_classes == 4  # detectron2's 3 classes and the background
    assert imported.class_names == ["background", "class_0", "class_1", "class_2"]
    options = imported.config.model.options
    assert options["stride_in_1x1"] is True and options["mask_paste"] == "detectron2"
    assert options["image_std"] == pytest.approx([1 / 255] * 3)
    assert options["min_size"] == 0 and options["box_detections_per_img"] == 10


@pytest.mark.parametrize(
    "write",
    [
        pytest.param(lambda w, p: write_zoo_pkl(w, p / "m.pkl", "numpy._core"), id="pkl-numpy2"),
        pytest.param(
            lambda w, p: write_zoo_pkl(old_layout(w, "F1_nov2020"), p / "m.pkl", "numpy.core"),
            id="pkl-F1",
        ),
        pytest.param(
            lambda w, p: write_zoo_pkl(old_layout(w, "F0_original"), p / "m.pkl", "numpy.core"),
            id="pkl-F0",
        ),
        pytest.param(lambda w, p: write_trainer_pth(w, p / "m.pth"), id="trainer-pth"),
    ],
)
def test_every_checkpoint_format_reads_as_the_current_keys(tmp_path, write):
    weights = instance_weights()
    read = read_detectron2_weights(write(weights, tmp_path))
    assert sorted(read) == sorted(weights)
    assert all(torch.equal(read[k], weights[k]) for k in weights)


def test_from_detectron2_loads_a_trainer_pth(tmp_path, d2_config, imported):
    pth = write_trainer_pth(instance_weights(), tmp_path / "model_final.pth")
    model = from_detectron2(pth, d2_config=d2_config)
    ours = model.state_dict()
    assert all(torch.equal(v, ours[k]) for k, v in imported.model.state_dict().items())


class WritesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_crafted_pickle_is_refused_and_runs_nothing(tmp_path):
    target = tmp_path / "written_by_the_pickle.txt"
    pkl = tmp_path / "evil.pkl"
    pkl.write_bytes(pickle.dumps({"model": {"x": WritesAFile(target)}}, protocol=2))
    with pytest.raises(D2ImportError, match="refused to unpickle io.open"):
        read_detectron2_weights(pkl)
    assert not target.exists()


def test_weights_that_do_not_fit_are_named(d2_config):
    cfg = D2Config.from_yaml(d2_config)
    weights = instance_weights()
    weights["roi_heads.mask_head.extra_layer.weight"] = torch.zeros(2)
    with pytest.raises(D2ImportError, match="extra_layer"):
        map_instance_weights(weights, cfg)
    del weights["roi_heads.mask_head.extra_layer.weight"]
    del weights["proposal_generator.rpn_head.conv.bias"]
    name, num_classes, options = instance_options(cfg)
    model = pointrend_maskrcnn(name, num_classes, **options)
    with pytest.raises(D2ImportError, match=r"missing \['rpn.head.conv.0.0.bias'\]"):
        load_mapped(model, map_instance_weights(weights, cfg), "fixture")


def _narrower_heads(weights):
    """The fixture's weights cut to a 1-layer coarse head and a 2 x 128 point head (K = 3)."""
    out = {k: v for k, v in weights.items() if ".coarse_head.fc2." not in k and ".fc3." not in k}
    head = "roi_heads.mask_head.point_head."
    w1, w2, wp = (weights[head + f"{n}.weight"] for n in ("fc1", "fc2", "predictor"))
    out[head + "fc1.weight"] = w1[:128]
    out[head + "fc2.weight"] = torch.cat([w2[:128, :128], w2[:128, 256:]], dim=1)
    out[head + "predictor.weight"] = torch.cat([wp[:, :128], wp[:, 256:]], dim=1)
    for n in ("fc1", "fc2"):
        out[head + f"{n}.bias"] = weights[head + f"{n}.bias"][:128]
    return out


def test_head_widths_and_depths_of_the_config_are_imported(d2_config):
    values = yaml.safe_load(d2_config.read_text())
    values["MODEL"]["POINT_HEAD"].update(FC_DIM=128, NUM_FC=2)
    values["MODEL"]["ROI_MASK_HEAD"]["NUM_FC"] = 1
    model = from_detectron2_weights(_narrower_heads(instance_weights()), D2Config(values))
    branch = model.roi_heads.mask_branch
    assert [layer.out_channels for layer in branch.point_head.fc_layers] == [128, 128]
    assert len(branch.coarse_head.fcs) == 1
    with torch.no_grad():
        result = model([fixture_image(0)])[0]
    assert len(result["scores"]) and torch.isfinite(result["masks"]).all()
    values["MODEL"]["POINT_HEAD"]["COARSE_PRED_EACH_LAYER"] = False
    with pytest.raises(D2ImportError, match="COARSE_PRED_EACH_LAYER = False is not supported"):
        instance_options(D2Config(values))


def _meta_mapping(name):
    """(mapped state, model state) of the zoo config ``name``, on the meta device."""
    keys = json.loads((ZOO / f"{name}.json").read_text())["keys"]
    cfg = zoo_config(name)
    weights = {key: torch.empty(shape, device="meta") for key, shape in keys}
    backbone, num_classes, options = instance_options(cfg)
    build = pointrend_maskrcnn if mask_head_kind(cfg) == "pointrend" else maskrcnn
    with torch.device("meta"):
        model = build(backbone, num_classes, **options)
    return map_instance_weights(weights, cfg), model.state_dict()


@pytest.mark.parametrize("name", sorted(n for n, m in PUBLISHED.items() if m.task == "instance"))
def test_every_key_of_every_published_instance_model_maps(name):
    mapped, expected = _meta_mapping(name)
    expected = {k: v for k, v in expected.items() if not k.endswith("num_batches_tracked")}
    assert sorted(mapped) == sorted(expected)
    assert all(mapped[k].shape == expected[k].shape for k in expected)


@pytest.mark.parametrize("name", sorted(NOT_SUPPORTED))
def test_unsupported_zoo_configs_say_why(name):
    with pytest.raises(D2ImportError, match="not supported"):
        zoo_config(name)
    effective = json.loads((ZOO / f"{name}.json").read_text())["effective"]
    with pytest.raises(D2ImportError, match="Implicit PointRend .* is not supported"):
        instance_options(D2Config(effective))  # its config.yaml is refused too


def test_zoo_table_has_the_published_urls_and_metrics():
    published = json.loads((ZOO / "MODEL_ZOO.json").read_text())["checkpoints"]
    assert len(published) == len(PUBLISHED)
    for entry in published:
        name = entry["config"].rsplit("/", 1)[1].removesuffix(".yaml")
        assert PUBLISHED[name].url == entry["url"]
        figures = {"mask AP": "mask_AP", "mask AP*": "mask_AP_star", "box AP": "box_AP"}
        figures["mIoU"] = "mIoU"
        assert PUBLISHED[name].metrics == {k: entry[figures[k]] for k in PUBLISHED[name].metrics}
        assert len(PUBLISHED[name].metrics) == sum(v in entry for v in figures.values())


def test_zoo_models_know_their_datasets_classes():
    names, to_category = dataset_classes(PUBLISHED["pointrend_rcnn_R_50_FPN_3x_coco"].dataset, 81)
    assert names[:3] == ["background", "person", "bicycle"] and len(names) == 81
    assert to_category[1] == 1 and to_category[80] == 90  # COCO ids skip unused numbers
    names, to_category = dataset_classes("cityscapes", 9)
    assert names[1] == "person" and to_category[8] == 33
    assert dataset_classes("coco", 4)[0] == ["background", "class_0", "class_1", "class_2"]


def test_an_offline_zoo_download_names_url_and_destination(monkeypatch, tmp_path):
    import torch.hub

    def offline(url, dst, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    name = "pointrend_rcnn_R_50_FPN_1x_coco"
    with pytest.raises(D2ImportError) as error:
        from_detectron2(None, zoo=name)
    message = str(error.value)
    assert PUBLISHED[name].url in message
    assert str(tmp_path / "checkpoints" / "detectron2" / "164254221") in message


# --- the builder options the importer sets, on small models ---------------------------------


def test_detectron2_anchors_are_unrounded_at_nominal_strides():
    from torchvision.models.detection.image_list import ImageList

    from pointrend.instance.detectron2_ops import NominalStrideAnchorGenerator

    generator = NominalStrideAnchorGenerator(((32,), (64,)), ((0.5, 1.0, 2.0),) * 2, [4, 60])
    features = [torch.zeros(1, 1, 2, 3), torch.zeros(1, 1, 1, 2)]
    anchors = generator(ImageList(torch.zeros(1, 3, 8, 12), [(8, 12)]), features)[0]
    assert anchors.shape == (3 * 2 * 3 + 3 * 1 * 2, 4)
    half_w, half_h = 32 / 0.5**0.5 / 2, 32 * 0.5**0.5 / 2  # ratio h / w = 0.5
    first = torch.tensor([-half_w, -half_h, half_w, half_h])
    np.testing.assert_allclose(anchors[0], first, rtol=1e-6)  # not rounded to +-23 x +-11
    # the second level's second cell is one nominal stride (60) to the right
    np.testing.assert_allclose(anchors[-3:, 0] - anchors[-6:-3, 0], [60.0] * 3)


def test_aligned_pooler_is_roi_align_with_half_pixel_centres():
    from torchvision.ops import MultiScaleRoIAlign, roi_align

    from pointrend.instance.detectron2_ops import AlignedMultiScaleRoIAlign

    g = torch.Generator().manual_seed(0)
    features = {
        "0": torch.randn(1, 4, 16, 16, generator=g),
        "1": torch.randn(1, 4, 8, 8, generator=g),
    }
    boxes = [torch.tensor([[3.3, 4.1, 20.7, 30.2], [1.0, 2.0, 60.0, 50.0]])]
    pooler = AlignedMultiScaleRoIAlign(["0", "1"], 7, 0)
    pooled = pooler(features, boxes, [(64, 64)])
    levels = pooler.map_levels(boxes)
    for i in range(2):
        level = str(int(levels[i]))
        scale = features[level].shape[-1] / 64
        rois = torch.cat([torch.zeros(1, 1), boxes[0][i : i + 1]], dim=1)
        expected = roi_align(features[level], rois, 7, scale, sampling_ratio=0, aligned=True)
        torch.testing.assert_close(pooled[i : i + 1], expected)
    unaligned = MultiScaleRoIAlign(["0", "1"], 7, 0)(features, boxes, [(64, 64)])
    assert (pooled - unaligned).abs().max() > 1e-3


def test_detectron2_resize_rounds_sides_and_min_size_0_keeps_the_image():
    model = pointrend_maskrcnn(
        "resnet18", 3, min_size=320, max_size=1333, resize_rule="detectron2"
    ).eval()
    image = torch.rand(3, 301, 452)
    resized, _ = model.transform.resize(image)
    scale = 320 / 301
    assert resized.shape[-2:] == (int(301 * scale + 0.5), int(452 * scale + 0.5))  # 320 x 481
    assert resized.shape[-1] == 481 != int(452 * scale)  # torchvision's floor gives 480
    keep = pointrend_maskrcnn("resnet18", 3, min_size=0).eval()
    images, _ = keep.transform([image])
    assert images.image_sizes == [(301, 452)]


def detectron2_paste(masks, boxes, height, width):
    """detectron2's rule written out: every pixel centre of the image mapped into each box and
    read from the mask with zero padding, then thresholded at 0.5."""
    ys = (torch.arange(height) + 0.5)[None, :]
    xs = (torch.arange(width) + 0.5)[None, :]
    gy = (ys - boxes[:, 1:2]) / (boxes[:, 3:4] - boxes[:, 1:2]) * 2 - 1
    gx = (xs - boxes[:, 0:1]) / (boxes[:, 2:3] - boxes[:, 0:1]) * 2 - 1
    grid = torch.stack(
        [gx[:, None, :].expand(-1, height, -1), gy[:, :, None].expand(-1, -1, width)], dim=-1
    )
    values = torch.nn.functional.grid_sample(masks, grid, align_corners=False)
    return values[:, 0] > 0.5


def test_detectron2_paste_fades_at_the_box_border_as_detectron2():
    from pointrend.instance.paste import paste_masks

    g = torch.Generator().manual_seed(0)
    masks = torch.rand(20, 1, 28, 28, generator=g) ** 0.5
    origin = torch.rand(20, 2, generator=g) * 50 - 5
    boxes = torch.cat([origin, origin + 3 + torch.rand(20, 2, generator=g) * 40], dim=1)
    faded = paste_masks(masks, boxes, (60, 70), fade_border=True)[:, 0]
    assert torch.equal(faded > 0.5, detectron2_paste(masks, boxes, 60, 70))
    clamped = paste_masks(masks, boxes, (60, 70))[:, 0]
    assert not torch.equal(clamped > 0.5, faded > 0.5)  # the two rules differ at box borders
    ones = paste_masks(
        torch.ones(1, 1, 2, 2), torch.tensor([[10.0, 10.0, 20.0, 20.0]]), (30, 30), fade_border=True
    )
    # pixel 10 (centre 10.5) is 0.05 of the box: between the padding and the first cell centre
    assert ones[0, 0, 15, 10].item() == pytest.approx(0.6) and ones[0, 0, 15, 15] == 1


def test_stride_in_1x1_and_the_common_options_of_both_builders():
    from torchvision.models.detection import MaskRCNN

    from pointrend.instance.detectron2_ops import AlignedMultiScaleRoIAlign
    from pointrend.models import maskrcnn

    options = dict(stride_in_1x1=True, roi_align_aligned=True, rpn_anchor_rule="detectron2")
    for build in (maskrcnn, pointrend_maskrcnn):
        model = build("resnet50", 3, box_head_dim=32, **options)
        assert isinstance(model, MaskRCNN)
        block = model.backbone.body.layer2[0]
        assert block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
        assert isinstance(model.roi_heads.box_roi_pool, AlignedMultiScaleRoIAlign)
    with pytest.raises(ValueError, match="rpn_anchor_rule"):
        pointrend_maskrcnn("resnet18", 3, rpn_anchor_rule="caffe2")


def test_imported_model_exports_to_onnx(imported, tmp_path):
    from test_export import assert_instances_match

    from pointrend.export import INSTANCE_OUTPUTS, OnnxPredictor, export_onnx

    predictor = OnnxPredictor(export_onnx(imported.model, tmp_path / "imported.onnx"))
    image = fixture_image(NUM_IMAGES - 1)  # 300 x 452: padded to 320 x 480 inside the graph
    with torch.no_grad():
        eager = imported.model([image])[0]
    got = predictor(image)
    assert len(got["boxes"]) == 10
    assert_instances_match([eager[k].numpy() for k in INSTANCE_OUTPUTS], list(got.values()))


def test_predict_and_export_take_the_imported_checkpoint(imported_file, tmp_path, capsys):
    image = INSTANCE / f"image_{NUM_IMAGES - 1}.png"
    argv = ["predict", "--weights", str(imported_file), str(image), "--out", str(tmp_path / "p")]
    assert main([*argv, "--no-progress"]) == 0
    predictions = json.loads((tmp_path / "p" / "predictions.json").read_text())
    (found,) = predictions["images"].values()
    d2_classes = sorted(int(c) + 1 for c in D2[f"img{NUM_IMAGES - 1}_classes"])
    assert sorted(d["category_id"] for d in found) == d2_classes
    config = imported_file.with_suffix(".yaml")
    argv = [
        "export",
        str(config),
        "--weights",
        str(imported_file),
        "--out",
        str(tmp_path / "m.onnx"),
    ]
    assert main([*argv, "--size", "96", "128"]) == 0
    assert "max |difference|" in capsys.readouterr().out


def test_fine_tuning_starts_from_the_imported_weights(imported_file, imported, tmp_path):
    import yaml

    config = yaml.safe_load(imported_file.with_suffix(".yaml").read_text())
    assert config["model"]["weights"] == str(imported_file)
    config["train_data"] = {"format": "synthetic", "num_images": 2, "image_size": 64, "seed": 0}
    config["solver"].update(lr=1e-9, max_iter=1, images_per_batch=1, warmup_iters=0)
    config["model"]["options"].update(rpn_batch_size_per_image=16, box_batch_size_per_image=16)
    path = tmp_path / "finetune.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    tuned = load_trained_model(tmp_path / "run" / "model_final.pt")
    assert tuned.num_classes == 8  # the synthetic data's 7 shapes and the background
    ours, theirs = tuned.model.state_dict(), imported.model.state_dict()
    for key in ("backbone.body.conv1.weight", "roi_heads.mask_branch.coarse_head.fcs.0.weight"):
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-6, rtol=0)  # lr 1e-9
    assert ours["roi_heads.box_predictor.cls_score.weight"].shape[0] == 8


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_zoo_table_config_values_are_detectron2s(name):
    effective = json.loads((ZOO / f"{name}.json").read_text())["effective"]
    ours = PUBLISHED[name].config
    differing = {k: v for k, v in ours.items() if k in effective and effective[k] != v}
    assert not differing
    if PUBLISHED[name].task == "instance":  # the same model as from all of detectron2's values
        assert instance_options(zoo_config(name)) == instance_options(D2Config(effective))
