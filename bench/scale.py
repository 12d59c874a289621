"""Solo over big and quantized bases, against peft LoRA: peak training memory, step time, tokens/s and the memory
estimate (issue 20 item 4), side by side in one run; and (``--quality``) the validation loss over quantized bases.

    python bench/scale.py --quick                                    # smoke: a tiny base, every quantize x method, 1 step (temp folder)
    python bench/scale.py --bases smollm2-135m                       # CPU: the built-in model's shape, all 4 x 3 rows
    python bench/scale.py --bases tinyllama-1.1b --quantize nf4,bf16 # CPU: a 1.1B shape, some rows only (merged into the results)
    python bench/scale.py --device cuda --bases llama3-8b --batch 8 --seq 512   # a GPU: up to 8B shapes
    python bench/scale.py --quality                                  # the built-in model (real weights) on E2E: fp32, nf4, int8
    python bench/scale.py --quality --quick                          # smoke of the quality side (2 steps, temp folder)

Rows: (base, quantize, method) with quantize in fp32, bf16 (the base's weights in that dtype), nf4, int8
(bitsandbytes through transformers' ``quantization_config``, computing in ``--compute-dtype``) and method
in solo (``solo train``'s default connections and rank), lora-qv (peft LoRA r=8 on q_proj, v_proj), lora-all
(r=8 on every linear layer of the blocks: the usual QLoRA setting). Bases (bench/scale_bases.py) are real
families' shapes with random weights, built once and saved as bf16 safetensors. Each row runs alone in a
fresh process (bench/scale_worker.py); the methods of one (base, quantize) run one after the other, so that
their ratios see the same machine state. Rows already in the results (same key) are skipped unless
``--force``; a failed row is kept with its error and tried again next time. Results: bench/results/scale.json
and scale.md (``--quality``: scale-quality.json and .md), rewritten after every row.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from paths import with_root  # noqa: E402
from scale_bases import BASES, CPU_BASES, GPU_BASES  # noqa: E402
from scale_report import device_name, write_report  # noqa: E402

QUANTIZE = ("fp32", "bf16", "nf4", "int8")
METHODS = ("solo", "lora-qv", "lora-all")
QUALITY_QUANTIZE = ("fp32", "nf4", "int8")
QUALITY_METHODS = ("solo", "lora-all")
KEY = ("device", "base", "quantize", "compute_dtype", "method", "batch", "seq")
QUALITY_KEY = (*KEY, "steps", "lr")


def usage(message: str) -> None:
    """A bad flag: one line, exit 2."""
    print(f"bench/scale.py: {message}", file=sys.stderr)
    raise SystemExit(2)


def choices(text: str, allowed, flag: str) -> list[str]:
    picked = [x.strip() for x in text.split(",") if x.strip()]
    bad = [x for x in picked if x not in allowed]
    if bad or not picked:
        usage(f"{flag} {text!r}: use a comma-separated list of {', '.join(allowed)}")
    return picked


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quality", action="store_true", help="validation loss over quantized bases (the built-in model on E2E)")
    parser.add_argument("--quick", action="store_true", help="smoke: a tiny base (quality: 2 steps), results in a temp folder")
    parser.add_argument("--bases", default=None, help=f"comma list of {', '.join(BASES)} (default: the device's)")
    parser.add_argument(
        "--quantize", default=None, help="comma list of fp32, bf16, nf4, int8 (default: all; quality: fp32,nf4,int8)"
    )
    parser.add_argument(
        "--methods", default=None, help="comma list of solo, lora-qv, lora-all (default: all; quality: solo,lora-all)"
    )
    parser.add_argument("--batch", type=int, default=None, help="examples per step (default 1; quality 8)")
    parser.add_argument("--seq", type=int, default=None, help="tokens per example (default 256; quality: E2E rows cut at 128)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first (not with --quality)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 3; quality: training steps, 60)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (cuda:N)")
    parser.add_argument("--compute-dtype", default=None, choices=("float32", "bfloat16", "float16"),
                        help="what nf4 and int8 layers compute in (default bfloat16, QLoRA's; quality: float32)")  # fmt: skip
    parser.add_argument("--lr", type=float, default=None, help="quality: learning rate (default 2e-2 Solo, 1e-3 LoRA)")
    parser.add_argument("--valid-rows", type=int, default=256, help="quality: the first N rows of valid.jsonl")
    parser.add_argument("--threads", type=int, default=None, help="torch threads per row (default: torch's)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds a row may take before it is recorded as failed")
    parser.add_argument(
        "--re-estimate",
        action="store_true",
        help="recompute the estimates of the rows in the results (after an estimator change)",
    )
    parser.add_argument("--force", action="store_true", help="measure rows again even if the results have them")
    parser.add_argument("--out", default=None, help="results folder (default bench/results; --quick: a temp folder)")
    opts = parser.parse_args(argv)
    quality, quick, cuda = opts.quality, opts.quick, opts.device.startswith("cuda")
    default_bases = ["tiny"] if quick else (["smollm2-135m"] if quality else list(GPU_BASES if cuda else CPU_BASES))
    opts.bases = choices(opts.bases, BASES, "--bases") if opts.bases else default_bases
    opts.quantize = choices(opts.quantize or ",".join(QUALITY_QUANTIZE if quality else QUANTIZE), QUANTIZE, "--quantize")
    opts.methods = choices(opts.methods or ",".join(QUALITY_METHODS if quality else METHODS), METHODS, "--methods")
    if quality and opts.bases != ["smollm2-135m"] and not quick:
        usage("--quality runs on the built-in model (real weights): drop --bases")
    opts.batch = opts.batch if opts.batch is not None else (2 if quality and quick else 8 if quality else 1)
    opts.seq = opts.seq if opts.seq is not None else (32 if quick and not quality else 128 if quality else 256)
    opts.steps = opts.steps if opts.steps is not None else (2 if quality and quick else 60 if quality else 1 if quick else 3)
    opts.warmup = 0 if quality else (0 if quick and opts.warmup == 1 else opts.warmup)
    opts.compute_dtype = opts.compute_dtype or ("float32" if quality else "bfloat16")
    if quality and quick:
        opts.valid_rows = min(opts.valid_rows, 8)
    for name in ("batch", "seq", "steps", "valid_rows"):
        if getattr(opts, name) < 1:
            usage(f"--{name.replace('_', '-')} {getattr(opts, name)}: must be at least 1")
    opts.out = Path(opts.out) if opts.out else (Path(tempfile.mkdtemp(prefix="solo-scale-")) if quick else HERE / "results")
    return opts


def plan(opts) -> list[dict]:
    """The rows to measure, each (base, quantize)'s methods together."""
    rows = []
    for base in ["smollm2-135m"] if opts.quality else opts.bases:
        for quantize in opts.quantize:
            compute = {"fp32": "float32", "bf16": "bfloat16"}.get(quantize, opts.compute_dtype)
            for method in opts.methods:
                row = {"device": opts.device.split(":")[0], "base": base, "quantize": quantize, "compute_dtype": compute}
                row |= {"method": method, "batch": opts.batch, "seq": opts.seq}
                if opts.quality:
                    row |= {"steps": opts.steps, "lr": opts.lr}
                rows.append(row)
    return rows


