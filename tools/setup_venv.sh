#!/usr/bin/env bash
# Creates the project-local Python environment `.venv` with torch 2.11.0 (the libtorch that tch 0.24 links
# against) and the Python packages the parity tests and baselines use. Does nothing when it is already complete.
# Called by the Makefile; safe to run by hand. Downloads about 4.6 GB from PyPI the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
STAMP=.venv/.cellseg-ready-v2
# Python packages for parity fixtures and baselines (never needed at run time).
TEST_PACKAGES=(
  "torchvision==0.26.0"
  "numpy<3"
  "pycocotools==2.0.11"
  "opencv-python-headless==4.12.0.88"
  "scipy"
  "scikit-learn"
  "timm==1.0.22"
  "safetensors"
  "tifffile"
  "pillow"
  "faster-coco-eval==1.8.0"
)

if [[ -f "$STAMP" && -e .libtorch/lib/libtorch_cpu.so ]]; then
  exit 0
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv with $($PY --version)" >&2
  "$PY" -m venv .venv
fi
echo "setup: installing torch==2.11.0 and test packages into .venv (about 4.6 GB, 1-3 minutes)" >&2
.venv/bin/python -m pip install --quiet --no-cache-dir --disable-pip-version-check "torch==2.11.0" "${TEST_PACKAGES[@]}"
# The seed's own library as the parity oracle (../shared/docs/ORACLES.md): mmdet 2.17.0 and mmcv 1.3.17 "lite"
# (no compiled ops; tools/mmdet_shim.py backs them with torchvision kernels). mmcv 1.3.17 is an sdist whose build
# needs `wheel`, hence --no-build-isolation; --no-deps keeps torch, numpy and opencv as installed above.
.venv/bin/python -m pip install --quiet --no-cache-dir --disable-pip-version-check wheel
MMCV_WITH_OPS=0 .venv/bin/python -m pip install --quiet --no-cache-dir --disable-pip-version-check \
  --no-build-isolation --no-deps \
  "mmcv==1.3.17" "mmdet==2.17.0" addict yapf platformdirs six terminaltables

TORCH_DIR=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
TORCH_VERSION=$(.venv/bin/python -c 'import torch; print(torch.__version__.split("+")[0])')
if [[ "$TORCH_VERSION" != "2.11.0" ]]; then
  echo "setup: .venv has torch $TORCH_VERSION, but tch 0.24 needs 2.11.0" >&2
  exit 1
fi
# A relative symlink keeps the checkout relocatable; .cargo/config.toml points LIBTORCH at it.
ln -sfn "$(realpath --relative-to=. "$TORCH_DIR")" .libtorch
touch "$STAMP"
echo "setup: libtorch at $(readlink .libtorch)" >&2
