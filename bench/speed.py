"""Cost of Solo vs LoRA on the built-in model: training step time and peak memory, `--dtype auto` vs
float32 throughput and loss, a table of quality against step time for the plans, generation speed,
adapter file size and `solo inspect` time. Medians of interleaved repetitions after warm-up.

    python bench/speed.py --quick   # default Solo vs LoRA r=4, auto vs float32 (and bfloat16): ~8 min on 2 cores
    python bench/speed.py --ab      # default Solo vs LoRA r=4 step only, 6 interleaved rounds: the ratio's spread (~8 min)
    python bench/speed.py           # full run: + the plans' step times, generation and inspect (~15 min)

Both write bench/results/speed.json and speed.md with the command and device. Each step-time
measurement runs in its own process so that its peak memory (VmHWM, reset after the model is
loaded) belongs to that adapter alone; each dtype run is a real `solo train` process on
sample_data/e2e, read back from its metrics.jsonl and config.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from paths import with_root  # noqa: E402


def _default_solo() -> tuple:
    from solo_cli.training.config import TrainConfig

    d = TrainConfig()
    return ("solo-default", d.connections, d.rank, d.gate)


DEFAULT_SOLO = _default_solo()  # solo train's default (chain = chain:5 + emb->4 on 30 blocks)
# The plans of the reference runs (../shared/docs/reference-runs.md) and of bench/e2e.py --protocol proxy.
TOPOLOGIES = [
    ("solo-chain:2-r2", "chain:2", 2, "schedule"),
    ("solo-chain:1-r1", "chain:1", 1, "schedule"),
    ("solo-emb-r2", ",".join(f"emb->{j}" for j in range(1, 30)), 2, "schedule"),
]
LORAS = {"lora": 4, "lora-r1": 1}  # peft LoRA on q_proj, v_proj at rank r
# Quality of each plan. full: bench/results/e2e-full.json (one H200, the whole E2E train set, 1 epoch at
# batch 64; validation loss and BLEU on the 630 test MRs, greedy, mean over seeds), else the nearest run of
# ../shared/docs/reference-runs.md (one H100, the same protocol, solo 0.1). proxy: bench/results/e2e-proxy.json
# (CPU, 1,024 E2E rows, 1 epoch; validation loss, mean over its seeds).
QUALITY = {
    "solo-default": {"proxy": None, "full": "solo-chain-r3-rms-2e-2"},
    "lora": {"proxy": "ref-lora-r4-1e-2", "full": "lora-r4-1e-2"},
    "lora-r1": {"proxy": "ref-lora-r1-5e-3", "full": "lora-r1-5e-3"},
    "solo-chain:2-r2": {"proxy": None, "full": "solo-c2-r2-rms-2e-2"},
    "solo-chain:1-r1": {"proxy": "ref-solo-c1-r1", "reference": ("Solo chain:1 r1 schedule, lr 2e-2 (solo 0.1)", 1.0506, 0.6595)},
    "solo-emb-r2": {"proxy": "ref-solo-emb-r2", "reference": ("Solo emb->1..29 r2 schedule, lr 2e-2 (solo 0.1)", 1.0438, 0.6565)},
}
DTYPES = ("auto", "float32", "bfloat16")  # bfloat16 shows what auto decided against


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
    if args.method in LORAS:
        method = lora_method(args.method, loaded.model, 1e-3, total, rank=LORAS[args.method])
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
                "backprop_blocks": backprop_blocks(method),
                "step_times": stats["step_times"],
                "peak_mb": peak / 1024,
                "overhead_mb": (peak - base_rss) / 1024,
                "threads": torch.get_num_threads(),
            }
        )
    )


def backprop_blocks(method) -> int:
    """Blocks the backward pass runs through.

    LoRA trains q_proj and v_proj in every block, so all of them. A Solo connection ``i -> j`` adds
    to block j's *output*, so autograd records only the blocks above the lowest destination.
    """
    from solo_cli import fingerprint

    blocks = fingerprint(method.model).num_blocks
    if method.kind == "lora":
        return blocks
    return blocks - 1 - min(j for _, j in method.adapter.config.connections)


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


def dtype_run(dtype: str, opts, folder: Path, max_steps: int | None = None, flags: tuple = (), skip: int = 2) -> dict:
    """One `solo train --dtype DTYPE [FLAGS]` on sample_data/e2e: tokens/s (median after ``skip`` steps), the
    loss curve, what auto chose. Raises CalledProcessError when the run fails."""
    out = folder / "-".join([dtype, *(f.lstrip("-") for f in flags)])
    cmd = [sys.executable, "-m", "solo_cli", "train", "--data", str(ROOT / "sample_data" / "e2e"), "--output", str(out)]
    cmd += ["--max-steps", str(max_steps or opts.dtype_steps), "--dtype", dtype, "--eval-every", "100000", "--seed", "0", *flags]
    tick = time.perf_counter()
    subprocess.run(cmd, capture_output=True, text=True, check=True, env=with_root(os.environ | {"TQDM_DISABLE": "1"}))
    seconds = time.perf_counter() - tick
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
    steps = [r for r in records if "loss" in r]
    config = json.loads((out / "config.json").read_text())
    from common import median

    return {
        "dtype": dtype,
        "resolved": config.get("dtype_resolved", dtype),
        "reason": config.get("dtype_reason", ""),
        "tokens_per_s": median([r["tokens_per_s"] for r in steps[skip:] or steps]),
        "losses": [r["loss"] for r in steps],
        "valid_loss": next((r["valid_loss"] for r in reversed(records) if "valid_loss" in r), None),
        "process_s": round(seconds, 1),
    }


def dtype_runs(opts) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        return {d: dtype_run(d, opts, Path(tmp)) for d in DTYPES}


def plan_quality() -> dict:
    """Each plan's quality from the sources named in QUALITY (full-protocol runs: the mean over their seeds)."""
    proxy = json.loads((HERE / "results" / "e2e-proxy.json").read_text())["runs"]
    full = json.loads((HERE / "results" / "e2e-full.json").read_text())
    table = {}
    for name, q in QUALITY.items():
        losses = [r["valid_loss"] for r in proxy if r["name"] == q["proxy"]]
        runs = [r for r in full["runs"] if r["name"] == q.get("full") and r.get("valid_loss") and r.get("bleu")]
        if runs:
            label = f"{q['full']} ({len(runs)} seed{'s' if len(runs) > 1 else ''}, {full['device']})"
            loss, bleu = (sum(r[k] for r in runs) / len(runs) for k in ("valid_loss", "bleu"))
        else:
            label, loss, bleu = q.get("reference", ("-", None, None))
        table[name] = {
            "proxy_run": q["proxy"],
            "proxy_valid_loss": sum(losses) / len(losses) if losses else None,
            "full_run": label,
            "full_valid_loss": loss,
            "full_bleu": bleu,
        }
    return table


