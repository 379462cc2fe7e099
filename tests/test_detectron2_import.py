"""Importing detectron2 PointRend instance checkpoints: outputs equal to detectron2's own.

The reference is detectron2 itself: ``tests/fixtures/detectron2/instance`` holds its outputs on 3
images for a PointRend R50-FPN (3 classes, no test-time resize, 10 detections per image) whose
weights follow a deterministic rule (:mod:`detectron2_fixture` regenerates them and checks the
stored sha256). The weights are written as detectron2 writes them (zoo ``.pkl`` from numpy 1.x
and 2.x, in the current and both older PointRend key layouts; trainer ``.pth``), imported through
the CLI and rebuilt from the written checkpoint as ``pointrend predict`` does.

Targets: every detectron2 detection matched one-to-one by class and box IoU >= 0.999 (matched by
overlap: the scores are nearly tied), scores within 1e-4, no extra detection; 224x224 mask
probabilities within 2e-3 (the fixture stores float16); pasted masks IoU >= 0.99 each and
>= 0.995 on average.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
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
    instance_options,
    load_mapped,
    map_instance_weights,
)
from pointrend.interop.detectron2.zoo import NOT_SUPPORTED, dataset_classes, zoo_config
from pointrend.interop.detectron2.zoo import ZOO as PUBLISHED
from pointrend.models import from_detectron2, pointrend_maskrcnn

D2 = np.load(INSTANCE / "d2_outputs.npz")
NUM_IMAGES = len(instance_spec()["inference"]["images"])


@pytest.fixture(scope="module")
def d2_config(tmp_path_factory):
    return d2_config_yaml(tmp_path_factory.mktemp("d2") / "config.yaml")


@pytest.fixture(scope="module")
def imported(tmp_path_factory, d2_config):
    """The fixture imported through the CLI from a numpy 1.x zoo .pkl (current key layout),
    rebuilt from the written checkpoint."""
    folder = tmp_path_factory.mktemp("import")
    pkl = write_zoo_pkl(instance_weights(), folder / "model_final.pkl", "numpy.core")
    out = folder / "imported.pt"
    assert (
        main(["import-detectron2", str(pkl), "--d2-config", str(d2_config), "--out", str(out)]) == 0
    )
    return load_trained_model(out)


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
    assert (probs224[index] - d2_probs).abs().max() <= 2e-3
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


def _meta_mapping(name):
    """(mapped state, model state) of the zoo config ``name``, on the meta device."""
    keys = json.loads((ZOO / f"{name}.json").read_text())["keys"]
    cfg = zoo_config(name)
    weights = {key: torch.empty(shape, device="meta") for key, shape in keys}
    backbone, num_classes, options = instance_options(cfg)
    with torch.device("meta"):
        model = pointrend_maskrcnn(backbone, num_classes, **options)
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