def worker_command(row: dict, opts) -> list[str]:
    cmd = [sys.executable, str(HERE / "scale_worker.py"), "quality" if opts.quality else "measure", "--base", row["base"]]
    cmd += ["--quantize", row["quantize"], "--method", row["method"], "--batch", str(row["batch"]), "--seq", str(row["seq"])]
    cmd += ["--warmup", str(opts.warmup), "--steps", str(opts.steps), "--device", opts.device]
    cmd += ["--compute-dtype", opts.compute_dtype, "--valid-rows", str(opts.valid_rows)]
    if opts.quick:
        cmd += ["--bases-dir", str(opts.out / "bases")]
    if opts.lr is not None:
        cmd += ["--lr", str(opts.lr)]
    if opts.threads:
        cmd += ["--threads", str(opts.threads)]
    return cmd


def run_row(row: dict, opts) -> dict:
    """The worker's row for ``row``, or ``row`` with the error that ended it (its last line of output)."""
    # glibc returns freed blocks of 128 KiB and more to the system at once, so VmHWM measures what the tensors
    # hold rather than what the heap kept (with its default threshold, CPU peaks ran 20-45% above the tensors)
    quiet = {"TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1", "MALLOC_MMAP_THRESHOLD_": "131072"}
    env = with_root(quiet | os.environ)
    tick = time.perf_counter()
    try:
        done = subprocess.run(worker_command(row, opts), capture_output=True, text=True, env=env, timeout=opts.timeout)
    except subprocess.TimeoutExpired:
        return row | {"error": f"took over --timeout {opts.timeout:g} s"}
    wall = round(time.perf_counter() - tick, 1)
    if done.returncode != 0:
        lines = [x for x in (done.stderr or done.stdout).strip().splitlines() if x.strip()]
        return row | {"error": lines[-1] if lines else f"exit {done.returncode}", "wall_s": wall}
    return row | json.loads(done.stdout.strip().splitlines()[-1]) | {"wall_s": wall}


