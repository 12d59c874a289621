#!/usr/bin/env bash
# Lint and run the whole test suite (installs everything first if .venv is missing).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/solo ]; then
  bash scripts/setup.sh
fi
. .venv/bin/activate
ruff check .
ruff format --check .
lint-imports
python -m pytest -q "$@"