def device() -> str:
    import torch

    from solo_cli.engine.precision import cpu_flags

    flags = sorted(f for f in cpu_flags() if "bf16" in f or f.startswith("amx"))
    return (
        f"cpu: {platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'x86'} "
        f"(bf16 flags: {', '.join(flags) or 'none'}; torch {torch.__version__}, capability {torch.backends.cpu.get_cpu_capability()})"
    )


def inspect_seconds(adapter: str, reps: int) -> float:
    from common import median

    times = []
    for _ in range(reps):
        tick = time.perf_counter()
        subprocess.run([sys.executable, "-m", "solo_cli", "inspect", adapter, "--json"], capture_output=True, check=True)
        times.append(time.perf_counter() - tick)
    return median(times)


def measure_steps(methods: list[str], opts) -> dict:
    from common import median

    samples: dict[str, list] = {m: [] for m in methods}
    for _ in range(opts.reps):  # interleaved: every method once per round
        for m in methods:
            samples[m].append(run_worker(m, opts))
    training = {}
    for m, runs in samples.items():
        times = [t for r in runs for t in r["step_times"]]
        training[m] = {
            "params": runs[0]["params"],
            "backprop_blocks": runs[0]["backprop_blocks"],
            "step_s": median(times),
            "step_s_all": times,
            "peak_mb": median([r["peak_mb"] for r in runs]),
            "overhead_mb": median([r["overhead_mb"] for r in runs]),
        }
    return training


