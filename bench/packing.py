"""Packing vs length-grouped padding on mixed-length chat data: tokens/s of `solo train` (issue 21).

    python bench/packing.py                  # 512 conversations, --max-seq-length 1024, 5 steps a run, 3 interleaved rounds
    python bench/packing.py --device cuda --conversations 2048 --batch-size 16 --steps 20
    python bench/packing.py --quick          # smoke check: 48 conversations, 2 steps a run, 1 round (no figures kept)

The defaults fit a 2-core CPU: six `solo train` processes of 5 steps, each step about 2,100 tokens of
SmolLM2 (some 5 s there) after some 20 s of start-up, so about 5 minutes on an idle machine. At
--max-seq-length 1024 a fifth of these conversations are cut (at 512 it would be over 40%, and
packing would have little left to pack).

Writes bench/results/packing.json and packing.md (with the command and device), except with --quick.

The data. No chat set ships with a package here, so conversations are generated, with the lengths
of real chat data. LMSYS-Chat-1M (Zheng et al. 2023, arXiv:2309.11998, Table 1: one million
conversations with 25 LLMs) reports 2.0 turns a conversation, 69.5 tokens a user prompt and 214.5
a response, on average (figures as recalled from the paper: check them before quoting). Turn
counts are geometric with mean 2 (capped at 6). Prompt and response lengths are log-normal, the
usual fit of text lengths (a long right tail, a mode far below the mean), with those means and an
assumed spread: sigma 1.0 for prompts (one-line questions next to pasted documents) and 0.8 for
responses; mu = ln(mean) - sigma^2 / 2 so that the mean is the reported one. The sigmas are not
fitted to the data set (it is gated); change them with --sigma-prompt/--sigma-response. Text is
random common English words, about one SmolLM2 token a word; the table reports the lengths as
`solo train` encodes them (chat template included, cut at --max-seq-length), so what is measured
is what was trained.

The runs. Each setting is a real `solo train` process on the same data (built-in model unless
--model), its tokens/s (trained-and-prompt tokens, padding excluded) the median over its steps
after the first two, the settings interleaved in each round:

- grouped: the default, --batch-size B examples, length-grouped (padding as it is today);
- packing: --packing --batch-size R rows of --max-seq-length tokens, R chosen so that a step holds
  about the tokens of a grouped step (R = round(B x mean length / max-seq-length), at least 1).

Also reported without running anything: the padding share of the grouped batches and of the
packed micro-batches (rows padded to the longest row of their micro-batch) over one epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from paths import with_root  # noqa: E402

RESULTS = HERE / "results"
PROMPT_MEAN, RESPONSE_MEAN, TURNS_MEAN = 69.5, 214.5, 2.0  # LMSYS-Chat-1M, Table 1 (see the docstring)
WORDS = (
    "the of and to a in is it you that he was for on are with as his they be at one have this from or had by "
    "word but what some we can out other were all there when up use your how said an each she which do their "
    "time if will way about many then them write would like so these her long make thing see him two has look "
    "more day could go come did number sound no most people my over know water than call first who may down side "
    "been now find any new work part take get place made live where after back little only round man year came "
    "show every good me give our under name very through just form sentence great think say help low line differ "
    "turn cause much mean before move right boy old too same tell does set three want air well also play small end"
).split()


def lognormal_length(rng: random.Random, mean: float, sigma: float, cap: int) -> int:
    """A log-normal draw with the given mean (mu = ln mean - sigma^2 / 2), at least 1 and at most ``cap``."""
    return max(1, min(cap, round(rng.lognormvariate(math.log(mean) - sigma**2 / 2, sigma))))


def conversations(count: int, seed: int, sigma_prompt: float, sigma_response: float) -> list[dict]:
    """``count`` chat rows: geometric turns (mean 2, at most 6), log-normal prompt and response lengths in words."""
    rng = random.Random(seed)
    text = lambda n: " ".join(rng.choice(WORDS) for _ in range(n)).capitalize() + "."  # noqa: E731
    rows = []
    for _ in range(count):
        turns = 1
        while turns < 6 and rng.random() > 1 / TURNS_MEAN:
            turns += 1
        messages = []
        for _ in range(turns):
            messages.append({"role": "user", "content": text(lognormal_length(rng, PROMPT_MEAN, sigma_prompt, 4096))})
            messages.append({"role": "assistant", "content": text(lognormal_length(rng, RESPONSE_MEAN, sigma_response, 4096))})
        rows.append({"messages": messages})
    return rows


def encoded_lengths(data: Path, model: str, max_len: int) -> list[int]:
    """Every training example's token count as `solo train` encodes it (built-in model's tokenizer and chat template)."""
    from common import encode_file
    from transformers import AutoTokenizer

    from solo_cli.engine.models import builtin_path

    tokenizer = AutoTokenizer.from_pretrained(model if Path(model).exists() else builtin_path(model))
    return encode_file(data / "train.jsonl", tokenizer, max_len).examples.lengths()


def padding_shares(lengths: list[int], batch: int, rows: int, max_len: int) -> dict:
    """Pad tokens / all tokens of one epoch's micro-batches: grouped examples, and packed rows."""
    from common import epoch_batches

    from solo_cli.training.sampler import packed_epoch_steps

    grouped = epoch_batches(lengths, batch, 0, 0, lengths)
    padded = sum(max(lengths[i] for i in b) * len(b) for b in grouped)
    micro = [m for step in packed_epoch_steps(lengths, max_len, rows, 0, 0) for m in step]
    row_tokens = [[sum(lengths[i] for i in row) for row in m] for m in micro]
    packed = sum(max(r) * len(r) for r in row_tokens)
    return {"grouped": round(1 - sum(lengths) / padded, 4), "packing": round(1 - sum(lengths) / packed, 4)}


