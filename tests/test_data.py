import hashlib
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from pointrend.cli import main
from pointrend.data.coco import CocoInstanceDataset, DataError, encode_masks
from pointrend.data.semantic import CityscapesSemanticDataset, SemanticFolderDataset
from pointrend.data.shapes import CATEGORIES, coverage, random_shape
from pointrend.data.synthetic import (
    SyntheticInstanceDataset,
    SyntheticSemanticDataset,
    render_sample,
)
from pointrend.data.transforms import build_transforms
from pointrend.data.write import write_synthetic_dataset
from pointrend.engine.config import DatasetConfig


def test_same_seed_same_pixels_and_different_seed_differs():
    a, b, c = (
        render_sample(3, 96, seed=7),
        render_sample(3, 96, seed=7),
        render_sample(3, 96, seed=8),
    )
    assert np.array_equal(a.image, b.image) and np.array_equal(a.masks, b.masks)
    assert not np.array_equal(a.image, c.image)


def test_visible_masks_are_disjoint_nonempty_and_boxes_tight():
    ds = SyntheticInstanceDataset(12, 128, seed=0)
    seen = set()
    for i in range(len(ds)):
        image, t = ds[i]
        assert image.shape == (3, 128, 128) and 0 <= image.min() and image.max() <= 1
        m = t["masks"].bool()
        assert (m.sum(0) <= 1).all()  # occlusion leaves each pixel to one instance
        assert (m.flatten(1).sum(1) > 0).all()
        for mask, box in zip(m, t["boxes"]):
            ys, xs = torch.where(mask)
            assert box.tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        seen.update(t["labels"].tolist())
    assert len(seen) >= 5 and seen <= set(range(1, len(CATEGORIES) + 1))


def test_ground_truth_is_exact_coverage_threshold():
    rng = np.random.default_rng(0)
    shape = random_shape(rng, 64, 64)
    fine = coverage(shape, 64, 64, ss=16)
    coarse = coverage(shape, 64, 64, ss=4)
    assert ((fine >= 0.5) != (coarse >= 0.5)).mean() < 0.02  # supersampling converges
    assert set(np.unique(coarse)) <= {k / 16 for k in range(17)}


def test_shapes_have_detail_beyond_28x28():
    # a gear's mask at 256 px differs from its 28x28 version resampled back up
    sample = render_sample(0, 256, seed=0)
    m = torch.from_numpy(sample.masks).float()[:, None]
    small = torch.nn.functional.interpolate(m, size=(28, 28), mode="bilinear", align_corners=False)
    back = torch.nn.functional.interpolate(
        small, size=(256, 256), mode="bilinear", align_corners=False
    )
    assert ((back > 0.5) != (m > 0.5)).float().sum() > 50


def test_semantic_dataset_labels():
    ds = SyntheticSemanticDataset(3, 64, seed=1)
    image, labels = ds[0]
    assert labels.dtype == torch.int64 and labels.shape == (64, 64)
    assert labels.min() >= 0 and labels.max() < ds.num_classes


def test_write_and_read_round_trip_instance(tmp_path):
    main(
        [
            "data",
            "synth",
            "--task",
            "instance",
            "--out",
            str(tmp_path),
            "--num-images",
            "4",
            "--size",
            "96",
            "--seed",
            "3",
        ]
    )
    coco = COCO(str(tmp_path / "annotations.json"))
    ds = CocoInstanceDataset(tmp_path / "images", tmp_path / "annotations.json")
    assert len(ds) == 4 and ds.num_classes == len(CATEGORIES) + 1
    for i in range(4):
        sample = render_sample(i, 96, seed=3)
        image, t = ds[i]
        assert np.array_equal((image * 255).round().byte().permute(1, 2, 0).numpy(), sample.image)
        assert np.array_equal(t["masks"].bool().numpy(), sample.masks)
        assert t["labels"].tolist() == [ds.category_id_to_label[c] for c in sample.labels.tolist()]
        assert len(coco.getAnnIds(imgIds=[i])) == len(sample.labels)


