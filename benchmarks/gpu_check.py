"""The GPU path in one run (``--device cuda``; about 5 minutes on an H100), ``gpu.json``:

1. **parity**: the shipped instance model (fixed and per-box masks), the shipped semantic model
   and the imported detectron2 test fixture on the device against the CPU (same count, box IoU
   >= 0.999, mask IoU >= 0.99; semantic labels >= 99.9% equal);
2. **speed**: PointRend R50-FPN (fixed and per-box masks) and torchvision's Mask R-CNN at
   800 x 1333 with 100 detections forced, float32 and autocast, median of 3 calls; the
   Semantic FPN and DeepLabV3 PointRend models at 1024 x 2048; peak device memory of each; the
   host reads (``aten::_local_scalar_dense``) of one PointRend forward (random weights);
3. **train**: 50 AMP iterations of the synthetic instance recipe;
4. **torchrun**: ``torchrun --nproc_per_node=1`` (NCCL on CUDA) through 20 iterations and a
   checkpoint.

``--quick --device cpu`` (small sizes) is the smoke test the test suite runs. Run: ``python -m
benchmarks.gpu_check [--device cuda] [--quick]`` or ``bash scripts/gpu_check.sh``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import alternate, command_line, machine_info, write_json
from pointrend.engine.distributed import resolve_amp, resolve_device

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synthetic_instance_pointrend_r18.yaml"


@dataclass
class Sizes:
    instance: tuple[int, int] = (800, 1333)
    semantic: tuple[int, int] = (1024, 2048)
    detections: int = 100
    num_classes: int = 91  # COCO's, with the background
    backbone: str = "resnet50"
    rounds: int = 3
    train_iters: int = 50
    torchrun_iters: int = 20
    parity_images: int = 6


QUICK = Sizes((128, 192), (128, 256), 10, 4, "resnet18", 1, 2, 2, 2)


def _timed(model, inputs, device: torch.device, sizes: Sizes) -> dict:
    """Median seconds (after a warm-up call) and peak device memory of ``model(inputs)`` in
    float32 and under autocast: ``{precision: {"seconds", "peak_bytes", "output"}}``."""
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    out = {}
    for precision, dtype in (("fp32", None), ("amp", resolve_amp(True, device))):

        def run(dtype=dtype):
            with torch.no_grad(), torch.autocast(device.type, dtype, enabled=bool(dtype)):
                return model(inputs)

        output = run()
        seconds = alternate({"run": run}, sizes.rounds, warmup=False, sync=sync)["run"]
        out[precision] = {"seconds": statistics.median(seconds), "output": output}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            run()
        peak = int(torch.cuda.max_memory_allocated(device)) if device.type == "cuda" else None
        out[precision]["peak_bytes"] = peak
    return out


# --- 1. parity -----------------------------------------------------------------------------


def match_instances(ref: dict, other: dict) -> dict:
    """Same count; each reference detection's best same-class box IoU and mask IoU."""
    from torchvision.ops import box_iou

    ref, other = ({k: v.cpu().float() for k, v in d.items()} for d in (ref, other))
    out = {"count": len(ref["boxes"]), "other_count": len(other["boxes"])}
    if not len(ref["boxes"]) or not len(other["boxes"]):
        return out | {"min_box_iou": None, "min_mask_iou": None}
    iou = box_iou(ref["boxes"], other["boxes"]) * (ref["labels"][:, None] == other["labels"])
    best, j = iou.max(1)
    a, b = ref["masks"][:, 0] >= 0.5, other["masks"][j, 0] >= 0.5
    masks = (a & b).sum((1, 2)) / (a | b).sum((1, 2)).clamp(min=1)
    out |= {"min_box_iou": float(best.min()), "min_mask_iou": float(masks.min())}
    return out | {"max_score_diff": float((ref["scores"] - other["scores"][j]).abs().max())}


def instance_parity(cpu_model, dev_model, images, device) -> dict:
    """:func:`match_instances` per image, and whether every image passes."""
    with torch.no_grad():
        rows = [match_instances(cpu_model([x])[0], dev_model([x.to(device)])[0]) for x in images]
    close = [r["min_box_iou"] is None or r["min_box_iou"] >= 0.999 for r in rows]
    close = [c and (r["min_mask_iou"] or 1.0) >= 0.99 for c, r in zip(close, rows)]
    same = [r["count"] == r["other_count"] for r in rows]
    return {"images": rows, "pass": all(close) and all(same)}