def train_run(name: str, flags: list[str], data: Path, folder: Path, opts) -> dict:
    """One `solo train` process; tokens/s is the median over its steps after the first two."""
    out = folder / name
    cmd = [sys.executable, "-m", "solo_cli", "train", "--data", str(data), "--output", str(out), "--overwrite"]
    cmd += ["--model", opts.model, "--max-steps", str(opts.steps), "--eval-every", "100000", "--seed", "0"]
    cmd += ["--max-seq-length", str(opts.max_seq_length), "--device", opts.device, "--dtype", opts.dtype, *flags]
    tick = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=with_root(os.environ | {"TQDM_DISABLE": "1"}))
    seconds = time.perf_counter() - tick
    if done.returncode:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
        raise SystemExit(f"bench/packing.py: the {name} run failed (exit {done.returncode}): {' '.join(cmd)}\n{tail}")
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    rates = sorted(s["tokens_per_s"] for s in (steps[2:] or steps))
    recorded = json.loads((out / "config.json").read_text())
    return {
        "tokens_per_s": rates[len(rates) // 2],
        "process_s": round(seconds, 1),
        "losses": [s["loss"] for s in steps],
        "dtype": recorded.get("dtype_resolved"),
    }


def device_name(device: str) -> str:
    """What ``--device`` resolves to here, as `solo train` resolves it, named with the hardware and torch version."""
    import torch

    from solo_cli.training.prepared import resolve_device

    resolved = resolve_device(device)
    if resolved.type == "cuda":
        hardware = torch.cuda.get_device_name(resolved)
    else:
        hardware = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    return f"{resolved} ({hardware}), torch {torch.__version__}, Python {platform.python_version()}"


def markdown(report: dict) -> str:
    s, r = report["settings"], report["results"]
    lines = [
        "# Packing vs length-grouped padding on mixed-length chat data (issue 21)",
        "",
        f"Command: `{report['command']}`  ",
        f"Device: {report['device']}  ",
        f"Data: {s['conversations']} generated conversations (see bench/packing.py), encoded lengths: mean "
        f"{s['mean_length']}, median {s['median_length']}, 90th percentile {s['p90_length']}, longest {s['max_length']} "
        f"tokens ({s['cut']} cut at --max-seq-length {s['max_seq_length']})",
        "",
        "| setting | flags | padding share | tokens/s (median of rounds) | ratio to grouped |",
        "|---|---|---:|---:|---:|",
    ]
    for name in ("grouped", "packing"):
        lines.append(
            f"| {name} | `{' '.join(r[name]['flags'])}` | {100 * report['padding'][name]:.1f}% | "
            f"{r[name]['tokens_per_s']:.0f} | {r[name]['tokens_per_s'] / r['grouped']['tokens_per_s']:.2f}x |"
        )
    lines += ["", f"{report['rounds']} interleaved rounds of {s['steps']} steps a run; tokens/s excludes padding.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conversations", type=int, default=512)
    parser.add_argument("--max-seq-length", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=4, help="examples a grouped micro-batch")
    parser.add_argument("--steps", type=int, default=5, help="steps a run (tokens/s: the median after the first two)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m", help="a built-in name or a model folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--sigma-prompt", type=float, default=1.0)
    parser.add_argument("--sigma-response", type=float, default=0.8)
    parser.add_argument(
        "--quick", action="store_true", help="48 conversations, 2 steps, 1 round, --max-seq-length 256: checks it runs"
    )
    opts = parser.parse_args()
    if opts.quick:
        opts.conversations, opts.steps, opts.rounds, opts.max_seq_length = 48, 2, 1, 256
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "chat"
        data.mkdir()
        rows = conversations(opts.conversations, 0, opts.sigma_prompt, opts.sigma_response)
        (data / "train.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        lengths = encoded_lengths(data, opts.model, opts.max_seq_length)
        mean = sum(lengths) / len(lengths)
        rows_a_step = max(1, round(opts.batch_size * mean / opts.max_seq_length))
        flags = {"grouped": ["--batch-size", str(opts.batch_size)], "packing": ["--packing", "--batch-size", str(rows_a_step)]}
        samples: dict[str, list] = {name: [] for name in flags}
        for _ in range(opts.rounds):
            for name, extra in flags.items():
                samples[name].append(train_run(name, extra, data, Path(tmp), opts))
    results = {}
    for name, runs in samples.items():
        rates = sorted(run["tokens_per_s"] for run in runs)
        results[name] = {"flags": flags[name], "tokens_per_s": rates[len(rates) // 2], "runs": runs}
    ranked = sorted(lengths)
    report = {
        "command": "python bench/packing.py" + "".join(f" {a}" for a in sys.argv[1:]),
        "device": device_name(opts.device) + f", --dtype {opts.dtype} ran as {samples['grouped'][0]['dtype']}",
        "settings": {
            "conversations": len(rows),
            "steps": opts.steps,
            "max_seq_length": opts.max_seq_length,
            "mean_length": round(mean, 1),
            "median_length": ranked[len(ranked) // 2],
            "p90_length": ranked[int(0.9 * (len(ranked) - 1))],
            "max_length": ranked[-1],
            "cut": sum(n >= opts.max_seq_length for n in lengths),
            "sigma_prompt": opts.sigma_prompt,
            "sigma_response": opts.sigma_response,
        },
        "padding": padding_shares(lengths, opts.batch_size, rows_a_step, opts.max_seq_length),
        "rounds": opts.rounds,
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(markdown(report))
    if not opts.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "packing.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "packing.md").write_text(markdown(report))


if __name__ == "__main__":
    main()
