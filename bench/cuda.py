"""Training-step cost on a CUDA GPU: Solo's default adapter against peft LoRA (r=4 and r=1 on q,v) on
the built-in model, eager and with ``--compile`` (torch.compile'd decoder blocks, training/compiled.py),
float32 weights under bf16 autocast as `solo train` runs them there; then `solo train` itself, whose
tokens/s include its one host read per step.

    python bench/cuda.py            # writes bench/results/speed-cuda.json and speed-cuda.md (needs CUDA, peft)

Each configuration runs in its own process (its own peak memory and compile cache): --warmup steps,
then --steps timed steps, each between two CUDA synchronizations; a compiled configuration's first
step (the compile) is reported apart. Batch 32 x 64 tokens, as in ../shared/docs/reference-runs.md.
A run rewrites speed-cuda.json and .md whole: notes on what the figures mean are added by hand after it.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


CONFIGS = {  # name: (method, compiled)
    "solo-default": ("solo", False),
    "lora-r4": ("lora", False),
    "lora-r1": ("lora-r1", False),
    "solo-default --compile": ("solo", True),
    "lora-r4 --compile": ("lora", True),
}


def worker(name: str, opts) -> dict:
    import torch
    from common import E2E, encode, lora_method, read_jsonl, sample, solo_method, train

    from solo_cli.engine.models import load_model
    from solo_cli.training.compiled import compiled_blocks
    from solo_cli.training.config import TrainConfig

    method_name, compiled = CONFIGS[name]
    cuda = opts.device == "cuda"
    loaded = load_model("smollm2-135m", dtype="float32", device=opts.device)
    total = opts.warmup + opts.steps
    rows = sample(read_jsonl(E2E / "train.jsonl"), opts.batch * total * 2, seed=0)
    examples = [e for e in encode(rows, loaded.tokenizer, max_len=opts.seq) if len(e.input_ids) == opts.seq]
    while len(examples) < opts.batch * total:
        examples += examples
    base_bytes = torch.cuda.memory_allocated() if cuda else 0
    if method_name == "solo":
        d = TrainConfig()
        method = solo_method(name, loaded.model, d.connections, d.rank, d.gate, 1e-3, total)
    else:
        method = lora_method(name, loaded.model, 1e-3, total, rank=4 if method_name == "lora" else 1)
    pad, warm = loaded.tokenizer.pad_token_id, opts.batch * opts.warmup
    with compiled_blocks(method.model, compiled):
        first = train(method, examples[:warm], opts.warmup, opts.batch, pad, device=opts.device)["step_times"][0]
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        run = train(method, examples[warm:], opts.steps, opts.batch, pad, device=opts.device)
    timed = run["step_times"]
    return {
        "name": name,
        "params": method.params,
        "compiled": compiled,
        "first_step_s": round(first, 2),
        "step_ms": round(1000 * statistics.median(timed), 1),
        "step_ms_p10_p90": [round(1000 * x, 1) for x in statistics.quantiles(timed, n=10)[::8]] if len(timed) > 1 else None,
        "peak_mb_above_model": round((torch.cuda.max_memory_allocated() - base_bytes) / 2**20) if cuda else None,
        "final_loss": round(run["final_loss"], 4),
    }


def trainer_run(dtype: str, compiled: bool, opts, folder: Path) -> dict:
    """`solo train` on sample_data/e2e at batch 32 (speed.dtype_run): tokens/s after the 4th step, what it resolved."""
    from speed import dtype_run

    flags = ("--batch-size", "32", "--device", opts.device, "--log-every", "1") + (("--compile", "on") if compiled else ())
    try:
        run = dtype_run(dtype, opts, folder, max_steps=opts.trainer_steps, flags=flags, skip=4)
    except subprocess.CalledProcessError as failed:
        return {"dtype": dtype, "compile": compiled, "error": failed.stderr[-2000:]}
    return run | {"compile": compiled, "tokens_per_s": round(run["tokens_per_s"]), "final_loss": run["losses"][-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--trainer-steps", type=int, default=40)
    parser.add_argument("--only", default=None, help="comma-separated configurations (default: all)")
    parser.add_argument("--device", default="cuda", help="cuda; cpu only checks the plumbing (no autocast, no memory figures)")
    opts = parser.parse_args()
    if opts.worker:
        print(json.dumps(worker(opts.worker, opts)))
        return
    import torch

    names = opts.only.split(",") if opts.only else list(CONFIGS)
    steps = {}
    for name in names:
        cmd = [sys.executable, __file__, "--worker", name, "--steps", str(opts.steps), "--warmup", str(opts.warmup)]
        cmd += ["--batch", str(opts.batch), "--seq", str(opts.seq), "--device", opts.device]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ | {"TQDM_DISABLE": "1"})
        steps[name] = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 else {"error": proc.stderr[-2000:]}
        print(json.dumps(steps[name]), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = [trainer_run(d, c, opts, Path(tmp)) for d, c in (("float32", False), ("auto", False), ("auto", True))]
    report = {
        "command": "python bench/cuda.py " + shlex.join(sys.argv[1:]),
        "device": f"{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}"
        if opts.device == "cuda"
        else f"cpu, torch {torch.__version__} (a plumbing check, not a result)",
        "batch": f"{opts.batch} x {opts.seq} tokens",
        "timed_steps": opts.steps,
        "warmup_steps": opts.warmup,
        "steps": steps,
        "trainer": trainer,
    }
    (HERE / "results" / "speed-cuda.json").write_text(json.dumps(report, indent=2) + "\n")
    (HERE / "results" / "speed-cuda.md").write_text(markdown(report))
    print(markdown(report))


def markdown(report: dict) -> str:
    ok = {k: v for k, v in report["steps"].items() if "error" not in v}
    lora = ok.get("lora-r4", {}).get("step_ms")
    lines = [
        "# Training-step cost on CUDA",
        "",
        f"Command: `{report['command']}`. Device: {report['device']}. Batch {report['batch']}; float32 weights under "
        f"bf16 autocast; medians of {report['timed_steps']} timed steps after {report['warmup_steps']} warm-up steps, one process each.",
        "",
        "| configuration | trainable params | step (ms) | p10-p90 (ms) | vs LoRA r4 eager | first step (s) | peak GPU memory above the model (MB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in ok.items():
        ratio = f"{r['step_ms'] / lora:.2f}x" if lora else "-"
        spread = "-".join(str(x) for x in r["step_ms_p10_p90"] or ["-"])
        peak = "-" if r["peak_mb_above_model"] is None else r["peak_mb_above_model"]
        lines.append(f"| {name} | {r['params']:,} | {r['step_ms']} | {spread} | {ratio} | {r['first_step_s']} | {peak} |")
    lines += [
        "",
        "`solo train` on sample_data/e2e at batch 32 (tokens/s: median over the logged steps after the 4th):",
        "",
        "| --dtype | --compile | ran as | tokens/s | final loss | whole process (s) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in (r for r in report["trainer"] if "error" not in r):
        lines.append(
            f"| {r['dtype']} | {'yes' if r['compile'] else 'no'} | {r['resolved']} | {r['tokens_per_s']:,} | {r['final_loss']} | {r['process_s']} |"
        )
    failed = [k for k, v in report["steps"].items() if "error" in v]
    failed += [
        f"solo train --dtype {r['dtype']}{' --compile on' if r['compile'] else ''}" for r in report["trainer"] if "error" in r
    ]
    if failed:
        lines += ["", f"Failed: {', '.join(failed)} (the errors are in speed-cuda.json)."]
    lines += ["", *[f"- {n}" for n in report.get("notes", [])]] if report.get("notes") else []
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
