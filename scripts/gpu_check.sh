#!/usr/bin/env bash
# The GPU check of benchmarks/gpu_check.py on a machine with one GPU: installs this checkout into
# a fresh virtual environment that reuses the machine's torch and torchvision (no CUDA wheel is
# downloaded), then runs the check; arguments go to it (e.g. --device cuda:1, --quick).
# Results: benchmarks/results/gpu.json. Exit status 1 when a parity or run check fails.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${GPU_CHECK_VENV:-$(mktemp -d)/venv}
"$PYTHON" -c "import torch, torchvision" || { echo "gpu_check: torch and torchvision must be installed for $PYTHON" >&2; exit 2; }
"$PYTHON" -m venv --system-site-packages "$VENV"
"$VENV/bin/python" -m pip install --quiet --no-build-isolation --no-deps -e .
# the package's other needs, where the machine lacks them
"$VENV/bin/python" -m pip install --quiet "pycocotools>=2.0.6" "pyyaml>=6.0" "tqdm>=4.60" "pillow>=9.0" || true
PYTHONUNBUFFERED=1 "$VENV/bin/python" -m benchmarks.gpu_check "$@"
