"""Box-regression losses with detectron2's choice of smooth-L1 ``beta`` (training only).

torchvision's Mask R-CNN uses smooth L1 with ``beta = 1/9`` for the RPN's and the box head's
box deltas; detectron2's configs set ``RPN.SMOOTH_L1_BETA`` and ``ROI_BOX_HEAD.SMOOTH_L1_BETA``
to 0, plain L1. Both losses here are torchvision's with ``beta`` as an attribute (1/9 by
default: the same values as torchvision's), normalised as torchvision does (by the sampled
anchors of the batch, by the sampled proposals).

* :func:`box_head_losses`: ``(loss_classifier, loss_box_reg)`` of the box head.
* :class:`SmoothL1RPN`: torchvision's RPN whose ``compute_loss`` takes ``smooth_l1_beta``.
* :func:`init_box_head_`: the box head's initialisation, torchvision's or detectron2's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.detection.rpn import RegionProposalNetwork

__all__ = ["TORCHVISION_BETA", "BOX_HEAD_INITS", "box_head_losses", "SmoothL1RPN", "init_box_head_"]

TORCHVISION_BETA = 1 / 9
BOX_HEAD_INITS = ("torchvision", "detectron2")


def box_head_losses(
    class_logits: Tensor,
    box_regression: Tensor,
    labels: list[Tensor],
    regression_targets: list[Tensor],
    beta: float = TORCHVISION_BETA,
) -> tuple[Tensor, Tensor]:
    """Cross-entropy over all sampled proposals, and the smooth-L1 (``beta``; 0: L1) loss of the
    positive proposals' deltas for their class, summed and divided by the sampled proposals.

    Shapes: ``class_logits`` ``R x K``, ``box_regression`` ``R x 4K``; ``labels`` and
    ``regression_targets`` per image ``R_i`` and ``R_i x 4``.
    """
    labels_all = torch.cat(labels)
    targets = torch.cat(regression_targets)
    loss_classifier = F.cross_entropy(class_logits, labels_all)
    positive = torch.where(labels_all > 0)[0]
    deltas = box_regression.reshape(labels_all.shape[0], -1, 4)[positive, labels_all[positive]]
    loss = F.smooth_l1_loss(deltas, targets[positive], beta=beta, reduction="sum")
    return loss_classifier, loss / labels_all.numel()


class SmoothL1RPN(RegionProposalNetwork):
    """torchvision's RPN with the smooth-L1 ``beta`` of its box loss as ``smooth_l1_beta``.

    Turn a built RPN into one with :meth:`convert_` (no parameter changes).
    """

    smooth_l1_beta: float = TORCHVISION_BETA

    @classmethod
    def convert_(cls, rpn: RegionProposalNetwork, beta: float) -> RegionProposalNetwork:
        """``rpn`` itself, now of this class with ``smooth_l1_beta = beta``."""
        rpn.__class__ = cls
        rpn.smooth_l1_beta = float(beta)
        return rpn

    def compute_loss(
        self,
        objectness: Tensor,
        pred_bbox_deltas: Tensor,
        labels: list[Tensor],
        regression_targets: list[Tensor],
    ) -> tuple[Tensor, Tensor]:
        """``(loss_objectness, loss_rpn_box_reg)`` over the sampled anchors (``A`` anchors of
        the batch: ``objectness`` ``A x 1``, ``pred_bbox_deltas`` ``A x 4``)."""
        positive, negative = self.fg_bg_sampler(labels)
        positive = torch.where(torch.cat(positive))[0]
        negative = torch.where(torch.cat(negative))[0]
        sampled = torch.cat([positive, negative])
        labels_all = torch.cat(labels)
        targets = torch.cat(regression_targets)
        box_loss = (
            F.smooth_l1_loss(
                pred_bbox_deltas[positive],
                targets[positive],
                beta=self.smooth_l1_beta,
                reduction="sum",
            )
            / sampled.numel()
        )
        objectness_loss = F.binary_cross_entropy_with_logits(
            objectness.flatten()[sampled], labels_all[sampled]
        )
        return objectness_loss, box_loss


def init_box_head_(box_head: nn.Module, box_predictor: nn.Module, rule: str) -> None:
    """Initialise the two-layer box head and its predictor in place.

    ``"torchvision"``: left as built (``nn.Linear``'s defaults). ``"detectron2"``
    (``FastRCNNConvFCHead`` and ``FastRCNNOutputLayers``): the hidden layers
    ``kaiming_uniform_(a=1)`` (``c2_xavier_fill``) with zero bias, the classifier N(0, 0.01), the
    box deltas N(0, 0.001), zero biases.
    """
    if rule not in BOX_HEAD_INITS:
        raise ValueError(f"box_head_init must be one of {BOX_HEAD_INITS}, got {rule!r}")
    if rule == "torchvision":
        return
    for layer in box_head.modules():
        if isinstance(layer, nn.Linear):
            nn.init.kaiming_uniform_(layer.weight, a=1)
            nn.init.zeros_(layer.bias)
    for layer, std in ((box_predictor.cls_score, 0.01), (box_predictor.bbox_pred, 0.001)):
        nn.init.normal_(layer.weight, std=std)
        nn.init.zeros_(layer.bias)
