"""Mask-branch render time of two source trees side by side (CPU). Not a test.

Renders the masks of 100 boxes as ``benchmarks/instance_cost.py`` does (P2 of a padded
800 x 1344 image, ``1 x 256 x 200 x 336``; K = 80 classes; the default mask branch at output
224): each tree runs in its own subprocess (``PYTHONPATH=<tree>/src``), the two alternating,
``--rounds`` rounds, each subprocess timing ``--repeats`` renders after a warm-up one. Prints the
median of each tree over all its timings (wall clock, and the CPU time of the process, which
another load on the machine disturbs less) and the largest difference between the two trees'
masks (same seed, same weights).

Run: ``python benchmarks/head_speed_check.py --old /path/to/other/tree --new . [--mode box]``
(``--mode box``: the per-box mode, each box rendered at about its own size in pixels) (a tree is a
directory holding ``src/pointrend``, e.g. ``git archive <commit> src | tar -x -C /tmp/old``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

WORKER = """
import json, sys, time
import torch
torch.set_num_threads(1)
from pointrend.instance import PointRendMaskBranch, PointRendMaskConfig

size, repeats, out_path, mode = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
K, CHANNELS, HEIGHT, WIDTH = 80, 256, 800, 1333
g = torch.Generator().manual_seed(0)
features = torch.randn(1, CHANNELS, 200, 336, generator=g)  # P2 of a padded 800 x 1344 image
side = 32 + torch.rand(100, 2, generator=g) * 368  # boxes of 32 to 400 pixels a side
origin = torch.rand(100, 2, generator=g) * (torch.tensor([WIDTH, HEIGHT]) - side)
boxes = [torch.cat([origin, origin + side], dim=1)]
labels = torch.randint(1, K, (100,), generator=g)
torch.manual_seed(0)
branch = PointRendMaskBranch(CHANNELS, K, PointRendMaskConfig(output_size=size)).eval()
fine = features.contiguous(memory_format=torch.channels_last)  # as the RoI heads pass P2
if mode == "box":  # each box at about its own size in pixels (output = the image)
    def render():
        masks = branch.render_by_box_size(fine, 4.0, boxes, labels, torch.ones(1, 2))
        return [grid for _, grid in masks.groups]
else:
    def render():
        return [branch.render(fine, 4.0, boxes, labels)]
times = []
with torch.no_grad():
    masks = render()  # warm-up
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        render()
        times.append([time.perf_counter() - wall, time.process_time() - cpu])
torch.save(masks, out_path)
print(json.dumps(times))
"""


def run(tree: Path, size: int, repeats: int, out: Path, mode: str) -> list[list[float]]:
    """``repeats`` timings ``[wall s, CPU s]`` of one render in a subprocess on ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-c", WORKER, str(size), str(repeats), str(out), mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", type=Path, required=True, help="the reference source tree")
    parser.add_argument("--new", type=Path, default=Path("."), help="the tree to check")
    parser.add_argument("--size", type=int, default=224, help="rendered mask side")
    parser.add_argument(
        "--mode", choices=("fixed", "box"), default="fixed", help="mask_resolution rendered"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3, help="timed renders per subprocess")
    args = parser.parse_args()
    import torch

    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    samples: dict[str, list[list[float]]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {name: Path(tmp) / f"{name}.pt" for name in trees}
        for i in range(args.rounds):
            order = list(trees) if i % 2 == 0 else list(reversed(trees))  # alternate who starts
            for name in order:
                times = run(trees[name], args.size, args.repeats, outputs[name], args.mode)
                samples[name].extend(times)
                shown = " ".join(f"{wall:.3f} ({cpu:.3f} CPU)" for wall, cpu in times)
                print(f"round {i + 1} {name}: {shown}", flush=True)
        pairs = zip(torch.load(outputs["old"]), torch.load(outputs["new"]))
        difference = max((a - b).abs().max().item() for a, b in pairs)
    wall = {name: statistics.median(t[0] for t in times) for name, times in samples.items()}
    cpu = {name: statistics.median(t[1] for t in times) for name, times in samples.items()}
    what = f"output {args.size}" if args.mode == "fixed" else "per-box grids"
    print(f"{what}, 100 boxes, 1 thread, {args.rounds} rounds x {args.repeats}:")
    for name, tree in trees.items():
        print(f"  {name} ({tree}): median {wall[name]:.3f} s wall, {cpu[name]:.3f} s CPU")
    print(
        f"  new / old = {wall['new'] / wall['old']:.3f} wall, {cpu['new'] / cpu['old']:.3f} CPU; "
        f"largest mask logit difference {difference:.2e}"
    )


if __name__ == "__main__":
    main()
