"""Large photos in ``pointrend predict``: shrink before the float conversion, and turn compact
masks into the id map, the overlay and COCO RLE without a full-size float array.

* :func:`model_input`: a ``3 x H x W`` uint8 photo shrunk to the size the model's transform would
  resize it to (the transform's own size rule, read on a ``meta`` tensor), converted to float a
  strip of rows at a time: a 48-megapixel photo is never held as float32.
* :func:`draw_instances`: the kept detections pasted a chunk of masks at a time (at 8000 x 6000
  one 48 MB uint8 mask), each chunk run-length encoded and drawn into a uint8 draw-order map;
  the id map and the overlay come from that map.
"""

from __future__ import annotations

import numpy as np
import torch
from pycocotools import mask as mask_utils
from torch import Tensor, nn

from ..data.images import resize_to_float, to_float_image
from ..instance.compact import binary_mask_chunks
from .evaluate import detect

__all__ = [
    "resized_size",
    "model_input",
    "detect_photo",
    "draw_instances",
    "draw_on_top",
    "instance_records",
]


def resized_size(model: nn.Module, size: tuple[int, int]) -> tuple[int, int] | None:
    """``(h, w)`` the model's transform resizes an image of ``size`` to, when it shrinks it and
    leaves an image of ``(h, w)`` as it is (``None`` otherwise: no transform, training mode, or
    a size the transform would resize again). Read from the transform itself on a ``meta``
    tensor (no pixels)."""
    transform = getattr(model, "transform", None)
    if transform is None or transform.training or not hasattr(transform, "resize"):
        return None
    try:
        once = tuple(transform.resize(torch.empty(3, *size, device="meta"))[0].shape[-2:])
        twice = tuple(transform.resize(torch.empty(3, *once, device="meta"))[0].shape[-2:])
    except (RuntimeError, NotImplementedError, ValueError, TypeError):
        return None
    if once != twice or once[0] * once[1] >= size[0] * size[1]:
        return None
    return int(once[0]), int(once[1])


def model_input(model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """The float image to give ``model`` for ``pixels`` (``3 x H x W`` from
    :func:`~pointrend.data.images.read_pixels`): shrunk to the size the model's transform would
    resize it to before the conversion to float (:func:`resize_to_float`, the same
    interpolation), so that a large photo is never held as float32 at full size."""
    size = resized_size(model, tuple(pixels.shape[-2:]))
    if size is None:
        return to_float_image(pixels)
    antialias = getattr(model.transform, "resize_rule", "torchvision") == "detectron2"
    return resize_to_float(pixels, size, antialias=antialias)


@torch.no_grad()
def detect_photo(
    model: nn.Module, pixels: Tensor, score_thresh: float, device: torch.device
) -> tuple[dict, Tensor]:
    """An instance model's detections of one photo (``pixels``, ``3 x H x W``) scoring at least
    ``score_thresh``, and the indices of those kept. The model sees the photo shrunk as its
    transform would (:func:`model_input`) and renders only masks above the threshold; they stay
    box-local (``mask_grids``) with boxes at the photo's size."""
    image = model_input(model, pixels).to(device)
    size = (int(pixels.shape[-2]), int(pixels.shape[-1]))
    out = detect(model, [image], [size], compact=True, score_thresh=score_thresh)[0]
    keep = torch.nonzero(out["scores"].cpu() >= score_thresh)[:, 0]
    return out, keep


def draw_on_top(rank: Tensor, masks: Tensor, first: int) -> None:
    """Draw ``masks`` (``k x h x w`` uint8, drawing positions ``first + 1``, ... ``first + k``)
    over ``rank`` (``h x w``, the drawing position of the top mask, 0: none), in place."""
    if masks.shape[0] == 1:
        rank.masked_fill_(masks[0].bool(), first + 1)
        return
    local = torch.arange(1, masks.shape[0] + 1, dtype=torch.uint8)[:, None, None]
    top = (masks * local).amax(0)  # the last of the chunk covering a pixel, 1-based
    rank.copy_(torch.where(top > 0, top.to(rank.dtype) + first, rank))


def draw_instances(out: dict, keep: torch.Tensor, pixels: torch.Tensor):
    """``(id map, overlay, RLEs)`` of the kept detections (``keep``: their indices, in the
    output's order) pasted one chunk at a time: the ``H x W`` uint16 id map (``i + 1`` for
    kept detection ``i``, the best-scoring on top, 0 = none), the ``H x W x 3`` uint8 overlay
    and one COCO RLE per kept detection. ``pixels`` (``3 x H x W`` uint8, channels-last memory
    as :func:`~pointrend.data.images.read_pixels` gives them) become the overlay: the photo is
    not copied."""
    from ..viz import overlay_ranked

    H, W = pixels.shape[-2:]
    scores = out["scores"][keep].cpu()
    order = torch.argsort(scores, stable=True)  # worst first: the best is drawn last, on top
    # W x H: the masks' own column-major layout (drawing order + 1 of the top mask, 0: none)
    dtype = torch.uint8 if len(keep) < 256 else torch.int32
    rank_t = torch.zeros(W, H, dtype=dtype)
    rles: list = [None] * len(keep)
    budget = min(1 << 26, 255 * H * W)  # <= 255 masks a chunk: uint8 positions below
    for positions, masks, (y0, y1, x0, x1) in binary_mask_chunks(
        out, keep[order], max_bytes=budget
    ):
        masks_t = masks.cpu().transpose(1, 2)  # k x W x H, contiguous
        encoded = mask_utils.encode(np.asfortranarray(masks_t.permute(2, 1, 0).numpy()))
        for position, rle in zip(positions.tolist(), encoded):
            rle["counts"] = rle["counts"].decode("ascii")
            rles[int(order[position])] = rle
        if y1 > y0 and x1 > x0:
            draw_on_top(rank_t[x0:x1, y0:y1], masks_t[:, x0:x1, y0:y1], int(positions[0]))
    rank = rank_t.numpy().T  # H x W view
    overlay = overlay_ranked(pixels, rank, len(keep), in_place=True)
    lookup = np.concatenate([[0], order.numpy() + 1]).astype(np.uint16)
    ids = lookup[rank]  # score rank -> instance id, H x W
    return ids, overlay, rles


def instance_records(trained, rles, boxes, labels, scores) -> list[dict]:
    """COCO-style result dicts of one image's kept detections (``category_id``: the dataset's
    id when the checkpoint records the map, else the model's label), for a
    :class:`~pointrend.engine.inference.TrainedModel` ``trained``; ``rles``: one per detection,
    ``boxes`` ``N x 4``, ``labels`` and ``scores`` ``N``."""
    to_category = trained.label_to_category_id or {}
    names = trained.class_names
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1).tolist()
    records = []
    for i, (rle, label, score, box) in enumerate(zip(rles, labels.tolist(), scores.tolist(), xywh)):
        records.append(
            {
                "instance_id": i + 1,
                "category_id": int(to_category.get(label, label)),
                "category": names[label] if label < len(names) else "",
                "score": round(float(score), 5),
                "bbox": [round(v, 2) for v in box],
                "segmentation": rle,
            }
        )
    return records
