"""The padding share of training batches, with and without length grouping (issue 13).

Padding share = pad tokens / all tokens in the padded batches of one epoch: the compute a step
spends on nothing. Examples are encoded as `solo train` encodes them by default (the built-in
SmolLM2 tokenizer, its chat template, --max-seq-length 256), batched at the default
--batch-size 8, and ordered by solo_cli.training.sampler, grouped (the default) or not.

    python bench/padding.py            # E2E train (5,000 rows, seed 0) and sample_data/e2e
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import encode, epoch_batches, read_jsonl  # noqa: E402
from paths import E2E  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

from solo_cli.engine.models import builtin_path  # noqa: E402
from solo_cli.training.config import TrainConfig  # noqa: E402
from solo_cli.training.sampler import WINDOW_BATCHES  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
E2E_TRAIN = E2E / "train.jsonl"
SAMPLE_TRAIN = ROOT / "sample_data" / "e2e" / "train.jsonl"


def padding_share(lengths: list[int], batch: int, seed: int, epoch: int, grouped: bool) -> float:
    batches = epoch_batches(lengths, batch, seed, epoch, lengths if grouped else None)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
    return 1 - sum(lengths) / padded


def measure(name: str, path: Path, rows_wanted: int, tokenizer, cfg: TrainConfig, epochs: int) -> dict:
    rows = read_jsonl(path)
    if rows_wanted and len(rows) > rows_wanted:
        rows = [rows[i] for i in sorted(random.Random(0).sample(range(len(rows)), rows_wanted))]
    examples = encode(rows, tokenizer, cfg.max_seq_length, cfg.chat_template, cfg.train_on_prompt)
    lengths = [len(e.input_ids) for e in examples]
    shares = {
        grouped: [padding_share(lengths, cfg.batch_size, cfg.seed, e, grouped) for e in range(epochs)]
        for grouped in (False, True)
    }
    return {
        "data": name,
        "rows": len(lengths),
        "mean_length": round(sum(lengths) / len(lengths), 1),
        "max_length": max(lengths),
        "padding_share_ungrouped": round(sum(shares[False]) / epochs, 4),
        "padding_share_grouped": round(sum(shares[True]) / epochs, 4),
        "epochs_averaged": epochs,
    }


def markdown(report: dict) -> str:
    lines = [
        "# Padding share of training batches: length grouping (issue 13)",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {report['machine']}  ",
        f"Settings: {report['settings']}",
        "",
        "| data | rows | mean tokens | longest | padding, shuffled batches | padding, grouped (default) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        lines.append(
            f"| {r['data']} | {r['rows']} | {r['mean_length']} | {r['max_length']} | "
            f"{100 * r['padding_share_ungrouped']:.1f}% | {100 * r['padding_share_grouped']:.1f}% |"
        )
    lines += [
        "",
        "Padding share = pad tokens / all tokens of the padded batches of an epoch, averaged over "
        f"{report['results'][0]['epochs_averaged']} epochs (seeds of the order). Grouping sorts by length within "
        f"shuffled windows of {WINDOW_BATCHES} batches (`solo_cli/training/sampler.py`).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000, help="rows sampled from the E2E train set (0: all)")
    parser.add_argument("--epochs", type=int, default=3)
    opts = parser.parse_args()
    cfg = TrainConfig()
    started = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(builtin_path(cfg.model))
    results = [measure(f"E2E train ({opts.rows or 'all'} rows, seed 0)", E2E_TRAIN, opts.rows, tokenizer, cfg, opts.epochs)]
    results.append(measure("sample_data/e2e", SAMPLE_TRAIN, 0, tokenizer, cfg, opts.epochs))
    report = {
        "command": "python bench/padding.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "settings": f"--model {cfg.model}, --batch-size {cfg.batch_size}, --max-seq-length {cfg.max_seq_length}, "
        f"--seed {cfg.seed}, chat template and prompt masking as the defaults have them",
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "padding.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "padding.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
