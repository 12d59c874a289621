"""Tokenizing a million rows: time and peak memory (RSS) of load + check + tokenize, first run and cached re-run.

    OMP_NUM_THREADS=1 python bench/data_scale.py                 # 1M rows, JSONL and Parquet
    OMP_NUM_THREADS=1 python bench/data_scale.py --rows 100000   # quicker

Synthetic prompt/completion rows are written once as JSONL and Parquet. Each measurement runs in
a fresh process (so its peak RSS is its own) with its own ``HF_DATASETS_CACHE``: the first run
loads, checks and tokenizes (``load_source`` + ``encode_rowset``); the re-run finds both steps
in the cache. Results go to bench/results/data-scale.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

TOKENIZER = Path.home() / ".cache" / "solo" / "models" / "smollm2-135m"
RESULTS = Path(__file__).resolve().parent / "results"
FOODS = ["French", "Italian", "Japanese", "Indian", "English", "Chinese", "fast food"]


def _row(i: int) -> dict:
    food, area = FOODS[i % len(FOODS)], "riverside" if i % 3 else "city centre"
    prompt = f"name[Place {i}], eatType[restaurant], food[{food}], area[{area}] ->"
    return {"prompt": prompt, "completion": f" Place {i} is a {food} restaurant in the {area}, rated {i % 5 + 1} stars."}


def write_data(folder: Path, rows: int) -> dict[str, Path]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    jsonl, parquet = folder / "train.jsonl", folder / "train.parquet"
    with open(jsonl, "w", encoding="utf-8") as handle:
        for start in range(0, rows, 100_000):
            handle.write("".join(json.dumps(_row(i)) + "\n" for i in range(start, min(rows, start + 100_000))))
    with pq.ParquetWriter(parquet, pa.schema([("prompt", pa.string()), ("completion", pa.string())])) as writer:
        for start in range(0, rows, 100_000):
            batch = [_row(i) for i in range(start, min(rows, start + 100_000))]
            writer.write_table(pa.Table.from_pylist(batch))
    return {"jsonl": jsonl, "parquet": parquet}


def _peak_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def child(path: str, num_proc: int | None) -> dict:
    """One measurement, in this (fresh) process."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(TOKENIZER))
    settings = {"chat_template": False, "train_on_prompt": False, "max_len": 256}
    from solo_cli.data.sources import load_source
    from solo_cli.data.spec import DataSpec
    from solo_cli.data.split_encoding import encode_rowset

    started = time.perf_counter()
    source = load_source(DataSpec(path))
    loaded = time.perf_counter()
    encoded = encode_rowset(source.train, tokenizer, num_proc=num_proc, **settings)
    done = time.perf_counter()
    sum(len(e.input_ids) for e in encoded.examples[:1000])  # reading examples back works
    return {
        "load_check_s": round(loaded - started, 2),
        "tokenize_s": round(done - loaded, 2),
        "total_s": round(done - started, 2),
        "peak_rss_mb": _peak_mb(),
        "examples": encoded.stats["examples"],
        "tokens": encoded.stats["tokens"],
    }


def measure(path: Path, cache: Path, num_proc: int | None) -> dict:
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
    command = [sys.executable, __file__, "--child", str(path), "--num-proc", str(num_proc or 0)]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in line), ""
    )
    import datasets
    import pyarrow
    import tokenizers

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 1),
        "python": platform.python_version(),
        "datasets": datasets.__version__,
        "pyarrow": pyarrow.__version__,
        "tokenizers": tokenizers.__version__,
    }


def write_results(result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "data-scale.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Tokenizing a million rows: time and peak memory",
        "",
        f"Command: `{result['command']}`",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores shared with other work "
        f"(load average {result['machine']['load_average_at_start']} at the start), datasets {result['machine']['datasets']}, "
        f"pyarrow {result['machine']['pyarrow']}. Tokenizer: SmolLM2-135M's; rows: {result['rows']:,} synthetic "
        "prompt/completion rows, no chat template, max_len 256.",
        "",
        "| source | run | load + check (s) | tokenize (s) | total (s) | peak RSS (MB) | examples | tokens |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for run in result["runs"]:
        lines.append(
            f"| {run['source']} | {run['run']} | {run['load_check_s']} | {run['tokenize_s']} | {run['total_s']} | "
            f"{run['peak_rss_mb']} | {run['examples']:,} | {run['tokens']:,} |"
        )
    lines += ["", "Each run is a fresh process; `cached` re-runs it with the same `HF_DATASETS_CACHE`.", ""]
    (RESULTS / "data-scale.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--num-proc", type=int, default=0)
    parser.add_argument("--child")
    opts = parser.parse_args()
    if opts.child:
        print(json.dumps(child(opts.child, opts.num_proc or None)))
        return
    result = {"command": "python " + " ".join(sys.argv), "rows": opts.rows, "machine": machine(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        files = write_data(Path(tmp), opts.rows)
        for source, path in files.items():
            for run in ("first", "cached"):
                measured = measure(path, Path(tmp) / f"cache-{source}", opts.num_proc)
                result["runs"].append({"source": source, "run": run, **measured})
                print(source, run, measured, flush=True)
    write_results(result)


if __name__ == "__main__":
    main()