def load_results(path: Path) -> dict:
    if not path.exists():
        return {"commands": [], "devices": {}, "rows": []}
    return json.loads(path.read_text(encoding="utf-8"))


def main(argv=None) -> None:
    opts = parse(argv)
    name = "scale-quality" if opts.quality else "scale"
    opts.out.mkdir(parents=True, exist_ok=True)
    path = opts.out / f"{name}.json"
    results = load_results(path)
    command = "python bench/scale.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    results["commands"] = [c for c in results["commands"] if c != command] + [command]
    device = opts.device.split(":")[0]
    results["devices"][device] = device_name(opts.device)
    key = QUALITY_KEY if opts.quality else KEY
    if opts.re_estimate:
        if opts.quality:
            usage("--re-estimate recomputes the memory rows' estimates; drop --quality")
        re_estimate(results, path, opts)
        return
    todo = plan(opts)
    print(f"{len(todo)} rows -> {path}", flush=True)
    for n, row in enumerate(todo, 1):
        label = " ".join(str(row[k]) for k in key if k != "device")
        found = [r for r in results["rows"] if all(r.get(k) == row[k] for k in key)]
        if found and "error" not in found[0] and not opts.force:
            print(f"[{n}/{len(todo)}] {label}: in the results, skipped (--force measures it again)", flush=True)
            continue
        print(f"[{n}/{len(todo)}] {label} ...", flush=True)
        measured = run_row(row, opts)
        results["rows"] = [r for r in results["rows"] if r not in found] + [measured]
        path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
        write_report(results, opts.out / f"{name}.md", quality=opts.quality)
        print(f"    {summary(measured, opts.quality)}", flush=True)
    write_report(results, opts.out / f"{name}.md", quality=opts.quality)
    print(f"wrote {path} and {path.with_suffix('.md')}")


def re_estimate(results: dict, path: Path, opts) -> None:
    """Recompute every measured row's estimate with the current solo_cli.engine.memory_estimate (measures untouched)."""
    from types import SimpleNamespace

    from scale_bases import llama_config
    from scale_worker import estimate

    for row in results["rows"]:
        if "error" in row or "peak_bytes" not in row:
            continue
        shape = SimpleNamespace(method=row["method"], quantize=row["quantize"], batch=row["batch"], seq=row["seq"])
        guess = estimate(llama_config(row["base"]), shape, row["compute_dtype"])
        row["estimate_bytes"], row["estimate_parts"] = guess["total"], guess["parts"]
    path.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    write_report(results, opts.out / "scale.md", quality=False)
    print(f"re-estimated {path} and {path.with_suffix('.md')}")


def summary(row: dict, quality: bool) -> str:
    if "error" in row:
        return f"FAILED: {row['error']}"
    if quality:
        return f"valid loss {row['valid_loss']:.4f}, {row['train_s']} s training, load {row['load_s']} s"
    est = f", estimate {row['estimate_bytes'] / 2**20:.0f} MiB" if row.get("estimate_bytes") else ""
    return (
        f"peak {row['peak_bytes'] / 2**20:.0f} MiB{est}, step {row['step_s']:.3f} s, "
        f"{row['tokens_per_s']:.0f} tokens/s, load {row['load_s']} s (row {row['wall_s']} s)"
    )


if __name__ == "__main__":
    main()
