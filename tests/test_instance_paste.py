"""Pasting rendered masks into images and reading ground-truth masks at points."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pointrend import point_sample
from pointrend.instance import FlatMasks, paste_masks, sample_masks_at_points
from pointrend.instance.paste import box_pixel_ranges


def test_paste_reproduces_a_mask_whose_cells_are_the_pixels():
    """A 224x224 mask on a 224x224-pixel box lands pixel for pixel: no detail is lost."""
    torch.manual_seed(0)
    mask = torch.rand(1, 1, 224, 224)
    out = paste_masks(mask, torch.tensor([[10.0, 20.0, 234.0, 244.0]]), (300, 260))
    assert out.shape == (1, 1, 300, 260)
    torch.testing.assert_close(out[0, 0, 20:244, 10:234], mask[0, 0])
    out[0, 0, 20:244, 10:234] = 0
    assert out.abs().max() == 0


def test_paste_of_a_linear_ramp_is_exact_and_clamped_at_the_box_edge():
    M = 16
    ramp = ((torch.arange(M) + 0.5) / M).view(1, 1, 1, M).expand(1, 1, M, M)
    box = torch.tensor([[3.3, 2.0, 40.7, 30.0]])
    out = paste_masks(ramp, box, (32, 48))[0, 0]
    cols = torch.arange(48) + 0.5
    inside_x = (cols >= 3.3) & (cols < 40.7)
    u = ((cols - 3.3) / (40.7 - 3.3)).clamp(0.5 / M, 1 - 0.5 / M)
    expected_row = torch.where(inside_x, u, torch.zeros(()))
    rows = torch.arange(32) + 0.5
    inside_y = (rows >= 2.0) & (rows < 30.0)
    expected = inside_y[:, None].float() * expected_row[None, :]
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_paste_boxes_partly_or_wholly_outside_and_degenerate():
    ones = torch.ones(5, 1, 8, 8)
    boxes = torch.tensor(
        [
            [-50.0, -20.0, 50.0, 80.0],  # partly outside (left, top, bottom)
            [60.0, 60.0, 90.0, 90.0],  # partly outside (right, bottom)
            [100.0, 5.0, 120.0, 20.0],  # wholly outside
            [10.0, 10.0, 10.0, 30.0],  # zero width
            [10.0, 10.0, 30.0, 10.0],  # zero height
        ]
    )
    out = paste_masks(ones, boxes, (64, 64))
    assert torch.isfinite(out).all()
    expected0 = torch.zeros(64, 64)
    expected0[:, :50] = 1
    torch.testing.assert_close(out[0, 0], expected0)
    expected1 = torch.zeros(64, 64)
    expected1[60:, 60:] = 1
    torch.testing.assert_close(out[1, 0], expected1)
    assert out[2:].abs().max() == 0


def test_paste_empty_and_chunked():
    assert paste_masks(torch.zeros(0, 1, 28, 28), torch.zeros(0, 4), (30, 40)).shape == (
        0,
        1,
        30,
        40,
    )
    torch.manual_seed(1)
    masks = torch.rand(7, 1, 20, 20)
    xy = torch.rand(7, 2) * 50 - 5
    boxes = torch.cat([xy, xy + torch.rand(7, 2) * 40], dim=1)
    whole = paste_masks(masks, boxes, (50, 60))
    chunked = paste_masks(masks, boxes, (50, 60), max_elements=1)  # one box at a time
    torch.testing.assert_close(whole, chunked)
    # boxes of several window sizes are pasted in size classes: each lands in its own row
    alone = torch.cat([paste_masks(masks[i : i + 1], boxes[i : i + 1], (50, 60)) for i in range(7)])
    torch.testing.assert_close(whole, alone)
    widths = (boxes[:, 2] - boxes[:, 0]).clamp(min=1).log2().ceil()
    assert len(set(widths.tolist())) > 2


def test_box_pixel_ranges_use_pixel_centres():
    start, end = box_pixel_ranges(torch.tensor([[0.4, 0, 2.6, 1], [0.6, 0, 0.6, 1]]), 10, axis=0)
    # centres 0.5, 1.5, 2.5 lie in [0.4, 2.6); an empty box has an empty range
    assert start.tolist() == [0, 1] and end.tolist() == [3, 1]


@settings(max_examples=15, deadline=None)
@given(st.lists(st.integers(0, 3), min_size=1, max_size=4), st.integers(0, 10_000))
def test_sample_masks_at_points_matches_point_sample(counts, seed):
    """Flat gather = ``point_sample`` of each mask (zero padding, pixel centres)."""
    g = torch.Generator().manual_seed(seed)
    sizes = [
        (int(torch.randint(3, 12, (1,), generator=g)), int(torch.randint(3, 12, (1,), generator=g)))
        for _ in counts
    ]
    masks = [
        (torch.rand(n, h, w, generator=g) > 0.5).to(torch.uint8) for n, (h, w) in zip(counts, sizes)
    ]
    flat = FlatMasks(masks)
    index, points, expected = [], [], []
    for i, (n, (h, w)) in enumerate(zip(counts, sizes)):
        for j in range(n):
            pts = (
                torch.rand(6, 2, generator=g) * torch.tensor([w + 4.0, h + 4.0]) - 2
            )  # some outside
            index.append(int(flat.first[i]) + j)
            points.append(pts)
            ref = point_sample(masks[i][j][None, None].float(), (pts / torch.tensor([w, h]))[None])
            expected.append(ref[0, 0])
    if not index:
        assert sample_masks_at_points(
            flat, torch.zeros(0, dtype=torch.long), torch.zeros(0, 6, 2)
        ).shape == (0, 6)
        return
    got = sample_masks_at_points(flat, torch.tensor(index), torch.stack(points))
    torch.testing.assert_close(got, torch.stack(expected), atol=1e-5, rtol=0)
