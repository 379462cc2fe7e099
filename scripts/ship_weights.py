"""Turn training runs into the small checkpoints the demo ships (src/pointrend/weights/).

    python scripts/ship_weights.py RUN_DIR [RUN_DIR ...] [--out src/pointrend/weights]

Each RUN_DIR's model_final.pt becomes <out>/<RUN_DIR name>.pt: large weight tensors in int8 with
one scale per output channel, the other float tensors in half precision, the config, iteration,
class count and names; no optimizer state. The package reads them back with
:func:`pointrend.engine.checkpoint.load_model_weights`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from pointrend.engine.build import build_dataset
from pointrend.engine.checkpoint import atomic_save, load_checkpoint
from pointrend.engine.config import config_from_dict
from pointrend.engine.train import dataset_facts


def quantize_state_dict(state: dict, min_elements: int = 4096) -> tuple[dict, dict]:
    """Weights for shipping: float tensors of at least 2 dimensions and ``min_elements`` elements
    as int8 with one scale per output channel (symmetric, ``w ~ q * scale``, ``scale`` of shape
    ``C_out``), other float tensors in fp16, the rest unchanged. Returns ``(state, scales)``."""
    out, scales = {}, {}
    for key, value in state.items():
        if not (torch.is_tensor(value) and value.is_floating_point()):
            out[key] = value
        elif value.dim() >= 2 and value.numel() >= min_elements:
            flat = value.float().reshape(value.shape[0], -1)
            scale = flat.abs().amax(1).clamp_min(1e-12) / 127.0
            quantized = (flat / scale[:, None]).round().clamp(-127, 127).to(torch.int8)
            out[key] = quantized.reshape(value.shape)
            scales[key] = scale
        else:
            out[key] = value.half()
    return out, scales


def slim_checkpoint(src: str | Path, dst: str | Path, quantize: bool = True) -> Path:
    """A small inference checkpoint from a training one: weights (int8 per channel for large
    tensors, fp16 for the rest, when ``quantize``), config, iteration, class count and names;
    no optimizer state. Loads with ``weights_only=True``."""
    ckpt = load_checkpoint(src)
    cfg = config_from_dict(ckpt["config"], where=f"config in {src}")
    state, scales = quantize_state_dict(ckpt["model"]) if quantize else (ckpt["model"], {})
    facts = {
        k: ckpt[k] for k in ("num_classes", "class_names", "label_to_category_id") if k in ckpt
    }
    if not facts:
        facts = dataset_facts(build_dataset(cfg.train_data, cfg.model.task, train=False))
    slim = {"model": state, "config": ckpt["config"], "iteration": ckpt.get("iteration"), **facts}
    if scales:
        slim["int8_scales"] = scales
    return atomic_save(slim, dst)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("src/pointrend/weights"))
    parser.add_argument("--checkpoint", default="model_final.pt")
    args = parser.parse_args(argv)
    for run in args.runs:
        path = slim_checkpoint(run / args.checkpoint, args.out / f"{run.name}.pt")
        print(f"{run / args.checkpoint} -> {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
