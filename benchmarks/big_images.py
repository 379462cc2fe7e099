"""Large photos through ``pointrend predict`` and ``pointrend eval``: peak memory and wall time.

Each figure is one command in a fresh process: its peak resident memory is the child's
``ru_maxrss`` (read by a small wrapper process), its wall time the command's, start-up and model
loading included. Runs (the shipped ``synthetic_instance_pointrend_r18`` and
``synthetic_semantic_pointrend_fpn_r18``): ``photo_100`` / ``photo_10`` ``predict`` on an
8000 x 6000 JPEG with 100 / 10 detections forced; ``photo_default`` the same at the defaults;
``eval_100`` / ``eval_10`` ``eval`` on 20 synthetic 2048 x 2048 images, 100 / 10 detections
each; ``semantic_4096x8192`` ``predict`` of the semantic model on a 4096 x 8192 JPEG and
``semantic_4096x8192_stages`` the peak RSS (``VmHWM``) after each stage of its forward pass;
``small_800x1333`` the median of ``--rounds`` ``predict`` runs on an 800 x 1333 JPEG;
``read_6000x4000`` the median time to read a 24-megapixel JPEG. ``--baseline-src DIR`` runs
``read_6000x4000``, ``photo_default``, ``small_800x1333`` and ``eval_10`` again with
``PYTHONPATH=DIR`` (e.g. the ``src`` of a ``git worktree`` of an earlier commit). The photos
are synthetic scenes enlarged and saved as JPEG (quality 90). Writes
``results.json["big_images"]``.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from pointrend.data.synthetic import render_sample
from pointrend.data.write import write_synthetic_dataset

from . import common

MODULE = "benchmarks.big_images"
REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "src" / "pointrend" / "weights"
INSTANCE = WEIGHTS / "synthetic_instance_pointrend_r18.pt"
SEMANTIC = WEIGHTS / "synthetic_semantic_pointrend_fpn_r18.pt"
INSTANCE_CONFIG = REPO / "configs" / "synthetic_instance_pointrend_r18.yaml"
FORCED = ["--score-thresh", "0", "--set", "model.options.box_score_thresh=0"]

# Runs the command given as arguments and prints its peak RSS (KiB on Linux) and wall seconds.
_WRAPPER = (
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n"
    "wall = time.perf_counter() - t\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, wall, code)\n"
)


def write_photo(path: Path, size: tuple[int, int], index: int = 0) -> Path:
    """A synthetic scene enlarged to ``size`` ``(H, W)``, saved as a JPEG (quality 90)."""
    small = render_sample(index, size[0] // 10, size[1] // 10, seed=7).image
    Image.fromarray(small).resize((size[1], size[0]), Image.BICUBIC).save(path, quality=90)
    return path


def _child(code: str, args: list[str], src: Path) -> str:
    """The output of ``python -c code args`` in a fresh process with ``PYTHONPATH=src``."""
    env = dict(os.environ, PYTHONPATH=str(src), OMP_NUM_THREADS="2")
    command = [sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout


def measure(args: list[str], src: Path) -> dict:
    """``python -m pointrend ARGS`` in a fresh process: peak RSS (MB) and wall time (s)."""
    text = _child(_WRAPPER, [sys.executable, "-m", "pointrend", *args], src)
    rss_kib, wall, code = text.split()
    if int(code) != 0:
        raise RuntimeError(f"pointrend {' '.join(args)} exited with {code}")
    return {"peak_rss_mb": round(int(rss_kib) / 1024, 1), "wall_s": round(float(wall), 2)}


def predict_run(image: Path, out: Path, src: Path, extra: list[str], weights=INSTANCE) -> dict:
    """``pointrend predict`` of one image; with the number of detections it wrote."""
    args = ["predict", str(image), "--weights", str(weights), "--out", str(out), "--no-progress"]
    result = measure([*args, *extra], src)
    predictions = out / "predictions.json"
    if predictions.is_file():
        images = json.loads(predictions.read_text())["images"]
        result["detections"] = sum(len(v) for v in images.values())
    return result


def eval_run(data: Path, out: Path, src: Path, detections: int) -> dict:
    """``pointrend eval`` on the COCO-format folder ``data``, ``detections`` per image."""
    sets = [
        "val_data.format=coco",
        f"val_data.images={data / 'images'}",
        f"val_data.annotations={data / 'annotations.json'}",
        "model.options.box_score_thresh=0",
        f"model.options.box_detections_per_img={detections}",
    ]
    args = ["eval", str(INSTANCE_CONFIG), "--weights", str(INSTANCE), "--no-progress"]
    args += [part for s in sets for part in ("--set", s)] + ["--out", str(out / "metrics.json")]
    return measure(args, src)


_STAGES = (
    "import json, sys, torch\n"
    "from pointrend.data.images import read_pixels, to_float_image\n"
    "from pointrend.engine.inference import load_trained_model\n"
    "def peak():  # this process's own high-water mark (ru_maxrss keeps the parent's at fork)\n"
    "    line = [s for s in open('/proc/self/status') if s.startswith('VmHWM')][0]\n"
    "    return round(int(line.split()[1]) / 1024, 1)\n"
    "m = load_trained_model(sys.argv[1]).model\n"
    "out = {'model_loaded': peak()}\n"
    "image = to_float_image(read_pixels(sys.argv[2]))[None]\n"
    "out['image_read'] = peak()\n"
    "with torch.no_grad():\n"
    "    features, coarse = m._features(image)\n"
    "    out['backbone_and_fpn'] = peak()\n"
    "    logits = m.render(features[m.fine_index], coarse)\n"
    "    del features, coarse\n"
    "    out['full_resolution_logits'] = peak()\n"
    "    out['logits_mb'] = round(logits.numel() * 4 / 2**20, 1)\n"
    "print(json.dumps(out))\n"
)


_READ = (
    "import statistics, sys, time\n"
    "from pointrend.data import images\n"
    "read = getattr(images, 'read_pixels', images.read_image)\n"
    "times = []\n"
    "for _ in range(int(sys.argv[2])):\n"
    "    t = time.perf_counter()\n"
    "    pixels = read(sys.argv[1])\n"
    "    times.append(time.perf_counter() - t)\n"
    "print(statistics.median(times), pixels.dtype)\n"
)


def read_time(image: Path, src: Path, rounds: int) -> dict:
    """Median seconds to read ``image`` with the tree's reader (``read_pixels`` where it
    exists, else ``read_image``), in a fresh process, after one untimed read."""
    seconds, dtype = _child(_READ, [image, rounds + 1], src).split()
    return {"read_s": round(float(seconds), 3), "dtype": dtype}


def semantic_stages(image: Path, src: Path) -> dict:
    """Peak RSS (MB) of the semantic model after each stage of its forward pass on ``image``
    (fresh process): what bounds the memory of a large semantic prediction."""
    return json.loads(_child(_STAGES, [SEMANTIC, image], src).strip().splitlines()[-1])


def run_all(work: Path, rounds: int, baseline: Path | None) -> dict:
    """Every run of the module docstring, in ``work``."""
    src = REPO / "src"
    photo = write_photo(work / "photo_8000x6000.jpg", (6000, 8000))
    street = write_photo(work / "street_4096x8192.jpg", (4096, 8192), index=1)
    small = write_photo(work / "small_800x1333.jpg", (800, 1333), index=2)
    phone = write_photo(work / "photo_6000x4000.jpg", (4000, 6000), index=3)
    data = write_synthetic_dataset("instance", work / "val_2048", 20, 2048, seed=1000).parent
    trees = {"this": src, **({"baseline": baseline} if baseline else {})}
    runs: dict = {name: {} for name in trees}
    folders = (work / f"out_{k}" for k in range(1000))
    fresh = functools.partial(next, folders)  # one output folder per run
    for name, tree in trees.items():
        common.log(f"[{name}] {tree}")
        runs[name]["read_6000x4000"] = read_time(phone, tree, rounds)
        runs[name]["photo_default"] = predict_run(photo, fresh(), tree, [])
        runs[name]["small_800x1333"] = _median_run(
            [predict_run(small, fresh(), tree, []) for _ in range(rounds)]
        )
        runs[name]["eval_10"] = eval_run(data, fresh(), tree, 10)
        if name == "this":
            for k in (100, 10):
                extra = [*FORCED, "--set", f"model.options.box_detections_per_img={k}"]
                runs[name][f"photo_{k}"] = predict_run(photo, fresh(), tree, extra)
            runs[name]["eval_100"] = eval_run(data, fresh(), tree, 100)
            runs[name]["semantic_4096x8192"] = predict_run(street, fresh(), tree, [], SEMANTIC)
            runs[name]["semantic_4096x8192_stages"] = semantic_stages(street, tree)
        for key, value in runs[name].items():
            common.log(f"  {key:<20} {value}")
    return runs


def _median_run(results: list[dict]) -> dict:
    """The run of median wall time, with every wall time."""
    ordered = sorted(results, key=lambda r: r["wall_s"])
    return {**ordered[len(ordered) // 2], "wall_s_all": [r["wall_s"] for r in results]}


def checks(runs: dict) -> dict:
    """The figures derived from ``runs``: the peak added by 90 more detections in ``predict``,
    and ``eval``'s peak at 100 detections over its peak at 10 (the runs hold the rest)."""
    peak = {key: run.get("peak_rss_mb") for key, run in runs["this"].items()}
    added, ratio = peak["photo_100"] - peak["photo_10"], peak["eval_100"] / peak["eval_10"]
    return {"photo_10_to_100_added_mb": round(added, 1), "eval_100_over_10_peak": round(ratio, 3)}


def main(argv: list[str] | None = None) -> None:
    parser = common.arguments("big_images", __doc__.split("\n")[0], rounds=3)
    parser.add_argument("--baseline-src", type=Path, help="src/ of the code to compare with")
    args = common.parse(parser, argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="pointrend-big-") as work:
        runs = run_all(Path(work), args.rounds, args.baseline_src)
    section = {"runs": runs, "checks": checks(runs), "rounds": args.rounds}
    section["baseline_src"] = str(args.baseline_src) if args.baseline_src else None
    section["bench_s"] = round(time.perf_counter() - start, 1)
    for key, value in section["checks"].items():
        common.log(f"  {key}: {value}")
    common.log(f"wrote {common.store_section(Path(args.out), 'big_images', section, MODULE, argv)}")


if __name__ == "__main__":
    main()
