"""RoI heads for torchvision's Mask R-CNN with PointRend's mask branch.

:class:`PointRendRoIHeads` is a :class:`torchvision.models.detection.roi_heads.RoIHeads`: the box
branch (sampling, box head, ``postprocess_detections``) is torchvision's, its loss torchvision's
with a choice of smooth-L1 ``beta`` (:mod:`.losses`); the
mask branch is :class:`~pointrend.instance.mask_head.PointRendMaskBranch`.

* Training: returns ``loss_classifier``, ``loss_box_reg`` (torchvision's), ``loss_mask`` (coarse
  7x7) and ``loss_mask_point`` (196 points per positive box). The mask branch trains on the box
  head's boxes of the positive proposals, regressed for their ground-truth class (not clipped,
  no gradient; ``PointRendMaskConfig.train_on_pred_boxes``, detectron2's
  ``TRAIN_ON_PRED_BOXES``), or on the proposals with that option off.
* Inference: per image ``boxes``, ``labels``, ``scores`` and ``masks``, the latter ``N x 1 x M x M``
  box-relative probabilities (M = 224 by default) that the model's transform pastes into the
  image (:class:`~pointrend.instance.transform.PointRendTransform`). With
  ``mask_resolution="box"`` the masks are a :class:`~pointrend.instance.paste.MasksBySize`,
  each box at about its size in the output image: ``forward``'s ``output_sizes`` (the model
  passes the original image sizes); without them the output is the image itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.models.detection.roi_heads import RoIHeads

from .losses import TORCHVISION_BETA, box_head_losses
from .mask_head import PointRendMaskBranch
from .paste import MasksBySize
from .targets import FlatMasks

__all__ = ["PointRendRoIHeads", "output_scales", "check_training_targets"]


def output_scales(
    image_sizes: Sequence[Sequence[int]], output_sizes: Sequence[Sequence[int]]
) -> Tensor:
    """``N x 2`` float64 output pixels per image pixel ``(x, y)`` of each image.

    Args:
        image_sizes: ``(H, W)`` of each (resized) image the boxes are given in.
        output_sizes: ``(H, W)`` of each image's output (e.g. the original image).
    """
    if len(output_sizes) != len(image_sizes):
        raise ValueError(f"got {len(image_sizes)} image sizes but {len(output_sizes)} output sizes")
    pairs = zip(image_sizes, output_sizes)
    ratio = [(int(o[1]) / int(s[1]), int(o[0]) / int(s[0])) for s, o in pairs]
    return torch.tensor(ratio, dtype=torch.float64).reshape(-1, 2)


def check_training_targets(
    targets: list[dict[str, Tensor]], num_classes: int | None = None
) -> None:
    """Raise a ``ValueError`` naming the image, field and shape of the first bad target.

    Checks: ``boxes`` is ``N x 4`` float and finite, ``labels`` is ``N`` int64 (and in
    ``[1, num_classes)`` when given), ``masks`` (when present) is ``N x H x W``.
    """
    for i, t in enumerate(targets):
        for key in ("boxes", "labels"):
            if key not in t:
                raise ValueError(f"targets[{i}] has no {key!r} (keys: {sorted(t)})")
        boxes, labels = t["boxes"], t["labels"]
        if boxes.dim() != 2 or boxes.shape[1] != 4:
            raise ValueError(f"targets[{i}]['boxes'] must be N x 4, got shape {tuple(boxes.shape)}")
        if not boxes.is_floating_point():
            raise ValueError(f"targets[{i}]['boxes'] must be floating point, got {boxes.dtype}")
        if not torch.isfinite(boxes).all():
            bad = torch.where(~torch.isfinite(boxes).all(dim=1))[0][0]
            raise ValueError(
                f"targets[{i}]['boxes'][{int(bad)}] is not finite: {boxes[bad].tolist()}"
            )
        if labels.dtype != torch.int64:
            raise ValueError(f"targets[{i}]['labels'] must be int64, got {labels.dtype}")
        if labels.shape != (boxes.shape[0],):
            raise ValueError(
                f"targets[{i}]['labels'] has shape {tuple(labels.shape)} but there are "
                f"{boxes.shape[0]} boxes"
            )
        if num_classes is not None and labels.numel():
            bad_labels = (labels < 1) | (labels >= num_classes)
            if bad_labels.any():
                j = int(torch.where(bad_labels)[0][0])
                raise ValueError(
                    f"targets[{i}]['labels'][{j}] = {int(labels[j])} is outside [1, {num_classes}) "
                    "(0 is the background; num_classes counts it)"
                )
        if "masks" in t:
            masks = t["masks"]
            if masks.dim() != 3 or masks.shape[0] != boxes.shape[0]:
                raise ValueError(
                    f"targets[{i}]['masks'] must be N x H x W with N = {boxes.shape[0]} boxes, "
                    f"got shape {tuple(masks.shape)}"
                )


class PointRendRoIHeads(RoIHeads):
    """torchvision's RoI heads with PointRend's mask branch (``self.mask_branch``).

    Build it from an existing :class:`RoIHeads` with :meth:`from_roi_heads` (that is what the
    builders do), or with :class:`RoIHeads`'s box-branch arguments, by name, plus
    ``mask_branch``. torchvision's mask head arguments do not apply. ``mask_stride``: the stride
    in image pixels of the mask branch's feature map (``mask_branch.config.feature_key``), which
    the backbone knows (P2: 4). ``smooth_l1_beta``: of the box-regression loss (torchvision:
    1/9; detectron2's configs: 0, plain L1).
    """

    def __init__(
        self,
        *,
        mask_branch: PointRendMaskBranch,
        mask_stride: float = 4.0,
        smooth_l1_beta: float = TORCHVISION_BETA,
        **box_branch,
    ):
        super().__init__(**box_branch)
        self.mask_branch = mask_branch
        self.mask_stride = float(mask_stride)
        self.smooth_l1_beta = float(smooth_l1_beta)

    @staticmethod
    def box_branch_arguments(heads: RoIHeads) -> dict:
        """The box-branch arguments of :class:`RoIHeads` that rebuild ``heads``, by name
        (modules, matcher, sampler, box coder and post-processing settings)."""
        return dict(
            box_roi_pool=heads.box_roi_pool,
            box_head=heads.box_head,
            box_predictor=heads.box_predictor,
            fg_iou_thresh=heads.proposal_matcher.high_threshold,
            bg_iou_thresh=heads.proposal_matcher.low_threshold,
            batch_size_per_image=heads.fg_bg_sampler.batch_size_per_image,
            positive_fraction=heads.fg_bg_sampler.positive_fraction,
            bbox_reg_weights=heads.box_coder.weights,
            score_thresh=heads.score_thresh,
            nms_thresh=heads.nms_thresh,
            detections_per_img=heads.detections_per_img,
        )

    @classmethod
    def from_roi_heads(
        cls, heads: RoIHeads, mask_branch: PointRendMaskBranch, **options
    ) -> PointRendRoIHeads:
        """Take over the box branch (modules and settings) of ``heads``; drop its mask head
        (``options``: ``mask_stride``, ``smooth_l1_beta``)."""
        return cls(mask_branch=mask_branch, **options, **cls.box_branch_arguments(heads))

    def has_mask(self) -> bool:
        return True

    def check_targets(self, targets):
        if targets is None:
            raise ValueError("targets should not be None in training")
        check_training_targets(targets, self.mask_branch.num_classes)
        for i, t in enumerate(targets):
            if "masks" not in t:
                raise ValueError(f"targets[{i}] has no 'masks' (keys: {sorted(t)})")

    def forward(
        self,
        features: dict[str, Tensor],
        proposals: list[Tensor],
        image_shapes: list[tuple[int, int]],
        targets: list[dict[str, Tensor]] | None = None,
        output_sizes: Sequence[Sequence[int]] | None = None,
    ) -> tuple[list[dict[str, Tensor]], dict[str, Tensor]]:
        """Same contract as :meth:`RoIHeads.forward` (features, proposals per image, sizes).

        ``output_sizes``: ``(H, W)`` per image where the masks will be pasted (the original
        images), the scale of ``mask_resolution="box"``; ``None``: the images themselves.
        """
        if self.training:
            proposals, matched_idxs, labels, regression_targets = self.select_training_samples(
                proposals, targets
            )
        box_features = self.box_head(self.box_roi_pool(features, proposals, image_shapes))
        # scores and box decoding in float32 under autocast too
        class_logits, box_regression = (t.float() for t in self.box_predictor(box_features))

        fine = features[self.mask_branch.config.feature_key]
        stride = self.mask_stride
        if self.training:
            loss_classifier, loss_box_reg = box_head_losses(
                class_logits, box_regression, labels, regression_targets, self.smooth_l1_beta
            )
            losses = {"loss_classifier": loss_classifier, "loss_box_reg": loss_box_reg}
            mask_boxes = proposals
            if self.mask_branch.config.train_on_pred_boxes:
                mask_boxes = self.predicted_gt_class_boxes(box_regression, proposals, labels)
            losses.update(
                self._mask_losses(fine, stride, mask_boxes, labels, matched_idxs, targets)
            )
            return [], losses

        boxes, scores, labels = self.postprocess_detections(
            class_logits, box_regression, proposals, image_shapes
        )
        all_labels = torch.cat(labels)
        counts = [b.shape[0] for b in boxes]
        scales = None
        if output_sizes is not None and self.mask_branch.config.mask_resolution == "box":
            scales = output_scales(image_shapes, output_sizes)
        logits = self.mask_branch.predict(fine, stride, boxes, all_labels, scales)
        if isinstance(logits, MasksBySize):
            masks = logits.map(torch.sigmoid).split(counts)
        else:
            masks = logits.sigmoid().split(counts)  # shapes: traceable
        result = [
            {"boxes": b, "labels": lab, "scores": s, "masks": m}
            for b, lab, s, m in zip(boxes, labels, scores, masks)
        ]
        return result, {}

    @torch.no_grad()
    def predicted_gt_class_boxes(
        self, box_regression: Tensor, proposals: list[Tensor], labels: list[Tensor]
    ) -> list[Tensor]:
        """Each proposal's box regressed by the box head for its ground-truth class (the
        background's proposals: class 0's row, unused), not clipped, without gradient.

        Shapes: ``box_regression`` ``R x 4K``; ``proposals`` and ``labels`` per image
        ``R_i x 4`` and ``R_i``; returns per image ``R_i x 4``.
        """
        decoded = self.box_coder.decode(box_regression, proposals)  # R x K x 4
        classes = torch.cat(labels).clamp(0, decoded.shape[1] - 1)
        rows = torch.arange(decoded.shape[0], device=decoded.device)
        boxes = decoded[rows, classes].to(proposals[0].dtype)
        return list(boxes.split([len(p) for p in proposals]))

    def _mask_losses(
        self,
        fine: Tensor,
        stride: float,
        proposals: list[Tensor],
        labels: list[Tensor],
        matched_idxs: list[Tensor],
        targets: list[dict[str, Tensor]],
    ) -> dict[str, Tensor]:
        """The mask branch's losses on the positive proposals of the whole batch."""
        counts = [len(p) for p in proposals]
        all_labels = torch.cat(labels)
        positive = all_labels > 0
        device = all_labels.device
        image_of = torch.repeat_interleave(
            torch.arange(len(proposals), device=device), torch.tensor(counts, device=device)
        )[positive]
        gt = FlatMasks([t["masks"] for t in targets])
        mask_index = gt.first.to(device)[image_of] + torch.cat(matched_idxs)[positive]
        per_image = torch.bincount(image_of, minlength=len(proposals)).tolist()
        pos_boxes = torch.cat(proposals)[positive].split(per_image)
        return self.mask_branch.losses(
            fine, stride, pos_boxes, all_labels[positive], gt, mask_index
        )