def step_ab(opts) -> None:
    """The default Solo step against LoRA r4's over several interleaved rounds: the ratio's spread, not one draw."""
    opts.steps, opts.reps = opts.steps or 4, opts.reps or 6
    training = measure_steps(["solo-default", "lora"], opts)
    report = {"command": "python bench/speed.py " + " ".join(sys.argv[1:]), "device": device(), "training": training}
    report |= {
        "batch": opts.batch,
        "seq": opts.seq,
        "dtype": opts.dtype,
        "steps": opts.steps,
        "warmup": opts.warmup,
        "reps": opts.reps,
    }
    report |= ab_ratios(training, opts.steps)
    (HERE / "results" / "speed-ab.json").write_text(json.dumps(report, indent=2) + "\n")
    (HERE / "results" / "speed-ab.md").write_text(ab_markdown(report))
    print(json.dumps({k: report[k] for k in ("ratio_of_medians", "round_ratios")}))


def ab_ratios(training: dict, n: int) -> dict:
    """Solo's median step over LoRA's, overall and per round (each round: n steps of each)."""
    import statistics

    solo, lora = (training[m]["step_s_all"] for m in ("solo-default", "lora"))
    rounds = [statistics.median(solo[i : i + n]) / statistics.median(lora[i : i + n]) for i in range(0, len(solo), n)]
    return {"ratio_of_medians": statistics.median(solo) / statistics.median(lora), "round_ratios": rounds}


