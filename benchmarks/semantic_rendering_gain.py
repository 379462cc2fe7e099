"""How much of a semantic PointRend model's lead is the rendering? Not a test.

Scores, on fresh synthetic images: the coarse baseline (upsampled), the PointRend model as it
runs (rendered to full resolution), and the same PointRend model with its coarse logits simply
upsampled (no point head). Prints mIoU and boundary F-score for each.

    python -m benchmarks.semantic_rendering_gain \
        src/pointrend/weights/synthetic_semantic_coarse_fpn_r18.pt \
        src/pointrend/weights/synthetic_semantic_pointrend_fpn_r18.pt --images 50 --seed 777
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from pointrend.data.synthetic import SyntheticSemanticDataset
from pointrend.engine.inference import load_trained_model
from pointrend.evaluation import SemanticEvaluator

ROWS = ("baseline", "rendered", "own coarse")  # the coarse model; PointRend; its coarse logits


@torch.no_grad()
def rendering_gain(baseline: str, pointrend: str, images: int, size: int, seed: int) -> dict:
    """mIoU / boundary F of the three ways (``ROWS``) on ``images`` fresh ``size x size`` images
    of seed ``seed``; ``baseline`` and ``pointrend`` are checkpoint paths."""
    base = load_trained_model(baseline).model
    ours = load_trained_model(pointrend).model
    dataset = SyntheticSemanticDataset(images, size, seed)
    scores = {name: SemanticEvaluator(dataset.num_classes, 255) for name in ROWS}
    for i in range(len(dataset)):
        image, labels = dataset[i]
        x = image[None]
        _, coarse = ours._features(x)
        up = F.interpolate(
            coarse, scale_factor=ours.coarse_stride, mode="bilinear", align_corners=False
        )
        predictions = {
            "baseline": base(x)["out"],
            "rendered": ours(x)["out"],
            "own coarse": up[..., : x.shape[-2], : x.shape[-1]],
        }
        for name, logits in predictions.items():
            scores[name].update(labels[None], logits.argmax(1))
    return {name: scores[name].evaluate() for name in ROWS}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.semantic_rendering_gain", description=__doc__.splitlines()[0]
    )
    parser.add_argument("baseline", help="coarse model checkpoint")
    parser.add_argument("pointrend", help="PointRend model checkpoint")
    parser.add_argument("--images", type=int, default=50)
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--seed", type=int, default=777)
    args = parser.parse_args(argv)
    metrics = rendering_gain(args.baseline, args.pointrend, args.images, args.size, args.seed)
    print(f"{args.images} images of {args.size}x{args.size}, seed {args.seed}")
    for name, m in metrics.items():
        print(f"{name:<12} mIoU {m['mIoU']:5.1f}  boundary F {m['boundary_f']:5.1f}")


if __name__ == "__main__":
    main()
