"""The model transform: torchvision's resize / normalise / batch, with PointRend's checks and paste.

:class:`PointRendTransform` is a :class:`GeneralizedRCNNTransform` that

* checks training targets before anything else and raises a ``ValueError`` that names the
  image, the field and the shape (masks whose size differs from their image, labels outside
  ``[1, num_classes)``, non-finite boxes, ...);
* drops ground-truth instances whose box has zero width or height (they have no area; left in,
  they make the box-regression targets infinite and match every anchor in the RPN);
* pastes the rendered ``M x M`` masks (or masks of several sizes) into the original image with
  :func:`~pointrend.instance.paste.paste_masks` (vectorised over boxes, the project's pixel-centre
  convention), instead of torchvision's per-box loop over 28x28 masks; ``mask_paste="detectron2"``
  pastes with zero padding outside the mask, so that values fade towards 0 at the box border;
* resizes as torchvision (``resize_rule="torchvision"``: the normalised float image, output
  size ``floor(side * scale)``) or as detectron2's ``ResizeShortestEdge`` (``"detectron2"``:
  sides rounded to the nearest pixel; the image quantised to 8 bits, ``round(x * 255)``, and
  resized by PIL's bilinear filter on uint8 before normalising, so the network sees detectron2's
  pixels bit for bit); ``min_size=0`` does not resize, nor does an image already at its size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.transform import GeneralizedRCNNTransform, resize_boxes

from .. import _tracing
from ..image_checks import as_model_dtype, check_images
from ..resize import quantise_to_uint8, resize_uint8_bilinear, shortest_edge_size
from .compact import MASK_OUTPUTS, compact_detections
from .paste import paste_masks
from .roi_heads import check_training_targets

__all__ = ["PointRendTransform", "drop_degenerate_instances", "check_mask_sizes"]

RESIZE_RULES = ("torchvision", "detectron2")
PASTE_RULES = ("pointrend", "detectron2")
PER_INSTANCE_KEYS = ("boxes", "labels", "masks", "area", "iscrowd", "keypoints", "scores")


def check_mask_sizes(images: list[Tensor], targets: list[dict[str, Tensor]]) -> None:
    """Raise a ``ValueError`` if any ``targets[i]["masks"]`` is not ``N x H x W`` of image ``i``."""
    if len(images) != len(targets):
        raise ValueError(f"got {len(images)} images but {len(targets)} targets")
    for i, (image, t) in enumerate(zip(images, targets)):
        if "masks" in t and tuple(t["masks"].shape[-2:]) != tuple(image.shape[-2:]):
            raise ValueError(
                f"targets[{i}]['masks'] has shape {tuple(t['masks'].shape)} but image {i} is "
                f"{tuple(image.shape[-2:])} (H x W): masks must be N x H x W at the image's size"
            )


def drop_degenerate_instances(target: dict[str, Tensor]) -> dict[str, Tensor]:
    """A copy of ``target`` without the instances whose box has zero (or negative) extent."""
    boxes = target["boxes"]
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    if bool(keep.all()):
        return target
    n = boxes.shape[0]
    return {
        k: (v[keep] if k in PER_INSTANCE_KEYS and v.dim() >= 1 and v.shape[0] == n else v)
        for k, v in target.items()
    }


class PointRendTransform(GeneralizedRCNNTransform):
    """torchvision's transform with target checks and the vectorised mask paste.

    Args:
        num_classes: K (including the background), to check labels; ``None`` skips that check.
        paste_max_elements: memory bound of the paste (see :func:`paste_masks`).
        mask_output: ``"dense"`` (``masks``: ``N x 1 x H x W`` probabilities, torchvision's
            contract) or ``"compact"`` (``mask_grids``: a
            :class:`~pointrend.instance.compact.CompactMasks`, pasted only when asked).
        Other arguments: those of :class:`GeneralizedRCNNTransform`, by name (``min_size``,
        ``max_size``, ``image_mean``, ``image_std``, ``size_divisible``, ``fixed_size``).
    """

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        paste_max_elements: int = 1 << 24,
        resize_rule: str = "torchvision",
        mask_paste: str = "pointrend",
        mask_output: str = "dense",
        **transform_arguments,
    ):
        super().__init__(**transform_arguments)
        if resize_rule not in RESIZE_RULES:
            raise ValueError(f"resize_rule must be one of {RESIZE_RULES}, got {resize_rule!r}")
        if mask_paste not in PASTE_RULES:
            raise ValueError(f"mask_paste must be one of {PASTE_RULES}, got {mask_paste!r}")
        if mask_output not in MASK_OUTPUTS:
            raise ValueError(f"mask_output must be one of {MASK_OUTPUTS}, got {mask_output!r}")
        if min(self.min_size) < 0 or (min(self.min_size) == 0 and max(self.min_size) > 0):
            raise ValueError(f"min_size must be > 0, or 0 alone (no resize), got {self.min_size}")
        # an empty buffer that model.half() / model.to(dtype) cast with the weights: the dtype
        # the images are cast to
        self.register_buffer("image_dtype", torch.empty(0), persistent=False)
        self.num_classes = num_classes
        self.paste_max_elements = paste_max_elements
        self.resize_rule = resize_rule
        self.mask_paste = mask_paste
        self.mask_output = mask_output

    @property
    def resizes(self) -> bool:
        """Whether images are resized (``min_size=0``: they are not)."""
        return self.fixed_size is not None or self.min_size[-1] > 0

    @staticmethod
    def transform_arguments(transform: GeneralizedRCNNTransform) -> dict:
        """The arguments of :class:`GeneralizedRCNNTransform` that rebuild ``transform``, by
        name (sizes, normalisation, batching)."""
        return dict(
            min_size=transform.min_size,
            max_size=transform.max_size,
            image_mean=transform.image_mean,
            image_std=transform.image_std,
            size_divisible=transform.size_divisible,
            fixed_size=transform.fixed_size,
        )

    @classmethod
    def from_transform(
        cls, transform: GeneralizedRCNNTransform, num_classes: int | None, **options
    ) -> PointRendTransform:
        """The same resizing and normalisation as ``transform``, with PointRend's checks and paste
        (``options``: ``resize_rule``, ``mask_paste``, ``mask_output``, ``paste_max_elements``)."""
        return cls(num_classes=num_classes, **options, **cls.transform_arguments(transform))

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> tuple[ImageList, list[dict[str, Tensor]] | None]:
        if not isinstance(images, list | tuple) or not images:
            what = type(images).__name__ if not isinstance(images, list | tuple) else "empty"
            raise ValueError(f"images must be a non-empty list of 3 x H x W tensors, got {what}")
        names = [f"images[{i}]" for i in range(len(images))]
        check_images(images, names)
        if not _tracing.is_tracing():  # traced sizes are not read into Python
            for image, name in zip(images, names):
                self._check_resized_size(image, name)
        images = [as_model_dtype(image, self.image_dtype.dtype) for image in images]
        if targets is not None:
            check_training_targets(targets, self.num_classes)
            check_mask_sizes(images, targets)
            targets = [drop_degenerate_instances(t) for t in targets]
        return super().forward(images, targets)

    def _keeps_size(self, image: Tensor) -> bool:
        """Whether torchvision's resize (eval size) gives ``image`` its own size: its output is
        ``floor(side * scale)`` with the float32 scale it computes."""
        if self.training:
            return False
        h, w = (int(s) for s in image.shape[-2:])
        limits = torch.tensor([self.min_size[-1], self.max_size], dtype=torch.float32)
        sides = torch.tensor([min(h, w), max(h, w)], dtype=torch.float32)
        scale = float((limits / sides).min())
        return (math.floor(h * scale), math.floor(w * scale)) == (h, w)

    def _check_resized_size(self, image: Tensor, name: str) -> None:
        """Refuse an image so elongated that resizing would leave a side of 0 pixels."""
        if not self.resizes or self.fixed_size is not None:
            return
        h, w = (int(s) for s in image.shape[-2:])
        scale = min(min(self.min_size) / min(h, w), self.max_size / max(h, w))
        if min(h, w) * scale < 1:
            raise ValueError(
                f"{name} is {h} x {w}: resized to min_size {list(self.min_size)} / max_size "
                f"{self.max_size} its short side would be 0 pixels; crop it or raise max_size"
            )

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """torchvision's resize (none when the size would not change). With the detectron2
        rule, :meth:`_resize_detectron2` (it also normalises, after resizing the 8-bit pixels).
        Traced in eval mode (export), the same rules without reading a size into Python
        (:func:`pointrend._tracing.resize_to_limits`).
        """
        if not self.resizes:
            return image, target
        if self.fixed_size is None and not self.training and _tracing.is_tracing():
            if target is not None:
                raise ValueError("targets are not traced: export the model with images only")
            half_up = self.resize_rule == "detectron2"
            resized = _tracing.resize_to_limits(image, self.min_size[-1], self.max_size, half_up)
            return resized, None
        if self.resize_rule == "detectron2" and self.fixed_size is None:
            return self._resize_detectron2(image, target)
        if self.fixed_size is None and self._keeps_size(image):
            return image, target  # resampling to the same size would change nothing
        return super().resize(image, target)

    def _pixels_after_resize(self) -> bool:
        """Whether this transform resizes the 8-bit pixels before normalising (detectron2's
        order): the detectron2 rule, in eager mode (traced, it resizes the normalised image)."""
        return (
            self.resize_rule == "detectron2"
            and self.fixed_size is None
            and self.resizes
            and not (_tracing.is_tracing() and not self.training)
        )

    def normalize(self, image: Tensor) -> Tensor:
        """torchvision's normalisation; with the detectron2 rule it is applied after the resize
        (in :meth:`resize`), so here the image passes as it is."""
        if self._pixels_after_resize():
            return image
        return super().normalize(image)

    def _resize_detectron2(
        self, image: Tensor, target: dict[str, Tensor] | None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Shortest side to ``min_size`` unless the longest would exceed ``max_size`` (then the
        longest to ``max_size``), each side rounded to the nearest pixel (``int(x + 0.5)``).

        detectron2's pixels: the ``[0, 1]`` image is quantised as an 8-bit photo
        (``round(x * 255)``, clamped: exact for an 8-bit image read as ``value / 255``),
        resized by PIL's bilinear filter on uint8 (antialiased when shrinking), then divided by
        255 and normalised. An image already at its output size is neither quantised nor
        resampled.

        Shapes: ``image`` ``3 x H x W`` -> ``3 x H' x W'``; target boxes and masks follow.
        """
        h, w = image.shape[-2:]
        short = float(self.torch_choice(self.min_size) if self.training else self.min_size[-1])
        new_size = shortest_edge_size(int(h), int(w), short, self.max_size)
        if new_size == (int(h), int(w)):
            return super().normalize(image), target
        pixels = resize_uint8_bilinear(quantise_to_uint8(image), new_size)
        image = super().normalize(pixels.to(image.dtype) / 255)
        if target is not None:
            target = dict(target)
            target["boxes"] = resize_boxes(target["boxes"], (h, w), image.shape[-2:])
            if "masks" in target:
                masks = target["masks"][:, None].float()
                target["masks"] = F.interpolate(masks, size=new_size)[:, 0].byte()
        return image, target

    def postprocess(
        self,
        result: list[dict[str, Tensor]],
        image_shapes: list[tuple[int, int]],
        original_image_sizes: list[tuple[int, int]],
    ) -> list[dict[str, Tensor]]:
        """Boxes back to the original image size; masks pasted there (``N x 1 x H x W``), or
        with ``mask_output="compact"`` kept box-local under ``mask_grids``
        (:class:`~pointrend.instance.compact.CompactMasks` at the original size)."""
        if self.training:
            return result
        # One image at a time: every image has its own output size. The paste is batched
        # over the image's boxes.
        fade_border = self.mask_paste == "detectron2"
        if self.mask_output == "compact" and not _tracing.is_tracing():
            return compact_detections(result, image_shapes, original_image_sizes, fade_border)
        for pred, size, original in zip(result, image_shapes, original_image_sizes):
            pred["boxes"] = resize_boxes(pred["boxes"], size, original)
            if "masks" in pred:
                pred["masks"] = paste_masks(
                    pred["masks"],
                    pred["boxes"],
                    original,
                    self.paste_max_elements,
                    fade_border=fade_border,
                )
        return result
