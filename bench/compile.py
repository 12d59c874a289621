"""`--compile` on this machine: the break-even in steps of compiling the default Solo adapter's training step.

Two copies of the built-in model with the default adapter live in one process. One runs eagerly on
batches of --seq tokens (as `solo train` without --compile); the other compiles as `solo train
--compile on` does (training/compiled.py: static shapes, each batch padded up to its bucket width,
CUDA graphs with --packing on CUDA), so its step pays for the bucket's padding too. Measured:

- compile seconds, per bucket of --max-seq-length: the first compiled step at that width minus the
  second (kernels built, graphs traced); the bucket of --seq first, then the others;
- the eager and the compiled step at --seq tokens: medians of --rounds x --steps alternating steps;
- the break-even: compile seconds / (eager step - compiled step), for a run whose batches all fall in
  the bucket of --seq, and for one that meets every bucket (what `solo train` meets on varied data).

    python bench/compile.py                  # CPU: writes bench/results/compile.json and compile.md
    python bench/compile.py --device cuda    # writes bench/results/compile-cuda.json and compile-cuda.md
    python bench/compile.py --quick          # smoke check: tiny batch, 1 step, no files written

The inductor kernel cache (``TORCHINDUCTOR_CACHE_DIR``, else /tmp/torchinductor_$USER) makes a
second run compile faster: start from an empty one to measure what a first `solo train` pays.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def options() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=96, help="tokens a row of the timed batches")
    parser.add_argument("--max-seq-length", type=int, default=256, help="as solo train's: sets the buckets")
    parser.add_argument("--packing", action="store_true", help="compile as for --packing (one bucket; CUDA graphs on CUDA)")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="batch 2 x 16 tokens, 1 step, 1 round, no files written")
    opts = parser.parse_args()
    if opts.quick:
        opts.batch, opts.seq, opts.max_seq_length, opts.steps, opts.rounds = 2, 16, 64, 1, 1
    return opts


def main() -> None:  # long: the measurement reads top to bottom; the pieces share the models and the clock
    opts = options()
    import torch
    from torch._dynamo.utils import counters

    from solo_cli.engine.adapter import AdapterConfig, SoloAdapter, attach
    from solo_cli.engine.blocks import fingerprint
    from solo_cli.engine.loss import causal_lm_loss
    from solo_cli.engine.models import load_model
    from solo_cli.engine.precision import resolve_precision
    from solo_cli.engine.topology import parse_connections
    from solo_cli.training.compiled import BREAK_EVEN_STEPS, compiled_blocks, decide_compile
    from solo_cli.training.config import TrainConfig

    device = torch.device(opts.device)
    if device.type == "cpu":
        torch.set_num_threads(2)
    defaults = TrainConfig()
    precision = resolve_precision("auto", device)
    autocast = getattr(torch, precision.autocast) if precision.autocast else None

    def build():
        model = load_model(defaults.model, dtype=precision.dtype, device=str(device)).model
        fp = fingerprint(model)
        plan = parse_connections(defaults.connections, fp.num_blocks)
        config = AdapterConfig(plan, defaults.rank, defaults.gate, 10, fp.hidden_size, source_norm=defaults.source_norm)
        adapter = SoloAdapter(config).to(device)
        attach(model, adapter)
        adapter.set_homotopy_step(5)
        return model.train(), adapter

    def batch_of(width: int) -> dict:
        from solo_cli.data.row_encoding import Example, collate

        g = torch.Generator().manual_seed(width)
        rows = torch.randint(100, 40000, (opts.batch, width), generator=g).tolist()
        return collate([Example(r, [-100] * (width // 2) + r[width // 2 :]) for r in rows], pad_id=0)

    def step(model, adapter, batch) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        tick = time.perf_counter()
        plan.begin_step()
        with torch.autocast(device.type, dtype=autocast or torch.bfloat16, enabled=bool(autocast)):
            loss, _ = causal_lm_loss(model, {k: v.to(device) for k, v in batch.items()})
        loss.backward()
        for p in adapter.parameters():
            p.grad = None
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - tick

    plan = decide_compile("on", device, 10**6, max_seq_length=opts.max_seq_length, packing=opts.packing)
    eager, compiled = build(), build()
    timed = batch_of(opts.seq)
    step(*eager, timed)  # warm-up (and the loss's one-off proof, on both models)
    mine = plan.pad(timed, 0)
    first_bucket = mine["input_ids"].shape[1]
    compile_s = {}
    with compiled_blocks(compiled[0], plan):
        first = step(*compiled, mine)
        compile_s[first_bucket] = first - step(*compiled, mine)
        times = {"eager": [], "compiled": []}
        for _ in range(opts.rounds):
            for _ in range(opts.steps):
                times["eager"].append(step(*eager, timed))
                times["compiled"].append(step(*compiled, mine))
        for width in (b for b in plan.buckets if b != first_bucket):
            batch = plan.pad(batch_of(width), 0)
            compile_s[width] = step(*compiled, batch) - step(*compiled, batch)
    eager_s, compiled_s = statistics.median(times["eager"]), statistics.median(times["compiled"])
    saved = eager_s - compiled_s
    break_even = lambda seconds: round(seconds / saved) if saved > 0 else None  # noqa: E731
    where = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, 2 threads"
    )
    result = {
        "command": "python bench/compile.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "device": f"{device} ({where}), torch {torch.__version__}, {precision.dtype} weights"
        + (f" under {precision.autocast} autocast" if autocast else ""),
        "batch": f"{opts.batch} x {opts.seq} tokens, default adapter ({defaults.connections}, r={defaults.rank})",
        "plan": plan.reason,
        "buckets": list(plan.buckets),
        "compile_s": {str(k): round(v, 2) for k, v in sorted(compile_s.items())},
        "first_compiled_step_s": round(first, 2),
        "eager_step_s": round(eager_s, 4),
        "compiled_step_s": round(compiled_s, 4),
        "compiled_vs_eager": round(eager_s / compiled_s, 2),
        "break_even_steps_one_bucket": break_even(compile_s[first_bucket]),
        "break_even_steps_all_buckets": break_even(sum(compile_s.values())),
        "table_break_even_steps": BREAK_EVEN_STEPS.get(device.type),
        "auto": decide_compile("auto", device, 10**9, max_seq_length=opts.max_seq_length, ready=True).reason,
        "graphs": int(counters["stats"].get("unique_graphs", 0)),
    }
    print(json.dumps(result))
    if not opts.quick:
        name = "compile" if device.type == "cpu" else f"compile-{device.type}"
        (HERE / "results" / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
        (HERE / "results" / f"{name}.md").write_text(markdown(result, opts))


def markdown(r: dict, opts) -> str:
    never = "never (compiled is not faster)"
    per_bucket = ", ".join(f"{w}: {s} s" for w, s in r["compile_s"].items())
    return (
        f"# `--compile` on {r['device'].split(' ')[0]}: break-even in steps\n\n"
        f"Command: `{r['command']}`. Device: {r['device']}. Batch: {r['batch']}; the compiled model's batches are "
        f"padded to their bucket ({r['plan']}). Medians of {opts.rounds} rounds x {opts.steps} alternating steps.\n\n"
        "| | seconds |\n| --- | --- |\n"
        f"| eager step | {r['eager_step_s']} |\n| compiled step (bucket-padded) | {r['compiled_step_s']} |\n"
        f"| first compiled step | {r['first_compiled_step_s']} |\n\n"
        f"Compiled runs at {r['compiled_vs_eager']}x the eager speed. Compile seconds per bucket width: {per_bucket}; "
        f"dynamo built {r['graphs']} graph(s).\n\n"
        f"Break-even: {r['break_even_steps_one_bucket'] or never} steps when every batch falls in one bucket, "
        f"{r['break_even_steps_all_buckets'] or never} when batches meet all {len(r['buckets'])} buckets "
        f"(`--compile auto` on this device kind: {r['auto']}; solo_cli/training/compiled.py).\n"
    )


if __name__ == "__main__":
    main()