def _detectron2_fixture(folder: Path) -> tuple[Path, list[torch.Tensor]]:
    """The detectron2 test fixture imported through the command line, and its images."""
    sys.path.insert(0, str(ROOT / "tests"))  # the fixture's generator is test tooling
    from detectron2_fixture import INSTANCE, d2_config_yaml, instance_weights, write_zoo_pkl

    from pointrend.cli import main
    from pointrend.data.images import read_image

    pkl = write_zoo_pkl(instance_weights(), folder / "model_final.pkl", "numpy.core")
    out = folder / "imported.pt"
    argv = ["import-detectron2", str(pkl), "--d2-config", str(d2_config_yaml(folder / "d2.yaml"))]
    if main([*argv, "--out", str(out)]) != 0:
        raise RuntimeError("import-detectron2 of the test fixture failed")
    return out, [read_image(p) for p in sorted(INSTANCE.glob("image_*.png"))]


def parity(device: torch.device, sizes: Sizes) -> dict:
    from pointrend.data.synthetic import SyntheticInstanceDataset, SyntheticSemanticDataset
    from pointrend.demo import SHIPPED, WEIGHTS_DIR
    from pointrend.engine.inference import load_trained_model

    def both(path, overrides=()):
        cpu = load_trained_model(path, None, list(overrides), "cpu").model
        return cpu, load_trained_model(path, None, list(overrides), device).model

    result, n = {}, sizes.parity_images
    images = [SyntheticInstanceDataset(n, 256, seed=4321)[i][0] for i in range(n)]
    for mode in ("fixed", "box"):
        option = [f"model.options.mask_resolution={mode}"]
        models = both(WEIGHTS_DIR / SHIPPED["pointrend"], option)
        result[f"shipped_instance_{mode}"] = instance_parity(*models, images, device)
    cpu, dev = both(WEIGHTS_DIR / SHIPPED["semantic_pointrend"])
    data = SyntheticSemanticDataset(n, 256, seed=4321)
    with torch.no_grad():
        labels = [(cpu(x[None]), dev(x[None].to(device))) for x in (data[i][0] for i in range(n))]
    agree = [
        float((a["out"].argmax(1) == b["out"].argmax(1).cpu()).float().mean()) for a, b in labels
    ]
    result["shipped_semantic"] = {"label_agreement": agree, "pass": min(agree) >= 0.999}
    with tempfile.TemporaryDirectory(prefix="pointrend-gpu-check-") as work:
        path, d2_images = _detectron2_fixture(Path(work))
        result["detectron2_fixture"] = instance_parity(*both(path), d2_images, device)
    return result


# --- 2. speed ------------------------------------------------------------------------------


def _instance_models(sizes: Sizes) -> dict:
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone

    from pointrend.models import pointrend_maskrcnn

    height, width = sizes.instance  # the image is not resized
    common = dict(box_score_thresh=0.0, box_detections_per_img=sizes.detections)
    common |= dict(min_size=height, max_size=width)
    models = {}
    for mode in ("fixed", "box"):
        torch.manual_seed(0)
        models[f"pointrend_{mode}"] = pointrend_maskrcnn(
            sizes.backbone, sizes.num_classes, mask_resolution=mode, **common
        )
    torch.manual_seed(0)
    backbone = resnet_fpn_backbone(backbone_name=sizes.backbone, weights=None, trainable_layers=3)
    models["torchvision_maskrcnn"] = MaskRCNN(backbone, sizes.num_classes, **common)
    return models


