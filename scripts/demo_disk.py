"""Render a disk with the subdivision renderer and write a PNG of the steps.

An oracle stands in for a trained point head: its logit at a point is the signed distance (in
pixels of the 224x224 output, positive inside) to the disk's boundary. From the 7x7 coarse map,
5 subdivision steps with 784 points each reach 224x224.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from pointrend import calculate_uncertainty, dense_point_prediction, subdivision_inference  # noqa: E402


def disk_logits(points: torch.Tensor) -> torch.Tensor:
    """R x P x 2 points -> R x 1 x P signed distances to a disk, in 224-pixel units."""
    d = ((points[..., 0] - 0.47) ** 2 + (points[..., 1] - 0.53) ** 2).sqrt()
    return ((0.31 - d) * 224).unsqueeze(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="outputs/demo/subdivision_disk.png")
    args = parser.parse_args()
    start = time.perf_counter()
    coarse = dense_point_prediction(disk_logits, 1, (7, 7))
    out, steps = subdivision_inference(
        coarse, disk_logits, calculate_uncertainty, steps=5, num_points=784, return_steps=True
    )
    panels = [("coarse 7x7", coarse[0, 0], None)] + [
        (
            f"{s.size[0]}x{s.size[1]}, {s.point_indices.shape[1]} points",
            s.logits[0, 0],
            s.point_coords[0],
        )
        for s in steps
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3.2))
    for ax, (title, logits, pts) in zip(axes, panels):
        ax.imshow(
            (logits > 0).float().numpy(), cmap="gray", extent=(0, 1, 1, 0), interpolation="nearest"
        )
        if pts is not None and len(pts) < logits.numel():
            ax.scatter(pts[:, 0], pts[:, 1], s=0.5, c="red")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    total = sum(s.point_indices.shape[1] for s in steps)
    print(
        f"wrote {path}: {out.shape[-1]}x{out.shape[-2]} mask from {total} point predictions "
        f"(dense: {224 * 224}) in {time.perf_counter() - start:.2f}s"
    )


if __name__ == "__main__":
    main()