def ab_markdown(r: dict) -> str:
    import statistics

    rounds, t = r["round_ratios"], r["training"]
    row = "| {} ({:,} params) | {:.3f} | {} |\n"
    return (
        f"# Default Solo step against LoRA r4's, {r['reps']} interleaved rounds\n\n"
        f"Command: `{r['command']}`. Device: {r['device']}. Batch {r['batch']} x {r['seq']} tokens, {r['dtype']}; "
        f"each round runs one Solo process, then one LoRA process, each timing {r['steps']} steps after {r['warmup']} "
        "warm-up steps.\n\n| | step (s), median | all steps (s) |\n| --- | --- | --- |\n"
        + "".join(
            row.format(
                label, t[m]["params"], statistics.median(t[m]["step_s_all"]), ", ".join(f"{x:.2f}" for x in t[m]["step_s_all"])
            )
            for m, label in (("solo-default", "Solo default"), ("lora", "LoRA r4 q,v"))
        )
        + f"\nRatio of the medians: {r['ratio_of_medians']:.2f}x. Per round: {', '.join(f'{x:.2f}' for x in rounds)} "
        f"(min {min(rounds):.2f}, max {max(rounds):.2f}). Target: <= 0.7x.\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="Default Solo vs LoRA r=4 and the dtype runs only.")
    parser.add_argument("--plans", action="store_true", help="With --quick: also the plans' step times (the quality table).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--dtype", default="float32", help="The step-time workers' dtype.")
    parser.add_argument("--dtype-steps", type=int, default=24, help="Steps of each `solo train --dtype` run.")
    parser.add_argument("--gen-tokens", type=int, default=32)
    parser.add_argument("--gen-batch", type=int, default=1)
    parser.add_argument("--gen-reps", type=int, default=None)
    parser.add_argument(
        "--ab", action="store_true", help="Only the default Solo vs LoRA r4 step, per-round ratios (bench/results/speed-ab.md)."
    )
    opts = parser.parse_args()
    if opts.worker:
        opts.method = opts.worker
        return worker(opts)
    if opts.ab:
        return step_ab(opts)
    opts.steps = opts.steps or (3 if opts.quick else 5)
    opts.reps = opts.reps or (2 if opts.quick else 3)
    opts.gen_reps = opts.gen_reps or (2 if opts.quick else 5)
    with_plans = opts.plans or not opts.quick
    methods = ["solo-default", "lora"] + ([name for name, *_ in TOPOLOGIES] + ["lora-r1"] if with_plans else [])
    started = time.perf_counter()
    training = measure_steps(methods, opts)
    dtypes = dtype_runs(opts)
    report_extra = {}
    if not opts.quick:
        with tempfile.TemporaryDirectory() as tmp:
            report_extra = generation_speed(opts, Path(tmp))
            report_extra["inspect_s"] = inspect_seconds(report_extra.pop("solo_adapter"), 5)
    solo, lora = training["solo-default"], training["lora"]
    auto, fp32 = dtypes["auto"], dtypes["float32"]
    summary = {
        "solo_step_s": solo["step_s"],
        "lora_step_s": lora["step_s"],
        "step_ratio": solo["step_s"] / lora["step_s"],
        "step_target": 0.7,
        "solo_backprop_blocks": solo["backprop_blocks"],
        "lora_backprop_blocks": lora["backprop_blocks"],
        "auto_resolved": auto["resolved"],
        "auto_reason": auto["reason"],
        "auto_vs_float32_tokens_per_s": auto["tokens_per_s"] / fp32["tokens_per_s"],
        "bfloat16_vs_float32_tokens_per_s": dtypes["bfloat16"]["tokens_per_s"] / fp32["tokens_per_s"],
        "tokens_per_s_target": 1.5,
        "seconds": round(time.perf_counter() - started, 1),
    }
    argv = " ".join(sys.argv[1:])
    report = {
        "setup": {
            "model": "smollm2-135m",
            "dtype": opts.dtype,
            "batch": opts.batch,
            "seq": opts.seq,
            "timed_steps_per_rep": opts.steps,
            "reps": opts.reps,
            "dtype_steps": opts.dtype_steps,
            "threads": 2,
            "command": f"python bench/speed.py {argv}".strip(),
            "device": device(),
        },
        "training": training,
        "dtypes": dtypes,
        "quality": {m: plan_quality()[m] for m in training if m in QUALITY},
        **report_extra,
        "summary": summary,
    }
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "speed.json").write_text(json.dumps(report, indent=2) + "\n")
    (HERE / "results" / "speed.md").write_text(markdown(report))
    print(json.dumps(summary))


