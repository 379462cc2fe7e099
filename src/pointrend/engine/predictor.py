"""One-call inference: :class:`Predictor` takes photos in any usual form and returns thresholded
results with class names.

```python
from pointrend import Predictor

predictor = Predictor("zoo:pointrend_rcnn_R_50_FPN_3x_coco")  # or a checkpoint, or a model
result = predictor("photo.jpg")  # a path, a PIL image, an H x W x 3 array or a 3 x H x W tensor
result["class_names"], result["scores"], result["masks"]  # N names, N scores, N x H x W bool
```

The photo goes through what ``pointrend predict`` does with it: EXIF orientation applied to
files, uint8 pixels shrunk to the model's input size before the float conversion, the score
threshold given to the model (masks below it are never rendered), masks pasted at the photo's
size from their box-local grids.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data.images import SIXTEEN_BIT, read_pixels
from ..instance.compact import paste_compact
from .inference import TrainedModel, load_trained_model
from .photos import detect_photo

__all__ = ["Predictor", "as_pixels"]


def as_pixels(image) -> Tensor:
    """``3 x H x W`` pixels of a path, a PIL image, an ``H x W x 3`` (or ``H x W``) numpy array
    or a ``3 x H x W`` tensor: uint8 as they are, uint16 (16-bit photos) and floating point as
    float32 in ``[0, 1]`` (uint16 divided by 65535, as 16-bit image files are read)."""
    if isinstance(image, str | Path):
        return read_pixels(image)
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        image = np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[:, :, None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4):
            raise ValueError(f"a numpy image must be H x W x 3 (RGB), got shape {image.shape}")
        if image.dtype == np.uint16:  # torch has few uint16 kernels: converted here
            image = image.astype(np.float32) / SIXTEEN_BIT
        image = torch.from_numpy(np.array(image[:, :, :3], copy=True)).permute(2, 0, 1)
    if not torch.is_tensor(image):
        raise ValueError(
            f"an image must be a path, a PIL image, a numpy array or a tensor, got "
            f"{type(image).__name__}"
        )
    if image.dim() != 3 or image.shape[0] != 3 or 0 in image.shape:
        raise ValueError(
            f"an image must be 3 x H x W with H, W >= 1, got shape {tuple(image.shape)}"
        )
    if image.dtype == torch.uint8:
        return image
    if image.dtype == getattr(torch, "uint16", None):  # torch >= 2.3
        return image.to(torch.float32) / SIXTEEN_BIT
    if not image.is_floating_point():
        raise ValueError(f"an image must be uint8, uint16 or floating point, got {image.dtype}")
    return image.to(torch.float32)


class Predictor:
    """Thresholded predictions with class names from a trained model.

    Args:
        weights: a checkpoint path, ``zoo:NAME`` (a published model, downloaded once) or a
            :class:`~pointrend.engine.inference.TrainedModel`.
        score_thresh: instance models: detections scoring at least this are kept.
        device: ``auto`` (default), ``cpu``, ``cuda`` or ``cuda:N``.
        masks: ``"dense"`` (``N x H x W`` bool masks) or ``"compact"`` (a
            :class:`~pointrend.instance.compact.CompactMasks`: box-local grids, for large
            photos; :func:`~pointrend.instance.compact.paste_compact` pastes any of them).
        amp: ``None`` (float32), ``torch.float16`` or ``torch.bfloat16`` autocast.

    Calling it on one image returns a dict; on a list, a list of dicts. Instance models:
    ``boxes`` (``N x 4`` XYXY pixels), ``scores``, ``labels``, ``class_names`` (``N`` names)
    and ``masks``. Semantic models: ``labels`` (``H x W`` class index) and ``class_names``
    (the model's classes, by index).
    """

    def __init__(self, weights, score_thresh=0.5, device=None, masks="dense", amp=None):
        if masks not in ("dense", "compact"):
            raise ValueError(f"masks must be 'dense' or 'compact', got {masks!r}")
        if not 0 <= score_thresh <= 1:
            raise ValueError(f"score_thresh must be in [0, 1], got {score_thresh}")
        trained = weights
        if not isinstance(weights, TrainedModel):
            trained = load_trained_model(weights, device=device)
        self.trained, self.score_thresh, self.masks, self.amp = trained, score_thresh, masks, amp

    @classmethod
    def from_zoo(cls, name: str, **kwargs) -> Predictor:
        """A predictor of the published model ``name`` (:func:`pointrend.models.from_zoo`)."""
        return cls(f"zoo:{name}", **kwargs)

    @property
    def class_names(self) -> list[str]:
        return list(self.trained.class_names)

    def __call__(self, images):
        if isinstance(images, list | tuple):
            return [self._predict(as_pixels(image)) for image in images]
        return self._predict(as_pixels(images))

    @torch.no_grad()
    def _predict(self, pixels: Tensor) -> dict:
        device = self.trained.device
        enabled = self.amp is not None
        with torch.autocast(device.type, dtype=self.amp, enabled=enabled):
            if self.trained.task == "instance":
                return self._instances(pixels)
            return self._semantic(pixels)

    def _instances(self, pixels: Tensor) -> dict:
        trained = self.trained
        out, keep = detect_photo(trained.model, pixels, self.score_thresh, trained.device)
        labels = out["labels"][keep].cpu()
        names = self.trained.class_names
        result = {
            "boxes": out["boxes"][keep].float().cpu(),
            "scores": out["scores"][keep].float().cpu(),
            "labels": labels,
            "class_names": [names[k] if k < len(names) else str(k) for k in labels.tolist()],
        }
        if "mask_grids" not in out:  # a model without box-local masks: its dense output
            result["masks"] = (out["masks"][keep, 0] >= 0.5).cpu()
        elif self.masks == "compact":  # the model's threshold was score_thresh: all are kept
            result["masks"] = out["mask_grids"]
        else:
            result["masks"] = paste_compact(out["mask_grids"], index=keep.cpu()).cpu()
        return result

    def _semantic(self, pixels: Tensor) -> dict:
        image = pixels.float().div(255) if pixels.dtype == torch.uint8 else pixels
        logits = self.trained.model(image[None].to(self.trained.device))["out"]
        return {"labels": logits[0].argmax(0).cpu(), "class_names": self.class_names}
