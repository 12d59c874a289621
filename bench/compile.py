"""`--compile` on this machine: step time of the default Solo adapter on the built-in model, eager vs
torch.compile'd decoder blocks (training/compiled.py), after warm-up; the first compiled step
(compile time) separately. Both models live in one process and their steps alternate.

    python bench/compile.py            # writes bench/results/compile.json and compile.md
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=96)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    opts = parser.parse_args()

    import torch
    from torch._dynamo.utils import counters

    from solo_cli.engine.adapter import AdapterConfig, SoloAdapter, attach
    from solo_cli.engine.blocks import fingerprint
    from solo_cli.engine.loss import causal_lm_loss
    from solo_cli.engine.models import load_model
    from solo_cli.engine.topology import parse_connections
    from solo_cli.training.compiled import compiled_blocks
    from solo_cli.training.config import TrainConfig

    torch.set_num_threads(2)
    defaults = TrainConfig()

    def build():
        model = load_model(defaults.model, dtype="float32").model
        fp = fingerprint(model)
        plan = parse_connections(defaults.connections, fp.num_blocks)
        adapter = SoloAdapter(
            AdapterConfig(plan, defaults.rank, defaults.gate, 10, fp.hidden_size, source_norm=defaults.source_norm)
        )
        attach(model, adapter)
        adapter.set_homotopy_step(5)
        return model, adapter

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(100, 40000, (opts.batch, opts.seq), generator=g)
    labels = ids.clone()
    labels[:, : opts.seq // 2] = -100
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}

    def step(model, adapter) -> float:
        tick = time.perf_counter()
        loss, _ = causal_lm_loss(model, batch)
        loss.backward()
        for p in adapter.parameters():
            p.grad = None
        return time.perf_counter() - tick

    eager, compiled = build(), build()
    step(*eager)
    with compiled_blocks(compiled[0], True):
        first = step(*compiled)
        times = {"eager": [], "compiled": []}
        for _ in range(opts.rounds):
            for _ in range(opts.steps):
                times["eager"].append(step(*eager))
                times["compiled"].append(step(*compiled))
    result = {
        "command": "python bench/compile.py " + " ".join(sys.argv[1:]),
        "device": f"cpu ({platform.processor() or platform.machine()}, 2 threads), torch {torch.__version__}",
        "batch": f"{opts.batch} x {opts.seq} tokens, default adapter ({defaults.connections}, r={defaults.rank})",
        "first_compiled_step_s": round(first, 2),
        "eager_step_s": round(statistics.median(times["eager"]), 3),
        "compiled_step_s": round(statistics.median(times["compiled"]), 3),
        "recompiles": int(sum(counters["stats"].get(k, 0) for k in ("unique_graphs",))),
    }
    result["compiled_vs_eager"] = round(result["eager_step_s"] / result["compiled_step_s"], 2)
    out = HERE / "results"
    (out / "compile.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "compile.md").write_text(
        "# `--compile` on CPU\n\n"
        f"Command: `{result['command']}`. Device: {result['device']}. Batch: {result['batch']}; "
        f"medians of {opts.rounds} rounds x {opts.steps} alternating steps.\n\n"
        "| | step (s) |\n| --- | --- |\n"
        f"| eager | {result['eager_step_s']} |\n| compiled blocks | {result['compiled_step_s']} |\n"
        f"| first compiled step (compiling) | {result['first_compiled_step_s']} |\n\n"
        f"Compiled runs at {result['compiled_vs_eager']}x the eager speed; dynamo built {result['recompiles']} graph(s).\n"
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