def markdown(report: dict) -> str:
    s, sm = report["setup"], report["summary"]
    lines = [
        f"# Speed: Solo vs LoRA ({s['model']}, batch {s['batch']} x {s['seq']} tokens, 2 CPU threads)",
        "",
        f"Command: `{s['command']}`. Device: {s['device']}. Step times: medians of {s['reps']} interleaved rounds x "
        f"{s['timed_steps_per_rep']} timed steps after 2 warm-up steps, one process per measurement, {s['dtype']}.",
        "",
        "## Step time",
        "",
        "| adapter | trainable params | blocks backpropagated | step (s) | vs LoRA r4 | peak RSS (MB) | peak above loaded model (MB) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lora = report["training"]["lora"]
    for name, t in report["training"].items():
        lines.append(
            f"| {name} | {t['params']:,} | {t['backprop_blocks']} of 30 | {t['step_s']:.3f} | {t['step_s'] / lora['step_s']:.2f}x | "
            f"{t['peak_mb']:.0f} | {t['overhead_mb']:.0f} |"
        )
    held = "holds" if sm["step_ratio"] <= sm["step_target"] else "does not hold"
    lines += [
        "",
        f"Target: the default Solo step <= {sm['step_target']}x LoRA r4's. Measured {sm['step_ratio']:.2f}x: it {held} in this draw "
        "(`python bench/speed.py --ab`, bench/results/speed-ab.md, measures the ratio's spread over more rounds).",
        "",
        *_dtype_lines(report),
        *_quality_lines(report),
        *_generation_lines(report),
    ]
    return "\n".join(lines) + "\n"


def _dtype_lines(report: dict) -> list[str]:
    s, sm, runs = report["setup"], report["summary"], report["dtypes"]
    lines = [
        f"## --dtype (solo train on sample_data/e2e, {s['dtype_steps']} steps, batch 8, seed 0)",
        "",
        "| --dtype | ran as | tokens/s (median) | vs float32 | final loss | why |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    fp32 = runs["float32"]["tokens_per_s"]
    for name, r in runs.items():
        lines.append(
            f"| {name} | {r['resolved']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / fp32:.2f}x | {r['losses'][-1]:.4f} | {r['reason']} |"
        )
    held = "holds" if sm["auto_vs_float32_tokens_per_s"] >= sm["tokens_per_s_target"] else "does not hold"
    lines += [
        "",
        f"Target: auto >= {sm['tokens_per_s_target']}x float32's tokens/s. Measured {sm['auto_vs_float32_tokens_per_s']:.2f}x: "
        f"it {held} here; auto chose {sm['auto_resolved']} ({sm['auto_reason']}).",
        "",
        "Loss curves (training loss per step):",
        "",
        "| step | " + " | ".join(runs) + " |",
        "| --- | " + " | ".join("---" for _ in runs) + " |",
    ]
    n = len(runs["float32"]["losses"])
    for step in sorted({1, *range(4, n + 1, 4), n}):
        lines.append(f"| {step} | " + " | ".join(f"{r['losses'][step - 1]:.4f}" for r in runs.values()) + " |")
    return [*lines, ""]


def _quality_lines(report: dict) -> list[str]:
    quality, training = report["quality"], report["training"]
    if len(quality) < 3:
        return []
    lines = [
        "## Quality against step time",
        "",
        "Quality: *full* = validation loss and BLEU of the whole-E2E protocol (bench/results/e2e-full.md, one H200, "
        "mean over seeds; the plans it has not run yet: the nearest run of ../shared/docs/reference-runs.md, solo 0.1); "
        "*proxy* = validation loss of bench/results/e2e-proxy.json (CPU, 1,024 rows). Step time: measured above.",
        "",
        "| plan | trainable params | step (s) | vs LoRA r4 | full-protocol run | valid loss | BLEU | proxy valid loss |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    lora = training["lora"]["step_s"]
    for name, q in quality.items():
        t = training[name]
        proxy = f"{q['proxy_valid_loss']:.4f}" if q["proxy_valid_loss"] is not None else "-"
        lines.append(
            f"| {name} | {t['params']:,} | {t['step_s']:.3f} | {t['step_s'] / lora:.2f}x | {q['full_run']} | "
            + " | ".join("-" if v is None else f"{v:.4f}" for v in (q["full_valid_loss"], q["full_bleu"]))
            + f" | {proxy} |"
        )
    return [*lines, ""]


def _generation_lines(report: dict) -> list[str]:
    if "gen_tokens_per_s" not in report:
        return []
    g, b = report["gen_tokens_per_s"], report["adapter_bytes"]
    lines = [
        "## Generation and files",
        "",
        "| generation (greedy, batch 1, 32 tokens) | tokens/s | vs bare base |",
        "| --- | --- | --- |",
    ]
    for name in ("base", "solo", "lora"):
        lines.append(f"| {name} | {g[name]:.1f} | {g[name] / g['base']:.2f}x |")
    lines += [
        "",
        f"Adapter files: Solo default {b['solo']:,} bytes, LoRA r=4 q,v {b['lora']:,} bytes. "
        f"`solo inspect --json` on the Solo file: {report['inspect_s']:.2f} s (a whole process).",
        "",
    ]
    return lines


if __name__ == "__main__":
    main()
