"""Full-resolution semantic segmentation cost: three ways to get ``K x H x W`` logits (CPU).

From the same stride-4 coarse logits (Semantic FPN P2-P5) and stride-4 fine features (P2, 256
channels) of one ``H x W`` image (the paper's 1024 x 2048 Cityscapes frame, K = 19):

* **upsampled**: the coarse logits bilinearly upsampled 4x (the plain baseline);
* **PointRend**: adaptive subdivision, 2 steps of 8192 points (the
  paper's Cityscapes setting), the library's
  :class:`~pointrend.semantic.SemanticSegmenter` renderer;
* **dense point head**: the same point head evaluated at every pixel of the output (what
  PointRend would cost without choosing its points), in bands of rows to bound memory.

Measured per contender: multiply-adds (``FlopCounterMode``; bilinear interpolation and point
sampling count 0 there, only the layers count), activations (elements written by the layers),
peak memory (bytes of live intermediate tensors, :class:`~benchmarks.meters.PeakMemory`) and
CPU time (contenders alternated, median of the repeats). The Semantic FPN head that produces the
coarse logits is counted too (multiply-adds only), for scale.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
from torch import Tensor, nn

from pointrend.head import PointHead
from pointrend.points import grid_cell_centres
from pointrend.semantic import SemanticPointRendConfig, SemanticSegmenter
from pointrend.semantic.fpn_head import SemanticFPNHead
from pointrend.settings import replace_options

from .meters import ActivationCounter, PeakMemory, alternate, count_call

__all__ = ["semantic_renderer", "dense_point_head", "semantic_costs"]

CHANNELS = 256
STRIDE = 4
Log = Callable[[str], None]


def semantic_renderer(num_classes: int, num_points: int = 8192) -> SemanticSegmenter:
    """A PointRend Semantic FPN renderer (no backbone: it is fed features directly)."""
    config = replace_options(SemanticPointRendConfig(), subdivision_num_points=num_points)
    each = config.pointrend.point_head_coarse_pred_each_layer
    head = PointHead(CHANNELS, num_classes, coarse_pred_each_layer=each)
    return SemanticSegmenter(
        nn.Identity(),
        nn.Identity(),
        num_classes=num_classes,
        coarse_stride=STRIDE,
        fine_index=0,
        fine_stride=STRIDE,
        point_head=head,
        config=config,
    ).eval()


def dense_point_head(
    model: SemanticSegmenter, fine: Tensor, coarse: Tensor, rows_per_band: int = 32
) -> Tensor:
    """The point head at the centre of every output pixel: ``N x K x H x W`` logits.

    Works through bands of ``rows_per_band`` rows (one batch of points each) so that the hidden
    layers of ~2M points never live at once; the result is the same as one batch.
    """
    s, (h, w) = model.coarse_stride, coarse.shape[-2:]
    H, W = s * h, s * w
    centres = grid_cell_centres(H, W, device=coarse.device).unsqueeze(0)
    centres = centres.expand(coarse.shape[0], -1, -1)
    bands = [
        model._point_logits(fine, coarse, part) for part in centres.split(rows_per_band * W, dim=1)
    ]
    return torch.cat(bands, dim=2).view(coarse.shape[0], -1, H, W)


def _inputs(height: int, width: int, num_classes: int, device="cpu") -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    h, w = height // STRIDE, width // STRIDE
    fine = torch.randn(1, CHANNELS, h, w, generator=g).to(device)
    coarse = torch.randn(1, num_classes, h, w, generator=g).to(device)
    return fine, coarse


def _contenders(model, fine, coarse, rows_per_band: int) -> dict[str, Callable[[], Tensor]]:
    size = (STRIDE * coarse.shape[-2], STRIDE * coarse.shape[-1])
    return {
        "upsampled": lambda: nn.functional.interpolate(
            coarse, size=size, mode="bilinear", align_corners=False
        ),
        "pointrend": lambda: model.render(fine, coarse),
        "dense_point_head": lambda: dense_point_head(model, fine, coarse, rows_per_band),
    }


def _coarse_head_macs(height: int, width: int, num_classes: int) -> float:
    """Multiply-adds of the Semantic FPN head (P2-P5 -> stride-4 logits), on the meta device."""
    head = SemanticFPNHead(CHANNELS, num_classes).to("meta").eval()
    levels = [
        torch.empty(1, CHANNELS, height // s, width // s, device="meta") for s in (4, 8, 16, 32)
    ]
    return count_call(lambda: head(levels), ActivationCounter())


def semantic_costs(
    height: int = 1024,
    width: int = 2048,
    num_classes: int = 19,
    num_points: int = 8192,
    repeats: int = 3,
    rows_per_band: int = 32,
    log: Log | None = print,
) -> dict:
    """The full-resolution cost table (one image); see the module docstring."""
    torch.manual_seed(0)
    model = semantic_renderer(num_classes, num_points)
    fine, coarse = _inputs(height, width, num_classes)
    contenders = _contenders(model, fine, coarse, rows_per_band)
    rows: dict[str, dict] = {}
    meta_model = semantic_renderer(num_classes, num_points).to("meta")
    meta_fine, meta_coarse = _inputs(height, width, num_classes, device="meta")
    meta = _contenders(meta_model, meta_fine, meta_coarse, rows_per_band)
    for name, fn in contenders.items():
        counter = ActivationCounter()
        try:  # shapes only: the dense head's ~0.4 T multiply-adds need not run twice more
            macs = count_call(meta[name], counter)
        except (NotImplementedError, RuntimeError):  # an operator without a meta kernel
            counter = ActivationCounter()
            macs = count_call(fn, counter)
        meter = PeakMemory()  # also the warm-up run of the timing below
        with torch.no_grad(), meter:
            out = fn()
        assert out.shape == (1, num_classes, height, width), out.shape
        rows[name] = {
            "multiply_adds": macs,
            "activations": sum(counter.counts.values()),
            "peak_mb": meter.peak / 2**20,
        }
    samples = alternate(contenders, repeats, warmup=False)
    for name, times in samples.items():
        rows[name]["time_s"] = statistics.median(times)
        rows[name]["samples_s"] = times
    pointrend = rows["pointrend"]["time_s"]
    for row in rows.values():
        row["time_vs_pointrend"] = row["time_s"] / pointrend
    result = {
        "image": [height, width],
        "num_classes": num_classes,
        "coarse_stride": STRIDE,
        "subdivision_num_points": num_points,
        "subdivision_steps": 2,
        "dense_rows_per_band": rows_per_band,
        "repeats": repeats,
        "semantic_fpn_head_multiply_adds": _coarse_head_macs(height, width, num_classes),
        "rows": rows,
    }
    if log:
        for name, row in rows.items():
            log(
                f"  {name:<17} {row['multiply_adds'] / 1e9:8.2f} G mult-adds "
                f"{row['activations'] / 1e6:8.1f} M act. {row['peak_mb']:8.1f} MB "
                f"{row['time_s']:8.3f} s ({row['time_vs_pointrend']:.2f}x PointRend)"
            )
    return result
