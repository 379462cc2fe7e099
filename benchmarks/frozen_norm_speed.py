"""CPU time of an imported detectron2 PointRend R50-FPN: this checkout next to a baseline commit.

Both sides are the model the importer builds for the zoo config ``pointrend_rcnn_R_50_FPN_1x_coco``
(frozen batch norm, stride in the 1x1 conv, detectron2's resize rule and anchors), with the same
random weights (frozen statistics drawn away from the identity) and a score threshold of 0 (100
detections); torchvision's ImageNet mean / std replace detectron2's 0-255 scale, with which
random weights overflow (the cost is the same). The baseline is the package at ``--baseline`` (a
git ref, default ``main``), taken with ``git archive`` and imported under another name, so both
run in one process, on one 800 x 1333 image that the resize rule leaves as it is.

Timed in CPU seconds of the process (one thread: the work done, little changed by other
processes sharing the machine), the two sides alternated, median and minimum of ``--rounds``:
the backbone (ResNet-50 + FPN), the transform (normalise, resize rule, batch) and the whole
model; the backbone outputs of the two sides are compared too. Writes ``results.json``'s
``"frozen_norm_speed"``: ``python -m benchmarks.frozen_norm_speed [--rounds 3] [--baseline main]``.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import io
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import torch
from torchvision.ops.misc import FrozenBatchNorm2d

from . import common

BASELINE_PACKAGE = "pointrend_baseline"
ZOO_NAME = "pointrend_rcnn_R_50_FPN_1x_coco"
HEIGHT, WIDTH, DETECTIONS = 800, 1333, 100


def imported_options(package: str = "pointrend") -> tuple[str, int, dict]:
    """``(backbone, num_classes, options)`` the importer of ``package`` (this checkout's or the
    baseline's) gives :data:`ZOO_NAME`, with :data:`DETECTIONS` detections forced. Random
    weights overflow with detectron2's 0-255 input scale; torchvision's normaliser costs the same."""
    instance = importlib.import_module(f"{package}.interop.detectron2.instance")
    zoo = importlib.import_module(f"{package}.interop.detectron2.zoo")
    name, num_classes, options = instance.instance_options(zoo.zoo_config(ZOO_NAME))
    options |= {"box_score_thresh": 0.0, "box_detections_per_img": DETECTIONS}
    options |= {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    return name, num_classes, options


def resolve(ref: str) -> str:
    """The commit hash of git ``ref``."""
    out = subprocess.run(["git", "rev-parse", ref], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def load_baseline(ref: str, folder: Path):
    """The ``pointrend`` package of git ``ref``, imported as :data:`BASELINE_PACKAGE`."""
    command = ["git", "archive", "--format=tar", ref, "src/pointrend"]
    archive = subprocess.run(command, check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    root = folder / "src" / "pointrend"
    spec = importlib.util.spec_from_file_location(
        BASELINE_PACKAGE, root / "__init__.py", submodule_search_locations=[str(root)]
    )
    package = importlib.util.module_from_spec(spec)
    sys.modules[BASELINE_PACKAGE] = package
    spec.loader.exec_module(package)
    return package


def build(package: str, state: dict | None = None) -> torch.nn.Module:
    """The imported-style model from ``package`` (``pointrend`` or the baseline)."""
    models = importlib.import_module(f"{package}.models")
    name, num_classes, options = imported_options(package)
    torch.manual_seed(0)
    model = models.pointrend_maskrcnn(name, num_classes, **options).eval()
    if state is not None:
        model.load_state_dict(state)
        return model
    g = torch.Generator().manual_seed(0)  # frozen statistics away from the identity
    for norm in model.backbone.modules():
        if isinstance(norm, FrozenBatchNorm2d):
            n = norm.weight.shape[0]
            norm.running_var.copy_(0.75 + 0.5 * torch.rand(n, generator=g))
            norm.running_mean.copy_(0.1 * torch.randn(n, generator=g))
            norm.bias.copy_(0.1 * torch.randn(n, generator=g))
    return model


def main(argv: list[str] | None = None) -> dict:
    parser = common.arguments("frozen_norm_speed", __doc__.splitlines()[0], rounds=3)
    parser.add_argument("--baseline", default="main", help="git ref of the baseline (main)")
    args = common.parse(parser, argv)
    image = torch.rand(3, HEIGHT, WIDTH, generator=torch.Generator().manual_seed(0))
    commit = resolve(args.baseline)
    with tempfile.TemporaryDirectory() as folder:
        load_baseline(commit, Path(folder))
        current = build("pointrend")
        sides = {"current": current, "baseline": build(BASELINE_PACKAGE, current.state_dict())}
        with torch.no_grad():
            batches = {k: m.transform([image])[0].tensors for k, m in sides.items()}
            outputs = {k: m.backbone(batches[k]) for k, m in sides.items()}
            counts = {k: len(m([image])[0]["boxes"]) for k, m in sides.items()}
        parts = {
            "backbone": lambda m, k: m.backbone(batches[k]),
            "transform": lambda m, k: m.transform([image]),
            "whole_model": lambda m, k: m([image]),
        }
        samples = {
            part: common.alternate(
                {k: functools.partial(run, m, k) for k, m in sides.items()},
                args.rounds,
                clock=time.process_time,
            )
            for part, run in parts.items()
        }
    ours, theirs = outputs["current"], outputs["baseline"]
    differences = {level: float((ours[level] - theirs[level]).abs().max()) for level in ours}
    relative = max(d / float(theirs[level].abs().max()) for level, d in differences.items())
    medians = {part: common.medians(t) for part, t in samples.items()}
    minima = {part: {k: min(v) for k, v in t.items()} for part, t in samples.items()}
    section = {"baseline": args.baseline, "baseline_commit": commit, "image": [HEIGHT, WIDTH]}
    section |= {"threads": args.threads, "rounds": args.rounds, "detections": counts}
    section |= {"cpu_seconds": samples, "median_cpu_seconds": medians, "min_cpu_seconds": minima}
    section["current_over_baseline"] = {p: m["current"] / m["baseline"] for p, m in medians.items()}
    section["current_over_baseline_min"] = {
        p: m["current"] / m["baseline"] for p, m in minima.items()
    }
    section["backbone_max_abs_difference"] = max(differences.values())
    section["backbone_max_relative_difference"] = relative
    for part, m in medians.items():
        print(f"{part:12s} current {m['current']:.3f} s, baseline {m['baseline']:.3f} s (CPU)")
    print(f"backbone outputs: max |difference| {max(differences.values()):.2e} ({relative:.1e})")
    module = "benchmarks.frozen_norm_speed"
    print(
        f"wrote {common.store_section(Path(args.out), 'frozen_norm_speed', section, module, argv)}"
    )
    return section


if __name__ == "__main__":
    main()
