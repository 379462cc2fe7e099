"""Turn training runs into the small fp16 checkpoints the demo ships (src/pointrend/weights/).

    python scripts/ship_weights.py RUN_DIR [RUN_DIR ...] [--out src/pointrend/weights]

Each RUN_DIR's model_final.pt becomes <out>/<RUN_DIR name>.pt (weights in half precision, the
config, iteration, classes; no optimizer state).
"""

import argparse
from pathlib import Path

from pointrend.engine.inference import slim_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("src/pointrend/weights"))
    parser.add_argument("--checkpoint", default="model_final.pt")
    args = parser.parse_args()
    for run in args.runs:
        path = slim_checkpoint(run / args.checkpoint, args.out / f"{run.name}.pt")
        print(f"{run / args.checkpoint} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