def test_same_seed_gives_byte_identical_files(tmp_path):
    def digest(d):
        return {
            p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*"))
            if p.is_file()
        }

    for task in ("instance", "semantic"):
        write_synthetic_dataset(task, tmp_path / f"{task}a", 3, 64, seed=5)
        write_synthetic_dataset(task, tmp_path / f"{task}b", 3, 64, seed=5)
        assert digest(tmp_path / f"{task}a") == digest(tmp_path / f"{task}b")


def test_semantic_folder_round_trip(tmp_path):
    write_synthetic_dataset("semantic", tmp_path, 2, 64, seed=2)
    ds = SemanticFolderDataset(tmp_path / "images", tmp_path / "labels")
    _, labels = ds[1]
    assert np.array_equal(labels.numpy(), render_sample(1, 64, seed=2).label_map())


def _coco_file(tmp_path, anns, images=None, cats=None, image_size=(20, 30)):
    from PIL import Image

    (tmp_path / "img").mkdir(exist_ok=True)
    h, w = image_size
    Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "img" / "a.png")
    data = {
        "images": images
        or [
            {"id": 1, "file_name": "a.png", "width": w, "height": h},
            {"id": 2, "file_name": "a.png", "width": w, "height": h},
        ],
        "annotations": anns,
        "categories": cats or [{"id": 5, "name": "x"}, {"id": 9, "name": "y"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_coco_reader_polygons_rle_crowd_and_negatives(tmp_path):
    mask = np.zeros((20, 30), bool)
    mask[2:8, 3:12] = True
    rle = encode_masks(mask[None])[0]
    uncompressed = {
        "size": [20, 30],
        "counts": [int(2 + 3 * 20)] + [6, 14] * 8 + [600 - 2 - 60 - 160],
    }
    anns = [
        {
            "id": 1,
            "image_id": 1,
            "category_id": 9,
            "segmentation": [[3, 2, 12, 2, 12, 8, 3, 8]],
            "bbox": [3, 2, 9, 6],
            "area": 54,
            "iscrowd": 0,
        },
        {
            "id": 2,
            "image_id": 1,
            "category_id": 5,
            "segmentation": rle,
            "bbox": [3, 2, 9, 6],
            "area": 54,
            "iscrowd": 0,
        },
        {
            "id": 3,
            "image_id": 1,
            "category_id": 5,
            "segmentation": uncompressed,
            "bbox": [3, 2, 8, 6],
            "area": 48,
            "iscrowd": 1,
        },
    ]
    ds = CocoInstanceDataset(tmp_path / "img", _coco_file(tmp_path, anns))
    _, t = ds[0]
    assert t["labels"].tolist() == [2, 1]  # category 9 -> 2, 5 -> 1; the crowd region is left out
    assert ds.label_to_category_id == {1: 5, 2: 9}
    assert t["masks"][1].bool().numpy().tolist() == mask.tolist()
    assert t["boxes"][0].tolist() == [3, 2, 12, 8]
    _, negative = ds[1]  # image 2 has no annotations: kept
    assert negative["boxes"].shape == (0, 4) and negative["masks"].shape == (0, 20, 30)


@pytest.mark.parametrize(
    "ann, message",
    [
        ({"image_id": 7}, "annotation 11 refers to unknown image 7"),
        ({"category_id": 3}, "annotation 11 refers to unknown category 3"),
        ({"segmentation": [[1, 2, 3]]}, "annotation 11 has a malformed segmentation"),
        ({"bbox": [25, 2, 20, 6]}, "annotation 11: box .* lies outside image 1"),
    ],
)
def test_coco_reader_bad_annotations_name_file_and_id(tmp_path, ann, message):
    base = {
        "id": 11,
        "image_id": 1,
        "category_id": 5,
        "segmentation": [[3, 2, 12, 2, 12, 8]],
        "bbox": [3, 2, 9, 6],
        "area": 27,
        "iscrowd": 0,
    }
    with pytest.raises(DataError, match=r"ann\.json: " + message):
        CocoInstanceDataset(tmp_path / "img", _coco_file(tmp_path, [{**base, **ann}]))


def _ann(aid, **fields):
    base = {
        "id": aid,
        "image_id": 1,
        "category_id": 5,
        "segmentation": [[3, 2, 12, 2, 12, 8, 3, 8]],
        "bbox": [3, 2, 9, 6],
        "area": 54,
        "iscrowd": 0,
    }
    return {**base, **fields}


def test_coco_reader_skips_zero_area_and_empty_masks_with_one_warning(tmp_path):
    empty_rle = encode_masks(np.zeros((1, 20, 30), bool))[0]
    anns = [
        _ann(4, segmentation=[[3, 2, 3, 2, 3, 2]], bbox=[3, 2, 0, 0], area=0),
        _ann(5, segmentation=[]),  # no polygon although area and box say 54 pixels
        _ann(6, segmentation=empty_rle),  # an RLE covering no pixel, same
        _ann(7),
    ]
    with pytest.warns(
        UserWarning,
        match=r"skipped 3 annotations: 1 of zero area \(ids 4\), "
        r"2 with an empty mask .*\(ids 5, 6\)",
    ):
        ds = CocoInstanceDataset(tmp_path / "img", _coco_file(tmp_path, anns))
    _, target = ds[0]  # the empty ones never reach pycocotools' decoder or the model
    assert ds.num_skipped == 3 and target["labels"].tolist() == [1]
    assert target["masks"].shape == (1, 20, 30) and target["masks"].sum() == 54


def test_coco_reader_lists_every_file_problem_before_the_first_sample(tmp_path):
    from PIL import Image

    path = _coco_file(
        tmp_path,
        [_ann(8, image_id=3), _ann(9, category_id=4)],
        images=[
            {"id": 1, "file_name": "a.png", "width": 30, "height": 20},
            {"id": 2, "file_name": "gone.png", "width": 30, "height": 20},
            {"id": 3, "file_name": "b.png", "width": 30, "height": 20},
        ],
    )
    Image.fromarray(np.zeros((25, 30, 3), np.uint8)).save(tmp_path / "img" / "b.png")
    with pytest.raises(DataError) as err:
        CocoInstanceDataset(tmp_path / "img", path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: 3 problems: ")
    assert "annotation 9 refers to unknown category 4" in message
    assert "image 2: cannot read image " in message and "gone.png: not found" in message
    assert (
        "image 3: " in message
        and "b.png is 30 x 25 (W x H) but the annotation file says 30 x 20" in message
    )


def test_coco_reader_says_when_file_names_repeat_the_images_folder(tmp_path):
    path = _coco_file(
        tmp_path,
        [_ann(1)],
        images=[{"id": 1, "file_name": "img/a.png", "width": 30, "height": 20}],
    )
    with pytest.raises(
        DataError, match=r"the file names already start with 'img', so set images to "
    ):
        CocoInstanceDataset(tmp_path / "img", path)
    assert len(CocoInstanceDataset(tmp_path, path)) == 1  # the folder the names are relative to


def test_coco_labels_are_checked_against_the_model_classes_at_start(tmp_path):
    from pointrend.engine.build import check_labels_fit

    anns = [_ann(1), _ann(2, category_id=9, image_id=2)]
    ds = CocoInstanceDataset(tmp_path / "img", _coco_file(tmp_path, anns))
    check_labels_fit(ds, 3)  # categories 5, 9 -> labels 1, 2: a 3-class model fits
    with pytest.raises(
        DataError,
        match=r"ann\.json: 1 annotations are outside the model's 2 classes, e\.g\. annotation 2 "
        r"of image 2: category 9 is label 2 .*num_classes 3",
    ):
        check_labels_fit(ds, 2)


def test_training_refuses_labels_outside_model_num_classes_before_building(tmp_path):
    from pointrend.engine.build import build_train_objects
    from pointrend.engine.config import config_from_dict

    path = _coco_file(tmp_path, [_ann(1), _ann(2, category_id=9)])
    cfg = config_from_dict(
        {
            "model": {
                "task": "instance",
                "name": "pointrend",
                "backbone": "resnet18",
                "num_classes": 2,
            },
            "train_data": {
                "format": "coco",
                "images": str(tmp_path / "img"),
                "annotations": str(path),
            },
        }
    )
    with pytest.raises(DataError, match="annotation 2 of image 1: category 9 is label 2"):
        build_train_objects(cfg)


def _sixteen_bit_png(path, shape=(20, 30)):
    from PIL import Image

    values = np.linspace(0, 65535, shape[0] * shape[1]).astype(np.uint16).reshape(shape)
    Image.fromarray(values).save(path)
    assert Image.open(path).mode == "I;16"
    return values


def test_sixteen_bit_images_are_scaled_by_their_range_in_every_loader(tmp_path):
    from pointrend.engine.inference import read_image

    values = _sixteen_bit_png(tmp_path / "a16.png")
    expected = torch.from_numpy(values / 65535.0).float()
    image = read_image(tmp_path / "a16.png")
    assert image.dtype == torch.float32 and image.shape == (3, 20, 30)
    assert torch.allclose(image, expected.expand(3, -1, -1), atol=1e-6)
    ds = CocoInstanceDataset(tmp_path / "img", _coco_file(tmp_path, [_ann(1)]))
    _sixteen_bit_png(tmp_path / "img" / "a.png")  # the COCO reader's image, now 16-bit
    assert torch.allclose(ds[0][0], expected.expand(3, -1, -1), atol=1e-6)
    write_synthetic_dataset("semantic", tmp_path / "sem", 1, 32, seed=0)
    _sixteen_bit_png(tmp_path / "sem" / "images" / "000000.png", (32, 32))
    sem_image, _ = SemanticFolderDataset(tmp_path / "sem" / "images", tmp_path / "sem" / "labels")[
        0
    ]
    assert sem_image.min() == 0 and sem_image.max() == 1 and sem_image.std() > 0.2


def test_image_reader_modes_and_refusals(tmp_path):
    from PIL import Image

    from pointrend.engine.inference import read_image  # predict's reader

    ramp = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(ramp).save(tmp_path / "f.tif")
    assert torch.allclose(read_image(tmp_path / "f.tif")[1], torch.from_numpy(ramp))

    from pointrend.data.images import ImageError

    Image.fromarray(ramp * 255).save(tmp_path / "f255.tif")
    with pytest.raises(
        ImageError, match=r"f255\.tif: float pixels in \[0, 255\] are outside \[0, 1\]"
    ):
        read_image(tmp_path / "f255.tif")
    Image.fromarray(np.full((3, 4), 70000, np.int32)).save(tmp_path / "i32.tif")
    with pytest.raises(ImageError, match=r"i32\.tif: 32-bit integer pixels .* do not fit 16 bits"):
        read_image(tmp_path / "i32.tif")
    Image.fromarray(np.full((3, 4), 1000, np.int32)).save(tmp_path / "i16.tif")
    assert torch.allclose(read_image(tmp_path / "i16.tif"), torch.full((3, 3, 4), 1000 / 65535))
    rgba = np.zeros((3, 4, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 0  # fully transparent red: the colour is kept
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    assert torch.allclose(read_image(tmp_path / "rgba.png")[0], torch.full((3, 4), 200 / 255))
    Image.fromarray(np.full((3, 4), 51, np.uint8)).save(tmp_path / "gray.png")
    assert torch.allclose(read_image(tmp_path / "gray.png"), torch.full((3, 3, 4), 0.2))
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(ImageError, match=r"cannot read image .*bad\.png"):
        read_image(tmp_path / "bad.png")


def test_semantic_pairs_of_different_size_are_all_listed_at_construction(tmp_path):
    from PIL import Image

    write_synthetic_dataset("semantic", tmp_path, 3, 32, seed=0)
    for stem in ("000000", "000002"):
        Image.fromarray(np.zeros((30, 32), np.uint8)).save(tmp_path / "labels" / f"{stem}.png")
    with pytest.raises(DataError) as err:
        SemanticFolderDataset(tmp_path / "images", tmp_path / "labels")
    message = str(err.value)
    assert message.count("is (30, 32) (H x W) but its image") == 2 and "2 problems" in message


def test_semantic_reader_errors(tmp_path):
    write_synthetic_dataset("semantic", tmp_path, 1, 32, seed=0)
    from PIL import Image

    Image.fromarray(np.full((32, 32), 40, np.uint8)).save(tmp_path / "labels" / "000000.png")
    with pytest.raises(DataError, match=r"000000.png: labels \[40\] are outside \[0, 8\)"):
        SemanticFolderDataset(tmp_path / "images", tmp_path / "labels")[0]
    with pytest.raises(DataError, match="Cityscapes images not found"):
        CityscapesSemanticDataset(tmp_path)


def test_cityscapes_layout(tmp_path):
    from PIL import Image

    city = tmp_path / "leftImg8bit" / "val" / "bonn"
    gt = tmp_path / "gtFine" / "val" / "bonn"
    city.mkdir(parents=True)
    gt.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 16, 3), np.uint8)).save(city / "bonn_000_000019_leftImg8bit.png")
    Image.fromarray(np.full((8, 16), 255, np.uint8)).save(
        gt / "bonn_000_000019_gtFine_labelTrainIds.png"
    )
    ds = CityscapesSemanticDataset(tmp_path, "val")
    image, labels = ds[0]
    assert ds.num_classes == 19 and image.shape == (3, 8, 16) and (labels == 255).all()


def test_transforms_move_boxes_and_masks_with_the_image():
    torch.manual_seed(0)
    cfg = DatasetConfig(flip=True)
    tf = build_transforms("instance", True, cfg)
    image, t = SyntheticInstanceDataset(1, 64, seed=4)[0]
    flips = 0
    for _ in range(6):
        img2, t2 = tf(image, t)
        flipped = not torch.equal(img2, image)
        flips += flipped
        ref = t["masks"].flip(-1) if flipped else t["masks"]
        assert torch.equal(t2["masks"], ref)
        for mask, box in zip(t2["masks"].bool(), t2["boxes"]):
            xs = torch.where(mask.any(0))[0]
            assert box[0] == xs.min() and box[2] == xs.max() + 1
    assert 0 < flips < 6
    sem = build_transforms(
        "semantic", True, DatasetConfig(min_size=[48], crop_size=[40, 32], flip=False)
    )
    img, labels = SyntheticSemanticDataset(1, 64, seed=0)[0]
    img3, lab3 = sem(img, labels)
    assert img3.shape == (3, 40, 32) and lab3.shape == (40, 32)


def test_training_refuses_validation_data_of_other_classes(tmp_path):
    from pointrend.engine.build import build_train_objects
    from pointrend.engine.config import config_from_dict

    write_synthetic_dataset("semantic", tmp_path / "val", 1, 32, seed=1)
    (tmp_path / "val" / "classes.json").write_text(json.dumps(["bg", "road", "car"]))
    folder = {
        "images": str(tmp_path / "val" / "images"),
        "labels": str(tmp_path / "val" / "labels"),
    }
    cfg = config_from_dict(
        {
            "model": {"task": "semantic", "name": "coarse", "backbone": "resnet18"},
            "train_data": {"format": "synthetic", "num_images": 2, "image_size": 32},
            "val_data": {"format": "folder", **folder},
        }
    )
    with pytest.raises(
        ValueError,
        match=r"train_data has 8 classes \(background, .*\) but "
        r"val_data has 3 \(bg, road, car\)",
    ):
        build_train_objects(cfg)
