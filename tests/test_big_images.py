"""Large photos: uint8 decoding, shrinking before the float conversion, EXIF orientation, and
overlays built a strip at a time."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pointrend.cli import main
from pointrend.data.images import (
    image_size,
    pair_size_problem,
    read_image,
    read_pixels,
    resize_to_float,
    to_float_image,
)
from pointrend.data.synthetic import render_sample
from pointrend.engine.inference import load_trained_model
from pointrend.engine.photos import model_input, resized_size
from pointrend.viz import _blend, _paint_edges, label_edges, palette

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "pointrend" / "weights" / "synthetic_instance_pointrend_r18.pt"


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _portrait_jpeg(path: Path, upright: np.ndarray) -> Path:
    """``upright`` (``H x W x 3``) stored turned on its side with EXIF Orientation 6 (a phone
    held upright: the viewer turns it 90 degrees clockwise)."""
    stored = np.ascontiguousarray(np.rot90(upright, 1))  # W x H x 3
    Image.fromarray(stored).save(path, quality=95, subsampling=0, exif=_exif(6))
    return path


def test_pixels_are_decoded_as_uint8_and_scaled_as_before(tmp_path):
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, (9, 13, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    Image.fromarray(array).save(tmp_path / "a.jpg", quality=90)
    pixels = read_pixels(tmp_path / "a.png")
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 9, 13)
    assert torch.equal(pixels.permute(1, 2, 0), torch.from_numpy(array))
    expected = torch.from_numpy(array.astype(np.float32) / 255.0).permute(2, 0, 1)
    assert torch.equal(read_image(tmp_path / "a.png"), expected)
    assert read_image(tmp_path / "a.jpg").is_contiguous()  # float images stay 3 x H x W
    # JPEGs are decoded by torchvision: the same pixels as Pillow
    jpeg = np.array(Image.open(tmp_path / "a.jpg").convert("RGB"))
    assert torch.equal(read_pixels(tmp_path / "a.jpg").permute(1, 2, 0), torch.from_numpy(jpeg))


def test_exif_orientation_is_applied_with_an_opt_out(tmp_path):
    upright = render_sample(0, 40, 24, seed=3).image  # 40 x 24 (H x W)
    path = _portrait_jpeg(tmp_path / "p.jpg", upright)
    stored = read_pixels(path, exif_orientation=False)
    assert stored.shape == (3, 24, 40)
    turned = read_pixels(path)
    assert turned.shape == (3, 40, 24)
    assert torch.equal(turned, torch.rot90(stored, -1, dims=(1, 2)))  # clockwise
    assert image_size(path) == (40, 24) and image_size(path, exif_orientation=False) == (24, 40)
    # Pillow's reading of the same file agrees (PNG path: Pillow turns it)
    Image.open(path).save(tmp_path / "p.png", exif=_exif(6))
    assert read_pixels(tmp_path / "p.png").shape == (3, 40, 24)


def test_an_annotation_size_matching_only_the_stored_orientation_keeps_the_stored_pixels(
    tmp_path,
):
    path = _portrait_jpeg(tmp_path / "p.jpg", render_sample(1, 40, 24, seed=3).image)
    stored = read_pixels(path, exif_orientation=False)
    assert torch.equal(read_pixels(path, annotated_size=(24, 40)), stored)
    assert read_pixels(path, annotated_size=(40, 24)).shape == (3, 40, 24)
    # label maps of either orientation pair with the photo; any other size is still refused
    for h, w in ((40, 24), (24, 40)):
        Image.fromarray(np.zeros((h, w), np.uint8)).save(tmp_path / f"l{h}.png")
        assert pair_size_problem(path, tmp_path / f"l{h}.png") is None
    Image.fromarray(np.zeros((40, 40), np.uint8)).save(tmp_path / "bad.png")
    assert "(40, 40)" in pair_size_problem(path, tmp_path / "bad.png")


def test_coco_reader_takes_the_orientation_the_annotation_gives(tmp_path):
    from pointrend.data.coco import CocoInstanceDataset, DataError

    _portrait_jpeg(tmp_path / "p.jpg", render_sample(2, 40, 24, seed=3).image)
    ann = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 5, 5], "iscrowd": 0}
    ann["segmentation"] = [[2, 2, 7, 2, 7, 7, 2, 7]]

    def dataset(width, height):
        data = {
            "images": [{"id": 1, "file_name": "p.jpg", "width": width, "height": height}],
            "annotations": [dict(ann, area=25.0)],
            "categories": [{"id": 1, "name": "thing"}],
        }
        (tmp_path / "a.json").write_text(json.dumps(data))
        return CocoInstanceDataset(tmp_path, tmp_path / "a.json")

    assert dataset(24, 40)[0][0].shape == (3, 40, 24)  # as shown
    assert dataset(40, 24)[0][0].shape == (3, 24, 40)  # as stored
    with pytest.raises(DataError, match="annotation file says 30 x 40"):
        dataset(30, 40)


def test_predict_segments_a_portrait_photo_upright(tmp_path):
    """A JPEG with EXIF Orientation 6 gives the masks of its upright image (same pixels)."""
    upright = render_sample(5, 160, 120, seed=11).image
    (tmp_path / "in").mkdir()
    jpeg = _portrait_jpeg(tmp_path / "in" / "phone.jpg", upright)
    seen = read_pixels(jpeg).permute(1, 2, 0).numpy()  # the decoded, turned pixels
    Image.fromarray(seen).save(tmp_path / "in" / "upright.png")
    out = tmp_path / "out"
    args = ["predict", str(jpeg), str(tmp_path / "in" / "upright.png"), "--weights", str(WEIGHTS)]
    assert main([*args, "--out", str(out), "--score-thresh", "0.2", "--no-progress"]) == 0
    phone = np.asarray(Image.open(out / "phone_instances.png"))
    assert phone.shape == (160, 120) and phone.max() > 0
    assert np.array_equal(phone, np.asarray(Image.open(out / "upright_instances.png")))
    records = json.loads((out / "predictions.json").read_text())["images"]
    assert records["phone.jpg"] == records["upright.png"]
    flat = tmp_path / "flat"
    assert main([*args[:2], *args[3:], "--out", str(flat), "--no-exif-orientation"]) == 0
    assert np.asarray(Image.open(flat / "phone_instances.png")).shape == (120, 160)


@pytest.mark.parametrize("antialias", [False, True])
def test_resize_to_float_is_the_interpolation_of_the_float_image(antialias):
    pixels = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8)
    expected = F.interpolate(
        to_float_image(pixels)[None], (20, 33), mode="bilinear", antialias=antialias
    )[0]
    got = resize_to_float(pixels, (20, 33), antialias=antialias, rows_per_strip=7)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)  # float rounding only


def test_predict_shrinks_to_the_size_the_model_would_and_no_further():
    model = load_trained_model(WEIGHTS).model  # min_size = max_size = 160
    assert resized_size(model, (6000, 8000)) == (120, 160)
    assert resized_size(model, (100, 120)) is None  # enlarged: given as it is
    pixels = torch.randint(0, 256, (3, 600, 800), dtype=torch.uint8)
    shrunk = model_input(model, pixels)
    assert shrunk.shape == (3, 120, 160)
    again, _ = model.transform.resize(shrunk)
    assert torch.equal(again, shrunk)  # the transform leaves it as it is
    direct, _ = model.transform.resize(to_float_image(pixels))
    torch.testing.assert_close(shrunk, direct, atol=1e-5, rtol=0)


def test_overlays_drawn_a_strip_at_a_time_are_the_whole_image_blend():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (37, 29, 3), dtype=np.uint8)
    ids = rng.integers(0, 4, (37, 29))
    colours = np.concatenate([np.zeros((1, 3), np.uint8), palette(3)])
    expected = image.astype(np.float32)
    where = ids > 0
    expected[where] = 0.5 * expected[where] + 0.5 * colours[ids][where].astype(np.float32)
    expected = expected.astype(np.uint8)
    expected[label_edges(ids)] = 255
    got = _blend(image, ids, lambda v: colours[v], 0.5, rows=5)
    _paint_edges(got, ids, rows=4)
    assert np.array_equal(got, expected)