def _host_reads(model, images) -> int:
    """``aten::_local_scalar_dense`` calls (one per ``.item()`` / ``.tolist()`` / ``int()``
    of a tensor) in one forward pass."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        model(images)
    return sum(e.count for e in prof.key_averages() if e.key == "aten::_local_scalar_dense")


def speed(device: torch.device, sizes: Sizes) -> dict:
    from pointrend import models as builders

    torch.manual_seed(0)
    image = torch.rand(3, *sizes.instance, device=device)
    result = {"instance": {}, "semantic": {}}
    models = {name: m.to(device).eval() for name, m in _instance_models(sizes).items()}
    for name, model in models.items():
        for precision, row in _timed(model, [image], device, sizes).items():
            row["detections"] = len(row.pop("output")[0]["boxes"])
            result["instance"][f"{name}_{precision}"] = row
    for name, row in result["instance"].items():
        if name.startswith("pointrend"):
            baseline = result["instance"]["torchvision_maskrcnn_" + name.split("_")[-1]]
            row["vs_torchvision"] = row["seconds"] / baseline["seconds"]
    result["host_reads_per_forward"] = _host_reads(models["pointrend_fixed"], [image])
    del models
    batch = torch.rand(1, 3, *sizes.semantic, device=device)
    for name in ("semantic_fpn", "deeplabv3"):
        torch.manual_seed(0)
        model = getattr(builders, f"pointrend_{name}")(sizes.backbone, 19).to(device).eval()
        for precision, row in _timed(model, batch, device, sizes).items():
            del row["output"]
            result["semantic"][f"pointrend_{name}_{precision}"] = row
    return result


# --- 3. training ---------------------------------------------------------------------------


def _train_args(out: Path, iters: int, device: torch.device) -> list[str]:
    sets = [f"solver.max_iter={iters}", f"checkpoint_period={iters}", "log_period=1"]
    sets += ["solver.warmup_iters=0", "val_data=null"]
    args = ["train", str(CONFIG), "--out", str(out), "--no-progress", "--device", str(device)]
    return args + [part for s in sets for part in ("--set", s)]


def train_amp(device: torch.device, sizes: Sizes) -> dict:
    import json

    from pointrend.cli import main

    iters = sizes.train_iters
    with tempfile.TemporaryDirectory(prefix="pointrend-gpu-check-") as work:
        out = Path(work) / "run"
        start = time.perf_counter()
        code = main([*_train_args(out, iters, device), "--set", "solver.amp=true"])
        seconds = time.perf_counter() - start
        lines = (out / "metrics.jsonl").read_text().splitlines() if code == 0 else []
    records = [json.loads(line) for line in lines]
    losses = [r["loss"] for r in records if "loss" in r]
    start = next((r for r in records if r.get("event") == "start"), {})
    out = {"exit_code": code, "iterations": len(losses), "precision": start.get("precision")}
    out |= {
        "seconds_per_iter": seconds / max(len(losses), 1),
        "pass": code == 0 and len(losses) == iters,
    }
    return out | {"first_loss": (losses or [None])[0], "last_loss": (losses or [None])[-1]}


def torchrun_one_process(device: torch.device, sizes: Sizes) -> dict:
    iters = sizes.torchrun_iters
    with tempfile.TemporaryDirectory(prefix="pointrend-gpu-check-") as work:
        out = Path(work) / "run"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", "--standalone"]
        cmd += ["-m", "pointrend", *_train_args(out, iters, device)]
        # TMPDIR: torchrun's own scratch folder goes with the rest, not left in /tmp
        env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()), TMPDIR=work)
        start = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
        checkpoint = (out / f"model_{iters:07d}.pt").is_file()
    out = {"backend": "nccl" if device.type == "cuda" else "gloo", "exit_code": done.returncode}
    out |= {"seconds": time.perf_counter() - start, "checkpoint_written": checkpoint}
    out["pass"] = done.returncode == 0 and checkpoint and "world size 1" in done.stderr
    return out | {"stderr_tail": done.stderr[-800:]}


# --- the run ---------------------------------------------------------------------------------


def run_check(device: torch.device, sizes: Sizes, argv: list[str]) -> dict:
    result = {
        "command": command_line("benchmarks.gpu_check", argv),
        "machine": machine_info(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "cuda": torch.version.cuda,
        "sizes": sizes.__dict__,
    }
    sections = {"parity": parity, "speed": speed, "train_amp": train_amp}
    for name, section in (sections | {"torchrun": torchrun_one_process}).items():
        start = time.perf_counter()
        result[name] = section(device, sizes)
        print(f"gpu_check: {name} done in {time.perf_counter() - start:.1f} s", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__)
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default cuda)")
    parser.add_argument("--quick", action="store_true", help="small sizes: the CI smoke test")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "gpu.json"))
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    result = run_check(device, QUICK if args.quick else Sizes(), argv)
    checks = {f"parity/{k}": v["pass"] for k, v in result["parity"].items()}
    result["checks"] = checks | {k: result[k]["pass"] for k in ("train_amp", "torchrun")}
    print(f"gpu_check: wrote {write_json(result, args.out)}")
    for name, value in result["speed"]["instance"].items():
        ratio = (
            f" ({value['vs_torchvision']:.2f}x torchvision)" if "vs_torchvision" in value else ""
        )
        print(f"  {name}: {value['seconds'] * 1000:.1f} ms{ratio}")
    failed = [k for k, ok in result["checks"].items() if not ok]
    print("gpu_check: all checks passed" if not failed else f"gpu_check: FAILED {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
