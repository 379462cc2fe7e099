"""CPU latency of the exported models: onnxruntime vs eager PyTorch (and TorchScript).

The two CPU recipes (``configs/synthetic_semantic_pointrend_fpn_r18.yaml``,
``configs/synthetic_instance_pointrend_r18.yaml``) with seeded random weights, exported with
:mod:`pointrend.export`; the runtimes run the same input in turn (median of ``--repeats``). The
instance model runs with a score threshold of 0 (the config's maximum of 30 detections, each
rendered at 224 x 224 and pasted). The largest difference between onnxruntime's and PyTorch's
outputs is recorded too. ``python -m benchmarks.export_latency [--quick]`` writes
``benchmarks/results/export_latency.json``.
"""

from __future__ import annotations

import functools
import json
import statistics
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnxruntime
import torch

from pointrend.data.synthetic import CATEGORIES, SEMANTIC_CLASSES
from pointrend.engine.build import build_model
from pointrend.engine.config import load_config
from pointrend.export import INSTANCE_OUTPUTS, export_onnx, export_torchscript

from . import common

ROOT = Path(__file__).resolve().parent.parent
CASES = {  # task: (config, input shapes); classes: the synthetic datasets'
    "semantic": ("synthetic_semantic_pointrend_fpn_r18", [(1, 3, 160, 160), (1, 3, 512, 1024)]),
    "instance": ("synthetic_instance_pointrend_r18", [(3, 160, 160), (3, 480, 640)]),
}


def build(task: str, config: str) -> torch.nn.Module:
    overrides = ["model.options.box_score_thresh=0.0"] if task == "instance" else []
    cfg = load_config(ROOT / "configs" / f"{config}.yaml", overrides)
    num_classes = len(SEMANTIC_CLASSES) if task == "semantic" else len(CATEGORIES) + 1
    torch.manual_seed(0)
    return build_model(cfg.model, num_classes).eval()


def runners(model, task: str, folder: Path, threads: int) -> dict:
    """name -> function(input tensor) -> list of numpy outputs."""
    onnx_path = export_onnx(model, folder / f"{task}.onnx")
    traced = torch.jit.load(str(export_torchscript(model, folder / f"{task}.pt")))
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(onnx_path), options, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name

    def eager(x):
        with torch.no_grad():
            if task == "semantic":
                return [model(x)["out"].numpy()]
            out = model([x])[0]
            return [out[k].numpy() for k in INSTANCE_OUTPUTS]

    def torchscript(x):
        with torch.no_grad():
            out = traced(x)
        return [t.numpy() for t in (out if isinstance(out, tuple) else (out,))]

    def ort(x):
        return session.run(None, {name: x.numpy()})

    return {"eager": eager, "torchscript": torchscript, "onnxruntime": ort}


def max_difference(reference: list, other: list) -> float | None:
    if [r.shape for r in reference] != [o.shape for o in other]:
        return None  # different detections
    diffs = [np.abs(r.astype(np.float64) - o).max() for r, o in zip(reference, other) if r.size]
    return float(max(diffs, default=0.0))


def pixels_differing(reference: np.ndarray, other: np.ndarray, tol: float = 1e-4) -> dict:
    """Semantic: pixels where some class's logit differs by more than ``tol``, and the largest
    difference at the other pixels (a top-k near-tie swaps single cells between runtimes)."""
    diff = np.abs(reference.astype(np.float64) - other).max(axis=1)
    return {
        "pixels_over_1e-4": int((diff > tol).sum()),
        "pixels": int(diff.size),
        "max_abs_diff_other_pixels": float(diff[diff <= tol].max(initial=0.0)),
    }


def main(argv: list[str] | None = None) -> None:
    out = ROOT / "benchmarks/results/export_latency.json"
    parser = common.arguments("export_latency", __doc__.split("\n")[0], out, repeats=7)
    parser.add_argument("--quick", action="store_true", help="2 repeats, small inputs only")
    args = common.parse(parser, argv)
    repeats = 2 if args.quick else args.repeats
    warnings.simplefilter("ignore", FutureWarning)  # torch.jit.load is deprecated (still works)

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for task, (config, shapes) in CASES.items():
            model = build(task, config)
            run = runners(model, task, Path(folder), args.threads)
            for shape in shapes[:1] if args.quick else shapes:
                x = torch.rand(*shape, generator=torch.Generator().manual_seed(1))
                reference = run["eager"](x)
                samples = common.alternate(
                    {k: functools.partial(fn, x) for k, fn in run.items()}, repeats
                )
                ms = {k: 1000 * statistics.median(v) for k, v in samples.items()}
                row = {"model": config, "input": "x".join(map(str, shape))}
                row["detections"] = len(reference[0]) if task == "instance" else None
                row |= {f"{k}_ms": round(v, 1) for k, v in ms.items()}
                row["onnxruntime_speedup"] = round(ms["eager"] / ms["onnxruntime"], 2)
                row["max_abs_diff_onnxruntime"] = max_difference(reference, run["onnxruntime"](x))
                if task == "semantic":
                    row.update(pixels_differing(reference[0], run["onnxruntime"](x)[0]))
                rows.append(row)
                common.log(json.dumps(row))

    result = {"command": common.command_line("benchmarks.export_latency", argv)}
    result |= {"threads": args.threads, "repeats": repeats, "machine": common.machine_info()}
    result["versions"] = {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__}
    common.log(f"written to {common.write_json(result | {'rows': rows}, args.out)}")


if __name__ == "__main__":
    main()
