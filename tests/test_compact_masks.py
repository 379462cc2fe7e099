"""Compact instance masks: box-local grids pasted on demand equal the dense output thresholded;
the score threshold reaches the model; evaluation does not depend on batching."""

from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools import mask as mask_utils

from pointrend.data.synthetic import SyntheticInstanceDataset
from pointrend.engine.evaluate import detect, evaluate_instances, metrics_json
from pointrend.engine.inference import load_trained_model
from pointrend.instance import CompactMasks, MasksBySize, paste_compact, paste_masks
from pointrend.instance.compact import pasted_chunks

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "src" / "pointrend" / "weights" / "synthetic_instance_pointrend_r18.pt"
SIZE = (37, 53)  # H x W


def _boxes(n: int, seed: int) -> torch.Tensor:
    """Random boxes of ``SIZE`` with borders, sub-pixel, empty and larger-than-image ones."""
    g = torch.Generator().manual_seed(seed)
    H, W = SIZE
    xy = torch.rand(n, 2, generator=g) * torch.tensor([W + 20.0, H + 20.0]) - 10
    wh = torch.rand(n, 2, generator=g) ** 3 * torch.tensor([1.5 * W, 1.5 * H])
    special = torch.tensor(
        [
            [-5.0, -7.0, W + 9.0, H + 3.0],  # larger than the image on every side
            [0.0, 0.0, 0.6, 0.4],  # smaller than a pixel
            [10.2, 10.7, 10.9, 11.2],  # holds one pixel centre at most
            [W - 3.5, H - 2.5, W + 0.0, H + 0.0],  # the bottom-right corner
            [12.0, 5.0, 12.0, 30.0],  # zero width
            [W + 1.0, 2.0, W + 8.0, 9.0],  # wholly outside
        ]
    )
    return torch.cat([torch.cat([xy, xy + wh], 1), special])


def _by_size(grids: list[torch.Tensor]) -> MasksBySize:
    """Grids of several sizes, interleaved over the boxes (as the per-box mode groups them)."""
    n = sum(len(g) for g in grids)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    groups, first = [], 0
    for g in grids:
        groups.append((order[first : first + len(g)], g))
        first += len(g)
    return MasksBySize(n, groups)


@pytest.mark.parametrize("mode", ["fixed", "box"])
@pytest.mark.parametrize("fade_border", [False, True])
def test_compact_pasted_back_equals_the_dense_output_thresholded(mode, fade_border):
    boxes = _boxes(24, seed=1)
    g = torch.Generator().manual_seed(2)
    if mode == "fixed":
        grids = torch.rand(len(boxes), 1, 28, 28, generator=g)
    else:
        sizes = [(7, 7), (14, 56), (28, 28)]
        parts = [
            torch.rand(10, 1, *sizes[0], generator=g),
            torch.rand(8, 1, *sizes[1], generator=g),
        ]
        parts.append(torch.rand(len(boxes) - 18, 1, *sizes[2], generator=g))
        grids = _by_size(parts)
    compact = CompactMasks(grids, boxes, SIZE, fade_border)
    dense = paste_masks(grids, boxes, SIZE, fade_border=fade_border)[:, 0] >= 0.5
    assert dense.any() and not dense.all()
    assert torch.equal(paste_compact(compact), dense)
    assert torch.equal(compact.dense()[:, 0] >= 0.5, dense)
    # a subset, in any order, one mask a chunk, as uint8
    index = [7, 0, 25, 3]
    one_by_one = paste_compact(compact, index=index, output="uint8", max_bytes=1)
    assert one_by_one.dtype == torch.uint8 and torch.equal(one_by_one.bool(), dense[index])
    # straight to RLE, a few masks a chunk
    rles = paste_compact(compact, output="rle", max_bytes=3 * SIZE[0] * SIZE[1])
    decoded = mask_utils.decode([dict(r, counts=r["counts"].encode()) for r in rles])
    assert torch.equal(torch.from_numpy(decoded).permute(2, 0, 1).bool(), dense)


def test_pasted_chunks_bound_their_size_and_name_a_window_holding_every_pixel():
    boxes = _boxes(12, seed=3)
    compact = CompactMasks(torch.rand(len(boxes), 1, 14, 14), boxes, SIZE)
    H, W = SIZE
    seen = []
    for positions, masks, (y0, y1, x0, x1) in pasted_chunks(compact, max_bytes=2 * H * W):
        assert masks.shape == (len(positions), H, W) and len(positions) <= 2
        inside = torch.zeros(H, W, dtype=torch.bool)
        inside[y0:y1, x0:x1] = True
        assert not masks[:, ~inside].any()
        seen += positions.tolist()
    assert seen == list(range(len(boxes)))


def test_a_large_window_is_pasted_in_bands_with_the_same_values():
    grids = torch.rand(2, 1, 20, 20, generator=torch.Generator().manual_seed(4))
    boxes = torch.tensor([[-3.0, 2.5, 50.0, 36.0], [4.0, 1.0, 20.0, 30.0]])
    whole = paste_masks(grids, boxes, SIZE)
    banded = paste_masks(grids, boxes, SIZE, max_elements=60)  # a few rows a band
    torch.testing.assert_close(banded, whole, atol=0, rtol=0)
    compact = CompactMasks(grids, boxes, SIZE)
    small = torch.zeros(2, *SIZE, dtype=torch.bool)
    for positions, masks, _ in pasted_chunks(compact, max_elements=60):
        small[positions] = masks.bool()
    assert torch.equal(small, whole[:, 0] >= 0.5)


