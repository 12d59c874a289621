"""The matrix products of a SmolLM2 training step, float32 against bfloat16 (and float16) on this CPU:
whether bf16 can make training faster here at all. Shapes: 4,096 tokens through the MLP's
576 x 1536 projections and the 576 x 49,152 vocabulary projection; forward, and forward + backward.

    python bench/matmul.py          # writes bench/results/matmul.json and matmul.md
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SHAPES = [(4096, 576, 1536), (4096, 1536, 576), (4096, 576, 49152)]
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def seconds(m: int, k: int, n: int, dtype: torch.dtype, backward: bool, reps: int = 5) -> float:
    x = torch.randn(m, k, dtype=dtype, requires_grad=backward)
    w = torch.randn(n, k, dtype=dtype)

    def once():
        y = torch.nn.functional.linear(x, w)
        if backward:
            y.sum().backward()

    once(), once()
    tick = time.perf_counter()
    for _ in range(reps):
        once()
    return (time.perf_counter() - tick) / reps


def main() -> None:
    torch.manual_seed(0)
    rows = []
    for m, k, n in SHAPES:
        for backward in (False, True):
            # interleaved: each dtype once per round, the median of 3 rounds
            times = {d: [] for d in DTYPES}
            for _ in range(3):
                for d in DTYPES:
                    times[d].append(seconds(m, k, n, d, backward))
            med = {str(d).removeprefix("torch."): sorted(t)[1] for d, t in times.items()}
            rows.append({"shape": f"{m} x {k} x {n}", "pass": "forward + backward" if backward else "forward", "seconds": med})
            print(json.dumps(rows[-1]), flush=True)
    report = {
        "command": "python bench/matmul.py",
        "device": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"capability {torch.backends.cpu.get_cpu_capability()}",
        "rows": rows,
    }
    (HERE / "results" / "matmul.json").write_text(json.dumps(report, indent=2) + "\n")
    lines = [
        "# float32 against bfloat16 and float16 matrix products on this CPU",
        "",
        f"Command: `{report['command']}`. Device: {report['device']}. Medians of 3 interleaved rounds of 5 products.",
        "",
        "| tokens x in x out | pass | float32 (ms) | bfloat16 (ms) | float16 (ms) | bf16 speed vs fp32 | fp16 speed vs fp32 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        s = r["seconds"]
        lines.append(
            f"| {r['shape']} | {r['pass']} | {1e3 * s['float32']:.1f} | {1e3 * s['bfloat16']:.1f} | {1e3 * s['float16']:.1f} "
            f"| {s['float32'] / s['bfloat16']:.2f}x | {s['float32'] / s['float16']:.2f}x |"
        )
    (HERE / "results" / "matmul.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
