#!/usr/bin/env bash
# From a fresh clone: install, train an adapter on the built-in model with the sample data,
# then generate from it. Under 5 minutes on 2 CPU cores, install included.
# One epoch over the 300 sample rows (38 steps) with two validations: the adapter already writes
# E2E-style sentences; --dtype is auto (bfloat16 only where this hardware runs it faster).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
solo train --data sample_data/e2e --output runs/quickstart --epochs 1 --eval-every 19 --overwrite
solo inspect runs/quickstart/adapter.safetensors
prompt="name[Blue Spice], eatType[coffee shop], food[Italian], area[city centre]"
echo "prompt: $prompt"
echo -n "base:    "; solo generate --chat --max-new-tokens 48 "$prompt"
echo -n "adapter: "; solo generate --adapter runs/quickstart/adapter.safetensors --max-new-tokens 48 "$prompt"
