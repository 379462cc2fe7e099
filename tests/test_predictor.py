"""pointrend.Predictor, as a notebook uses it: three lines for a PIL image, a numpy array, a
path or a tensor; the same results as ``pointrend predict`` writes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pointrend.cli import main
from pointrend.data.synthetic import SyntheticInstanceDataset, SyntheticSemanticDataset
from pointrend.demo import SHIPPED, WEIGHTS_DIR

INSTANCE = str(WEIGHTS_DIR / SHIPPED["pointrend"])


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    image = SyntheticInstanceDataset(1, 160, seed=31)[0][0]
    array = (image.permute(1, 2, 0) * 255).round().byte().numpy()
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(array).save(path)
    return path, array


def test_three_lines_for_a_pil_image_an_array_a_path_and_a_tensor(photo):
    path, array = photo
    import pointrend

    predictor = pointrend.Predictor(INSTANCE, score_thresh=0.5, device="cpu")
    results = [
        predictor(Image.open(path)),
        predictor(array),
        predictor(path),
        predictor(torch.from_numpy(array).permute(2, 0, 1)),  # uint8 3 x H x W
    ]
    first = results[0]
    assert len(first["scores"]) >= 1 and (first["scores"] >= 0.5).all()
    assert first["masks"].dtype == torch.bool and first["masks"].shape[1:] == array.shape[:2]
    assert len(first["class_names"]) == len(first["labels"])
    names = predictor.class_names
    assert first["class_names"] == [names[k] for k in first["labels"].tolist()]
    for other in results[1:]:
        assert torch.equal(other["labels"], first["labels"])
        assert torch.equal(other["masks"], first["masks"])
    batch = predictor([path, array])
    assert isinstance(batch, list) and torch.equal(batch[1]["masks"], first["masks"])


def test_compact_masks_paste_to_the_dense_ones(photo):
    from pointrend import Predictor
    from pointrend.instance.compact import paste_compact

    path, _ = photo
    dense = Predictor(INSTANCE, device="cpu")(path)
    compact = Predictor(INSTANCE, device="cpu", masks="compact")(path)
    assert torch.equal(paste_compact(compact["masks"]), dense["masks"])


def test_the_predictor_gives_what_predict_writes(photo, tmp_path):
    from pycocotools import mask as mask_utils

    from pointrend import Predictor

    path, _ = photo
    assert main(["predict", str(path), "--weights", INSTANCE, "--out", str(tmp_path / "o"),
                 "--no-progress", "--device", "cpu"]) == 0  # fmt: skip
    records = json.loads((tmp_path / "o" / "predictions.json").read_text())["images"]["photo.png"]
    result = Predictor(INSTANCE, device="cpu")(path)
    written = np.stack([mask_utils.decode(r["segmentation"]) for r in records]).astype(bool)
    assert sorted(r["score"] for r in records) == sorted(
        round(s, 5) for s in result["scores"].tolist()
    )
    assert written.shape == tuple(result["masks"].shape)
    assert np.array_equal(written, result["masks"].numpy())  # the same order: the model's


def test_a_16_bit_array_reads_as_its_file_would(photo, tmp_path):
    """A uint16 array (a 16-bit photo read by another library) is divided by 65535, as pointrend
    reads a 16-bit PNG file."""
    from pointrend.engine.predictor import as_pixels

    _, array = photo
    grey = array[:, :, 0].astype(np.uint16) * 257  # 8-bit values spread over 16 bits
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    from_file = as_pixels(tmp_path / "grey16.png")
    from_array = as_pixels(grey)
    assert from_array.dtype == torch.float32 and from_array.shape == (3, *grey.shape)
    assert torch.allclose(
        from_array, from_file.float() / (255 if from_file.dtype == torch.uint8 else 1)
    )
    assert torch.equal(from_array[0], torch.from_numpy(array[:, :, 0]).float() / 255)


def test_a_semantic_predictor_and_bad_inputs():
    from pointrend import Predictor

    image = SyntheticSemanticDataset(1, 96, seed=3)[0][0]
    predictor = Predictor(WEIGHTS_DIR / SHIPPED["semantic_pointrend"], device="cpu")
    result = predictor(image)
    assert result["labels"].shape == image.shape[1:]
    assert len(result["class_names"]) == predictor.trained.num_classes
    with pytest.raises(ValueError, match=r"must be H x W x 3 \(RGB\), got shape \(4, 4, 7\)"):
        predictor(np.zeros((4, 4, 7), np.uint8))
    with pytest.raises(ValueError, match=r"3 x H x W with H, W >= 1, got shape \(3, 0, 5\)"):
        predictor(torch.rand(3, 0, 5))
    with pytest.raises(ValueError, match="got dict"):
        predictor({"x": 1})
    with pytest.raises(
        ValueError, match="must be uint8, uint16 or floating point, got torch.int32"
    ):
        predictor(torch.zeros(3, 4, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="masks must be 'dense' or 'compact'"):
        Predictor(INSTANCE, masks="rle")


def test_overlay_labels_scale_with_the_photo():
    from pointrend.viz import label_instances, palette

    def drawn_rows(side):
        overlay = np.zeros((side, side, 3), np.uint8)
        box = torch.tensor([[side * 0.25, side * 0.5, side * 0.75, side * 0.9]])
        out = label_instances(overlay, box, ["dog 0.97"], palette(1))
        top, left = int(side * 0.5), int(side * 0.25)
        line = int((out[top : top + side // 50, side // 2].max(1) > 0).sum())  # box's top edge
        # the label sits inside the box's top-left corner, below the edge
        label = out[top + line + 1 : top + side // 5, left + line + 1 : left + side // 5]
        text = int((label.max(2) > 0).any(1).sum())  # rows the label covers
        return line, text

    small, large = drawn_rows(400), drawn_rows(4000)
    assert small[0] >= 1 and small[1] >= 8
    assert large[0] >= 6 * small[0] and large[1] >= 6 * small[1]
