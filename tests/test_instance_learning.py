"""Learning: the point loss teaches the point head, in a tiny Mask R-CNN trained from scratch.

A fixed problem (two 64 x 64 images, a disc and a square each), 20 Adam steps through
``model(images, targets)`` with the ground-truth boxes (jittered) as proposals. The point head is
scored before and after on a 14 x 14 grid of points in every ground-truth box: binary
cross-entropy of its logit of the box's class against the mask at the point, and accuracy. With
the point loss it must learn the masks; with the point loss zeroed (the control) it must not,
so the gain is the point loss's.
"""

import pytest
import torch
from torch import nn

from pointrend.instance.mask_head import select_class
from pointrend.models import pointrend_maskrcnn
from pointrend.points import generate_regular_grid_point_coords

SIZE = 64
STEPS = 20
TINY = dict(
    min_size=SIZE,
    max_size=SIZE,
    box_head_dim=32,
    backbone_returned_layers=[1, 2],
    fpn_channels=32,
    rpn_anchor_sizes=[16, 32, 64],
    coarse_head_fc_dim=64,
    coarse_head_conv_dim=32,
)


def disc(cx: float, cy: float, r: float) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(SIZE) + 0.5, torch.arange(SIZE) + 0.5, indexing="ij")
    return (xs - cx) ** 2 + (ys - cy) ** 2 <= r**2


def tiny_problem():
    """Two images, each a bright disc and a dark square on grey, and their targets."""
    images, targets = [], []
    for shift in (0, 6):
        round_ = disc(20 + shift, 22, 13)
        square = torch.zeros(SIZE, SIZE, dtype=torch.bool)
        square[34 + shift : 58, 30 : 58 - shift] = True
        image = torch.full((3, SIZE, SIZE), 0.5)
        image[:, round_] = 0.9
        image[:, square] = 0.1
        masks = torch.stack([round_, square])
        corners = [
            (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) for ys, xs in map(torch.where, masks)
        ]
        images.append(image)
        targets.append(
            {
                "boxes": torch.tensor(corners, dtype=torch.float32),
                "labels": torch.tensor([1, 2]),
                "masks": masks.to(torch.uint8),
            }
        )
    return images, targets


class OracleRPN(nn.Module):
    """Proposals: the ground-truth boxes jittered by 5% of their size (8 per box), no RPN loss."""

    def forward(self, images, features, targets=None):
        boxes = [t["boxes"].repeat(8, 1) for t in targets]
        return [
            b + 0.05 * (b[:, 2:] - b[:, :2]).repeat(1, 2) * torch.randn(b.shape) for b in boxes
        ], {}


@torch.no_grad()
def point_head_fit(model, images, targets) -> tuple[float, float]:
    """BCE and accuracy of the point head (the box's class) at 14 x 14 points in every GT box."""
    model.eval()
    batch, scaled = model.transform(images, targets)
    fine = model.backbone(batch.tensors)["0"]  # P2, stride 4
    branch = model.roi_heads.mask_branch
    boxes = [t["boxes"] for t in scaled]
    coarse = branch.coarse_logits(fine, 4.0, boxes)
    points = generate_regular_grid_point_coords(coarse.shape[0], 14)
    logits, image_points = branch.point_logits(fine, 4.0, boxes, coarse, points)
    logits = select_class(logits, torch.cat([t["labels"] for t in scaled]))[:, 0]  # R x P
    masks = torch.cat([t["masks"] for t in scaled])  # R x H x W
    xy = image_points.long().clamp(0, SIZE - 1)
    labels = masks[torch.arange(len(masks))[:, None], xy[..., 1], xy[..., 0]].float()
    bce = nn.functional.binary_cross_entropy_with_logits(logits, labels).item()
    return bce, ((logits > 0) == (labels > 0.5)).float().mean().item()


def train_point_head(point_loss_weight: float):
    """The point head's fit before and after training with the point loss times the weight."""
    torch.manual_seed(0)
    images, targets = tiny_problem()
    model = pointrend_maskrcnn("resnet18", 3, **TINY)
    model.rpn = OracleRPN()
    before = point_head_fit(model, images, targets)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(STEPS):
        model.train()
        losses = model(images, targets)
        losses["loss_mask_point"] = losses["loss_mask_point"] * point_loss_weight
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
    return before, point_head_fit(model, images, targets)


@pytest.mark.parametrize("weight", [1.0, 0.0], ids=["point loss", "point loss zeroed"])
def test_the_point_loss_teaches_the_point_head(weight):
    (bce_before, acc_before), (bce_after, acc_after) = train_point_head(weight)
    assert bce_before > 0.6  # the untrained head: about chance
    if weight:
        assert bce_after < 0.5 * bce_before and acc_after > 0.9
        assert acc_after > acc_before + 0.1
    else:  # the control: the same training without the point loss leaves the head untaught
        assert bce_after > 0.9 * bce_before
