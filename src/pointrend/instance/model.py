"""The PointRend Mask R-CNN model: torchvision's :class:`MaskRCNN` whose forward hands the RoI
heads the original image sizes (where the masks are pasted) as an argument.

torchvision's :meth:`GeneralizedRCNN.forward` gives the RoI heads only the resized images' sizes;
PointRend's per-box mask resolution (``mask_resolution="box"``) renders each box at about its
size in the output image, so its scale is needed before the paste. Everything else is
torchvision's: the same modules, state dict keys and outputs.
"""

from __future__ import annotations

from collections import OrderedDict

from torch import Tensor
from torchvision.models.detection import MaskRCNN

__all__ = ["PointRendMaskRCNN"]


class PointRendMaskRCNN(MaskRCNN):
    """:class:`MaskRCNN` with :class:`~pointrend.instance.roi_heads.PointRendRoIHeads` (same
    arguments). ``forward(images, targets=None)``: losses in training, detections (boxes,
    labels, scores, masks in the original images) in eval mode, as torchvision's."""

    def forward(
        self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None
    ) -> dict[str, Tensor] | list[dict[str, Tensor]]:
        if self.training and targets is None:
            raise ValueError("targets are needed in training mode (model.eval() to predict)")
        image_list, targets = self.transform(images, targets)  # checks images and targets
        original_sizes = [(image.shape[-2], image.shape[-1]) for image in images]
        features = self.backbone(image_list.tensors)
        if isinstance(features, Tensor):
            features = OrderedDict([("0", features)])
        proposals, proposal_losses = self.rpn(image_list, features, targets)
        detections, detector_losses = self.roi_heads(
            features, proposals, image_list.image_sizes, targets, output_sizes=original_sizes
        )
        if self.training:
            return {**detector_losses, **proposal_losses}
        return self.transform.postprocess(detections, image_list.image_sizes, original_sizes)