def test_paste_compact_at_another_size_scales_the_boxes():
    grids = torch.rand(3, 1, 16, 16)
    boxes = torch.tensor([[1.0, 2.0, 20.0, 30.0], [10.0, 0.0, 52.0, 37.0], [0.0, 0.0, 5.0, 5.0]])
    compact = CompactMasks(grids, boxes, SIZE)
    double = paste_compact(compact, (74, 106))
    assert torch.equal(double, paste_masks(grids, boxes * 2, (74, 106))[:, 0] >= 0.5)


def test_half_precision_grids_are_pasted_in_float32():
    """Under autocast the mask branch may return float16 / bfloat16 probabilities: the paste
    reads them in float32, the same masks as the float32 copy of the grids."""
    boxes = _boxes(10, seed=5)
    grids = torch.rand(len(boxes), 1, 14, 14).to(torch.float16)
    for dtype in (torch.float16, torch.bfloat16):
        half = paste_compact(CompactMasks(grids.to(dtype), boxes, SIZE))
        full = paste_compact(CompactMasks(grids.to(dtype).float(), boxes, SIZE))
        assert torch.equal(half, full) and half.any()


def test_bad_threshold_and_index_are_refused():
    compact = CompactMasks(torch.rand(2, 1, 7, 7), torch.tensor([[0.0, 0, 5, 5]] * 2), SIZE)
    with pytest.raises(ValueError, match="threshold must be in"):
        paste_compact(compact, threshold=0)
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        paste_compact(compact, index=[2])
    with pytest.raises(ValueError, match="output must be"):
        paste_compact(compact, output="float")


@pytest.fixture(scope="module")
def image():
    return SyntheticInstanceDataset(1, 160, seed=7001)[0][0]


@pytest.mark.parametrize("mode", ["fixed", "box"])
def test_the_models_compact_output_equals_its_dense_output(mode, image):
    torch.set_num_threads(1)
    options = [f"model.options.mask_resolution={mode}", "model.options.box_score_thresh=0"]
    dense_model = load_trained_model(WEIGHTS, None, options).model
    compact_model = load_trained_model(
        WEIGHTS, None, [*options, "model.options.mask_output=compact"]
    )
    with torch.no_grad():
        dense = dense_model([image])[0]
        compact = compact_model.model([image])[0]
    assert "masks" not in compact and len(compact["mask_grids"]) == len(dense["boxes"]) > 5
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(compact[key], dense[key])
    assert torch.equal(paste_compact(compact["mask_grids"]), dense["masks"][:, 0] >= 0.5)
    if mode == "box":
        assert isinstance(compact["mask_grids"].grids, MasksBySize)


def test_the_score_threshold_reaches_the_model_and_masks_below_it_are_never_rendered(image):
    trained = load_trained_model(WEIGHTS)
    model = trained.model
    rendered = []
    real = model.roi_heads.mask_branch.render
    model.roi_heads.mask_branch.render = lambda f, s, boxes, *a: (
        rendered.append(sum(len(b) for b in boxes)) or real(f, s, boxes, *a)
    )
    before = model.roi_heads.score_thresh
    everything = detect(model, [image], score_thresh=0.0)[0]
    kept = detect(model, [image], score_thresh=0.3)[0]
    assert model.roi_heads.score_thresh == before  # restored
    above = everything["scores"] >= 0.3
    assert 0 < int(above.sum()) < len(everything["scores"])
    assert rendered == [len(everything["scores"]), int(above.sum())]
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(kept[key], everything[key][above])


def test_predict_renders_only_the_masks_above_score_thresh(tmp_path, image):
    from PIL import Image

    from pointrend.engine import inference

    trained = load_trained_model(WEIGHTS)
    rendered = []
    real = trained.model.roi_heads.mask_branch.render
    trained.model.roi_heads.mask_branch.render = lambda f, s, boxes, *a: (
        rendered.append(sum(len(b) for b in boxes)) or real(f, s, boxes, *a)
    )
    path = tmp_path / "scene.png"
    Image.fromarray((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)).save(path)
    inference.predict_images(trained, [path], tmp_path / "out", 0.4, progress=False)
    written = (tmp_path / "out" / "predictions.json").read_text()
    import json

    records = json.loads(written)["images"]["scene.png"]
    assert rendered == [len(records)] and len(records) > 0


class _MixedSizes(torch.utils.data.Dataset):
    """Two synthetic scenes of different sizes (so a batch of both is padded)."""

    def __init__(self):
        self.items = []
        for k, (h, w) in enumerate([(160, 160), (112, 176)]):
            image, target = SyntheticInstanceDataset(1, 160, seed=7100 + k)[0]
            image = image[:, :h, :w].contiguous()
            keep = target["masks"][:, :h, :w].flatten(1).any(1).bool()
            masks = target["masks"][keep, :h, :w]
            ys, xs = masks.any(2), masks.any(1)
            boxes = torch.stack(
                [
                    xs.float().argmax(1),
                    ys.float().argmax(1),
                    w - xs.flip(1).float().argmax(1),
                    h - ys.flip(1).float().argmax(1),
                ],
                1,
            ).float()
            target = {"boxes": boxes, "labels": target["labels"][keep], "masks": masks}
            self.items.append((image, dict(target, image_id=k)))
        self.num_classes = 9

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_evaluation_does_not_depend_on_the_batch_size():
    torch.set_num_threads(1)
    model = load_trained_model(WEIGHTS).model
    data = _MixedSizes()
    one = evaluate_instances(model, data, batch_size=1)
    two = evaluate_instances(model, data, batch_size=2)
    assert metrics_json(one) == metrics_json(two)  # (nan != nan: compared as JSON)
    assert one["segm"]["AP"] > 0
