"""Cost of Solo vs LoRA on the built-in model: training step time and peak memory, generation speed,
adapter file size and `solo inspect` time. Medians of interleaved repetitions after warm-up.

    python bench/speed.py --quick          # < 3 minutes on 2 cores; last line is JSON
    python bench/speed.py                  # full run: writes bench/results/speed.json and speed.md

Each training measurement runs in its own process so that its peak memory (VmHWM, reset after the
model is loaded) belongs to that adapter alone.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

DEFAULT_SOLO = ("solo-default", "chain", 2, "schedule")  # solo train's default (chain:5 on 30 blocks, r=2)
TOPOLOGIES = [
    ("solo-top:2-r16", "top:2", 16, "schedule"),
    ("solo-0->29", "0->29", 16, "schedule"),
    ("solo-10->20", "10->20", 16, "schedule"),
    ("solo-mirror:4", "mirror:4", 16, "schedule"),
]


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def worker(args) -> None:
    """One process, one adapter: warm-up steps, timed steps, peak memory above the loaded model."""
    import torch
    from common import E2E, encode, load_base, lora_method, read_jsonl, sample, solo_method, train

    loaded = load_base(args.dtype)
    rows = sample(read_jsonl(E2E / "train.jsonl"), args.batch * (args.steps + args.warmup), seed=0)
    # fixed-length examples: the prompt and completion cut so every example is exactly --seq tokens
    examples = [e for e in encode(rows, loaded.tokenizer, max_len=args.seq) if len(e.input_ids) == args.seq]
    while len(examples) < args.batch * (args.steps + args.warmup):
        examples += examples
    total = args.steps + args.warmup
    if args.method == "lora":
        method = lora_method("lora", loaded.model, 1e-3, total)
    else:
        name, spec, rank, gate = next(t for t in [DEFAULT_SOLO, *TOPOLOGIES] if t[0] == args.method)
        method = solo_method(name, loaded.model, spec, rank, gate, 1e-3, total)
    train(method, examples[: args.batch * args.warmup], args.warmup, args.batch, loaded.tokenizer.pad_token_id)
    base_rss = _rss_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak (VmHWM) to the current RSS
    stats = train(method, examples[args.batch * args.warmup :], args.steps, args.batch, loaded.tokenizer.pad_token_id)
    peak = _rss_kb("VmHWM")
    print(
        json.dumps(
            {
                "method": args.method,
                "params": method.params,
                "step_times": stats["step_times"],
                "peak_mb": peak / 1024,
                "overhead_mb": (peak - base_rss) / 1024,
                "threads": torch.get_num_threads(),
            }
        )
    )


def run_worker(method: str, opts) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--steps",
        str(opts.steps),
        "--warmup",
        str(opts.warmup),
        "--batch",
        str(opts.batch),
        "--seq",
        str(opts.seq),
        "--dtype",
        opts.dtype,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ | {"TQDM_DISABLE": "1"})
    return json.loads(out.stdout.strip().splitlines()[-1])


def generation_speed(opts, adapter_dir: Path) -> dict:
    """Greedy tokens/s for the bare base, base + Solo and base + LoRA (unmerged), interleaved."""
    import torch
    from common import load_base, lora_method, median, solo_method

    from solo_cli import save_adapter
    from solo_cli.engine.adapter_file import AdapterInfo

    loaded = load_base(opts.dtype)
    model, tok = loaded.model, loaded.tokenizer
    ids = tok(["name[Blue Spice], eatType[coffee shop], area[city centre]"] * opts.gen_batch, return_tensors="pt")
    settings = {
        "max_new_tokens": opts.gen_tokens,
        "min_new_tokens": opts.gen_tokens,
        "do_sample": False,
        "pad_token_id": tok.pad_token_id,
    }

    def tokens_per_s() -> float:
        tick = time.perf_counter()
        with torch.no_grad():
            model.generate(**ids, **settings)
        return opts.gen_batch * opts.gen_tokens / (time.perf_counter() - tick)

    solo = solo_method("solo", model, DEFAULT_SOLO[1], DEFAULT_SOLO[2], DEFAULT_SOLO[3], 1e-3, 10)
    from solo_cli.engine.blocks import fingerprint

    solo_file = save_adapter(
        adapter_dir / "solo" / "adapter.safetensors",
        solo.adapter,
        AdapterInfo(solo.adapter.config, fingerprint(model), "smollm2-135m"),
    )
    solo.detach()
    results = {"base": [], "solo": [], "lora": []}
    tokens_per_s()  # warm-up
    for _ in range(opts.gen_reps):
        results["base"].append(tokens_per_s())
        solo = solo_method("solo", model, DEFAULT_SOLO[1], DEFAULT_SOLO[2], DEFAULT_SOLO[3], 1e-3, 10)
        results["solo"].append(tokens_per_s())
        solo.detach()
        lora = lora_method("lora", model, 1e-3, 10)
        results["lora"].append(tokens_per_s())
        if _ == 0:
            lora.peft_model.save_pretrained(adapter_dir / "lora")
        lora.detach()
    lora_file = adapter_dir / "lora" / "adapter_model.safetensors"
    return {
        "gen_tokens_per_s": {k: median(v) for k, v in results.items()},
        "adapter_bytes": {"solo": solo_file.stat().st_size, "lora": lora_file.stat().st_size},
        "solo_adapter": str(solo_file),
    }


def inspect_seconds(adapter: str, reps: int) -> float:
    from common import median

    times = []
    for _ in range(reps):
        tick = time.perf_counter()
        subprocess.run([sys.executable, "-m", "solo_cli", "inspect", adapter, "--json"], capture_output=True, check=True)
        times.append(time.perf_counter() - tick)
    return median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Default Solo vs LoRA only, few repetitions (< 3 min).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--gen-batch", type=int, default=1)
    parser.add_argument("--gen-reps", type=int, default=None)
    opts = parser.parse_args()
    if opts.worker:
        opts.method = opts.worker
        return worker(opts)
    from common import median

    opts.steps = opts.steps or (3 if opts.quick else 5)
    opts.reps = opts.reps or (2 if opts.quick else 3)
    opts.gen_reps = opts.gen_reps or (2 if opts.quick else 5)
    methods = ["solo-default", "lora"] + ([] if opts.quick else [t[0] for t in TOPOLOGIES])
    samples: dict[str, list] = {m: [] for m in methods}
    started = time.perf_counter()
    for _ in range(opts.reps):  # interleaved: every method once per round
        for m in methods:
            samples[m].append(run_worker(m, opts))
    training = {}
    for m, runs in samples.items():
        times = [t for r in runs for t in r["step_times"]]
        training[m] = {
            "params": runs[0]["params"],
            "step_s": median(times),
            "peak_mb": median([r["peak_mb"] for r in runs]),
            "overhead_mb": median([r["overhead_mb"] for r in runs]),
        }
    with tempfile.TemporaryDirectory() as tmp:
        gen = generation_speed(opts, Path(tmp))
        inspect_s = inspect_seconds(gen.pop("solo_adapter"), 3 if opts.quick else 5)
    solo, lora = training["solo-default"], training["lora"]
    summary = {
        "solo_step_s": solo["step_s"],
        "lora_step_s": lora["step_s"],
        "step_ratio": solo["step_s"] / lora["step_s"],
        "solo_peak_mb": solo["peak_mb"],
        "lora_peak_mb": lora["peak_mb"],
        "peak_ratio": solo["peak_mb"] / lora["peak_mb"],
        "solo_overhead_mb": solo["overhead_mb"],
        "lora_overhead_mb": lora["overhead_mb"],
        "overhead_ratio": solo["overhead_mb"] / max(1e-9, lora["overhead_mb"]),
        "gen_ratio_solo_vs_base": gen["gen_tokens_per_s"]["solo"] / gen["gen_tokens_per_s"]["base"],
        "inspect_s": inspect_s,
        "seconds": round(time.perf_counter() - started, 1),
    }
    report = {
        "setup": {
            "model": "smollm2-135m",
            "dtype": opts.dtype,
            "batch": opts.batch,
            "seq": opts.seq,
            "timed_steps_per_rep": opts.steps,
            "reps": opts.reps,
            "threads": 2,
            "command": "python bench/speed.py" + (" --quick" if opts.quick else ""),
        },
        "training": training,
        **gen,
        "summary": summary,
    }
    if not opts.quick:
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "results" / "speed.json").write_text(json.dumps(report, indent=2) + "\n")
        (HERE / "results" / "speed.md").write_text(markdown(report))
    print(json.dumps(summary))


def markdown(report: dict) -> str:
    s = report["setup"]
    lines = [
        f"# Speed: Solo vs LoRA ({s['model']}, {s['dtype']}, batch {s['batch']} x {s['seq']} tokens, 2 CPU threads)",
        "",
        f"Command: `{s['command']}`. Medians of {s['reps']} interleaved rounds x {s['timed_steps_per_rep']} timed steps "
        "after 2 warm-up steps, one process per measurement.",
        "",
        "| adapter | trainable params | step (s) | vs LoRA | peak RSS (MB) | peak above loaded model (MB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lora = report["training"]["lora"]
    for name, t in report["training"].items():
        lines.append(
            f"| {name} | {t['params']:,} | {t['step_s']:.3f} | {t['step_s'] / lora['step_s']:.2f}x | "
            f"{t['peak_mb']:.0f} | {t['overhead_mb']:.0f} |"
        )
    g = report["gen_tokens_per_s"]
    lines += ["", "| generation (greedy, batch 1, 32 tokens) | tokens/s | vs bare base |", "| --- | --- | --- |"]
    for name in ("base", "solo", "lora"):
        lines.append(f"| {name} | {g[name]:.1f} | {g[name] / g['base']:.2f}x |")
    b = report["adapter_bytes"]
    lines += [
        "",
        f"Adapter files: Solo default {b['solo']:,} bytes, LoRA r=4 q,v {b['lora']:,} bytes. "
        f"`solo inspect --json` on the Solo file: {report['summary']['inspect_s']:.2f} s (a whole process).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
