"""Quality on E2E NLG: Solo configurations against peft LoRA, every run a separate process.

    python bench/e2e.py --protocol full --jobs 8 --only NAMES     # a GPU: 8 runs of the realistic budget side by side
                                                                  # (352 s on an H200); bench/gpu_lease.sh does a lease
    python bench/e2e.py --protocol full --work DIR --collect      # score run folders made on the GPU (needs Java here)
    python bench/e2e.py --protocol proxy --jobs 2                 # this 2-core CPU: the whole 16-run grid in about 95 min
    python bench/e2e.py --protocol proxy --only solo-c5-r2-rms    # some runs only (merged into the results file)
    python bench/e2e.py --agreement                               # proxy vs full ranking (Spearman on valid loss)
    python bench/e2e.py --protocol smoke --only NAME@SEED         # a run's plumbing on the CPU (a few minutes)

Protocols (both: SmolLM2-135M-Instruct, chat template, completion-only loss, linear decay, no
warm-up, max grad norm 1, validation loss on the first 256 rows of valid.jsonl):
- ``full``: all 42,061 rows of train.jsonl, 1 epoch, batch 64 (658 steps), fp32 weights with bf16
  autocast on CUDA; greedy decoding (64 new tokens) of all 630 test MRs scored against all references
  by `solo eval --predictions`.
- ``proxy``: a seeded sample of 1,024 train rows, 1 epoch, batch 16 (64 steps), float32, no decoding.
  It exists to rank configurations on a CPU; ``--agreement`` checks that it ranks them as ``full`` does.

Solo runs are `solo train` (+ `solo eval`), LoRA runs are bench/lora_run.py: the same data, batch
order, loss and decoding. A run may add `solo train` flags (``--lr-b-ratio 4``), train other epochs,
or decode another run's adapter only (``redecode``: the LoRA paper's beam search, no retraining; it
waits for that run when both are in one invocation). Results: bench/results/e2e-<protocol>.json and
.md, with the device.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shlex
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from paths import E2E, with_root

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BUDGET = 94_464  # 41% of LoRA r=4 on q,v of SmolLM2 (230,400): the paper's 59% reduction

PROTOCOLS = {
    "full": {"train_rows": None, "epochs": 1, "batch": 64, "decode": True, "test_mrs": None, "valid_rows": 256},
    "proxy": {"train_rows": 1024, "epochs": 1, "batch": 16, "decode": False, "test_mrs": None, "valid_rows": 256},
    # checks the plumbing only: 2 steps, 16 validation rows, 4 test MRs
    "smoke": {"train_rows": 32, "epochs": 1, "batch": 16, "decode": True, "test_mrs": 4, "valid_rows": 16},
}


@dataclass(frozen=True)
class Run:
    name: str
    method: str  # solo or lora
    rank: int
    lr: float
    connections: str = "q_proj,v_proj"
    gate: str | None = None
    source_norm: str = "rms"
    seed: int = 0
    flags: tuple[str, ...] = ()  # more `solo train` flags: ("--lr-b-ratio", "4")
    epochs: float | None = None  # None: the protocol's
    decoding: str = "greedy"  # a key of DECODINGS
    decodes: str | None = None  # decode only: the name of the run (same seed) whose adapter this decodes


# Decoding flags of `solo eval` and bench/lora_run.py. greedy: both methods' default; lora-paper: Hu et al. 2021's E2E
# decoding (beam 10, length penalty 0.9 of their 0.8-0.9, no repeated 4-grams).
DECODINGS = {
    "greedy": [],
    "lora-paper": ["--num-beams", "10", "--length-penalty", "0.9", "--no-repeat-ngram-size", "4"],
}


def solo(name, connections, rank, lr, gate="schedule", norm="rms", seed=0, flags=(), epochs=None):
    return Run(name, "solo", rank, lr, connections, gate, norm, seed, tuple(flags), epochs)


def lora(name, rank, lr, seed=0, epochs=None):
    return Run(name, "lora", rank, lr, seed=seed, epochs=epochs)


def redecode(name: str, source: Run, decoding: str) -> Run:
    """A decoding-only run: ``source``'s adapter (its folder, same seed) decoded with ``decoding``; it trains nothing."""
    return replace(source, name=name, decoding=decoding, decodes=source.name)


def spans(k: int, sources=None) -> str:
    """The reference runs' plans as explicit lists: ``j-k -> j`` from block 0 up (no embedding source),
    or every block fed from ``sources`` ("emb")."""
    if sources == "emb":
        return ",".join(f"emb->{j}" for j in range(1, 30))
    return ",".join(f"{j - k}->{j}" for j in range(k, 30))


# Configurations of ../shared/docs/reference-runs.md (full protocol, one H100, main at 9ee3b48), with
# their validation loss there. Solo 0.1 had no source normalisation, hence norm="none". The set was
# fixed before any proxy run: every LoRA row that did not diverge and every Solo row whose gate mode
# still exists, minus the 3 chain-r4 rows at lrs that only test the lr grid's edges.
REFERENCE = {
    lora("ref-lora-r4-1e-2", 4, 1e-2): 0.9932,
    lora("ref-lora-r4-5e-3", 4, 5e-3): 1.0063,
    lora("ref-lora-r4-2e-3", 4, 2e-3): 1.0345,
    lora("ref-lora-r1-5e-3", 1, 5e-3): 1.0629,
    solo("ref-solo-c5-r2", spans(5), 2, 2e-2, norm="none"): 1.0168,
    solo("ref-solo-c1-r1", spans(1), 1, 2e-2, norm="none"): 1.0506,
    solo("ref-solo-emb-r2", spans(0, "emb"), 2, 2e-2, norm="none"): 1.0438,
    solo("ref-solo-c15-r4-zi-5e-3", "chain:15", 4, 5e-3, gate="zero-init", norm="none"): 1.0611,
}

# What the proxy searches: source normalisation, placement and rank under the budget (94,464 on SmolLM2).
SEARCH = [
    solo("solo-c5-r2-rms", spans(5), 2, 2e-2),
    solo("solo-c5-r2-rms-5e-2", spans(5), 2, 5e-2),
    solo("solo-c2-r3-rms", spans(2), 3, 2e-2),
]

# A second seed of the decision that the proxy made (source normalisation on the chosen plan).
SEEDS = [solo("solo-c5-r2-rms", spans(5), 2, 2e-2, seed=1), solo("ref-solo-c5-r2", spans(5), 2, 2e-2, norm="none", seed=1)]

# The Solo configurations the full protocol ran with today's code (bench/results/e2e-full.md): on the proxy
# too, so that --agreement can check the proxy against today's full results, not only solo 0.1's.
TODAY = [
    solo("solo-chain-r3-rms-2e-2", "chain", 3, 2e-2),
    solo("solo-chain-r2-rms-2e-2", "chain", 2, 2e-2),
    solo("solo-c2-r2-rms-2e-2", "chain:2", 2, 2e-2),
]

# The ideas of issue 22 for the default to overtake LoRA r=4, one run each at the default's 89,856 parameters
# (solo train's defaults: chain r3 rms schedule, lr 2e-2), chosen for what the outputs say: Solo's sentences
# are shorter, copy fewer slot values and trail on the recall metrics. bench/gpu_lease.sh runs them.
DEFAULT = solo("solo-chain-r3-rms-2e-2", "chain", 3, 2e-2)
LORA_BEST = lora("lora-r4-1e-2", 4, 1e-2)  # LoRA r=4 at its best lr (e2e-full.md, 2 seeds)
IDEAS = [
    replace(DEFAULT, name="solo-chain-r3-rms-2e-2-lrb4", flags=("--lr-b-ratio", "4")),  # B at 4 x lr, as LoRA+
    replace(DEFAULT, name="solo-chain-r3-rms-2e-2-lrb16", flags=("--lr-b-ratio", "16")),
    # mixed spans at the default's budget: 30 + 26 + 16 + 6 = 78 connections at rank 1 = 89,856 parameters
    solo("solo-mix1-5-15-25-r1-rms-2e-2", "chain:1+chain:5+chain:15+chain:25", 1, 2e-2),
    replace(DEFAULT, name="solo-chain-r3-rms-2e-2-zi", gate="zero-init"),  # no ramp: t = 1 from the start, B = 0
    replace(DEFAULT, name="solo-chain-r3-rms-2e-2-ramp30", flags=("--homotopy-fraction", "0.3")),  # (10%: DEFAULT)
    redecode("solo-chain-r3-rms-2e-2-beam", DEFAULT, "lora-paper"),  # decoding only, on the default's adapter
    redecode("lora-r4-1e-2-beam", LORA_BEST, "lora-paper"),  # ... and on LoRA r=4's at its best lr
    replace(DEFAULT, name="solo-chain-r3-rms-2e-2-2ep", epochs=2),  # the LoRA paper trains 5 epochs
    replace(LORA_BEST, name="lora-r4-1e-2-2ep", epochs=2),
]

GRIDS = {
    "proxy": SEARCH + list(REFERENCE) + SEEDS + TODAY,
    # checks the plumbing; --only also takes any run of the full grid (each new one is smoke-run before a lease)
    "smoke": [lora("lora-r1", 1, 1e-2), solo("solo-c5-r2-rms", spans(5), 2, 2e-2)],
    # Ordered by what the decision needs; a GPU lease ran the first 9 (see e2e-full.md). The rest is the next
    # lease's wave: a second seed of the default, the same-code source-norm test, lr and rank around the default.
    # "chain" is solo train's default plan (chain:5 plus emb->4 on SmolLM2's 30 blocks).
    "full": [
        lora("lora-r4-1e-2", 4, 1e-2),
        lora("lora-r4-1e-2", 4, 1e-2, seed=1),
        lora("lora-r4-5e-3", 4, 5e-3),
        lora("lora-r1-5e-3", 1, 5e-3),
        solo("solo-chain-r2-rms-2e-2", "chain", 2, 2e-2),
        solo("solo-chain-r2-rms-2e-2", "chain", 2, 2e-2, seed=1),
        solo("solo-chain-r3-rms-2e-2", "chain", 3, 2e-2),
        solo("solo-c2-r2-rms-2e-2", "chain:2", 2, 2e-2),
        lora("lora-r4-2e-3", 4, 2e-3),
        solo("solo-chain-r3-rms-2e-2", "chain", 3, 2e-2, seed=1),
        solo("solo-c5-r3-rms-2e-2", spans(5), 3, 2e-2),  # the default plan without its emb->4 link
        solo("solo-chain-r3-none-2e-2", "chain", 3, 2e-2, norm="none"),
        solo("solo-chain-r3-rms-1e-2", "chain", 3, 1e-2),
        solo("solo-chain-r3-rms-4e-2", "chain", 3, 4e-2),
        solo("solo-c2-r2-rms-2e-2", "chain:2", 2, 2e-2, seed=1),
        lora("lora-r1-1e-2", 1, 1e-2),
        solo("solo-chain-r2-none-2e-2", "chain", 2, 2e-2, norm="none"),
        *IDEAS,  # and lora-r4-1e-2@2: a third seed of LoRA's best, whose adapter lora-r4-1e-2-beam@2 decodes
    ],
}


def prepare_data(protocol: str, work: Path) -> Path:
    """The --data folder of a protocol: E2E itself (full) or a seeded sample of train.jsonl beside all of valid (proxy)."""
    rows = PROTOCOLS[protocol]["train_rows"]
    if rows is None:
        return E2E
    folder = work / "data"
    folder.mkdir(parents=True, exist_ok=True)
    lines = (E2E / "train.jsonl").read_text(encoding="utf-8").splitlines()
    picked = sorted(random.Random(0).sample(range(len(lines)), rows))
    (folder / "train.jsonl").write_text("".join(lines[i] + "\n" for i in picked), encoding="utf-8")
    (folder / "valid.jsonl").write_text((E2E / "valid.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    return folder


def folder_of(run: Run, work: Path) -> Path:
    return work / f"{run.name}-s{run.seed}"


def source_of(run: Run, work: Path) -> Path:
    """The run folder whose adapter, config and validation loss a run reports: its own, or for a decoding-only
    run that of the run it decodes."""
    return work / f"{run.decodes}-s{run.seed}" if run.decodes else folder_of(run, work)


def decode_command(run: Run, protocol: str, adapter: Path, folder: Path, device: str) -> list[str]:
    """Decode the test MRs with ``adapter`` (a run folder) into ``folder/test-preds.jsonl``, as ``run.decoding`` says."""
    test, p = str(E2E / "test.jsonl"), PROTOCOLS[protocol]
    tail = ["--max-new-tokens", "64", "--device", device, *(["--limit", str(p["test_mrs"])] if p["test_mrs"] else [])]
    tail += DECODINGS[run.decoding]
    if run.method == "lora":
        return [sys.executable, str(HERE / "lora_run.py"), "--decode", str(adapter), "-o", str(folder), "--test", test, *tail]
    out = ["-o", str(folder / "test-preds.jsonl"), "--batch-size", "64", "--json"]
    return [sys.executable, "-m", "solo_cli", "eval", "--adapter", str(adapter), "--data", test, *out, *tail]


def commands(run: Run, protocol: str, data: Path, work: Path, device: str) -> list[list[str]]:
    p, folder = PROTOCOLS[protocol], folder_of(run, work)
    if run.decodes:
        return [decode_command(run, protocol, source_of(run, work), folder, device)]
    py = sys.executable
    epochs = f"{run.epochs or p['epochs']:g}"
    common = ["--lr", f"{run.lr:g}", "--seed", str(run.seed), "--device", device, "--dtype", "float32"]
    common += ["--max-eval-rows", str(p["valid_rows"])]
    test = str(E2E / "test.jsonl")
    limit = ["--limit", str(p["test_mrs"])] if p["test_mrs"] else []
    if run.method == "lora":
        cmd = [py, str(HERE / "lora_run.py"), "--data", str(data), "-o", str(folder), "--rank", str(run.rank)]
        cmd += ["--batch", str(p["batch"]), "--epochs", epochs, *common]
        return [cmd + (["--test", test, *limit, *DECODINGS[run.decoding]] if p["decode"] else [])]
    train = [py, "-m", "solo_cli", "train", "--data", str(data), "-o", str(folder), "--overwrite"]
    train += ["--connections", run.connections, "--rank", str(run.rank), "--gate", run.gate, "--source-norm", run.source_norm]
    train += ["--batch-size", str(p["batch"]), "--epochs", epochs, "--eval-every", "1000000", *common, *run.flags]
    return [train] + ([decode_command(run, protocol, folder, folder, device)] if p["decode"] else [])


def execute(run: Run, protocol: str, data: Path, work: Path, device: str, threads: int, ended: dict) -> dict:
    """Train and decode ``run`` (or only decode, once the run it decodes has ended); ``ended[(name, seed)]`` is
    set when a run of this invocation ends, whatever its outcome."""
    try:
        folder, source = folder_of(run, work), source_of(run, work)
        if run.decodes and (run.decodes, run.seed) in ended:
            ended[(run.decodes, run.seed)].wait()
        if run.decodes and not finished(source, protocol, preds=False):
            return {
                "name": run.name,
                "seed": run.seed,
                "error": f"{source} holds no finished run to decode; run {run.decodes}@{run.seed} first",
            }
        env = with_root(os.environ | {"OMP_NUM_THREADS": str(threads)})
        log = folder.with_suffix(".log")
        folder.mkdir(parents=True, exist_ok=True)
        with log.open("w") as handle:
            for cmd in commands(run, protocol, data, work, device):
                proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
                if proc.returncode != 0:
                    return {"name": run.name, "seed": run.seed, "error": f"rc {proc.returncode}; see {log}"}
        return collect(run, work, protocol, env)
    finally:
        ended.get((run.name, run.seed), threading.Event()).set()


def finished(folder: Path, protocol: str, preds: bool = True) -> bool:
    """A run folder whose run got to the end: a validation loss, and (``preds``) its predictions when the protocol decodes."""
    metrics = folder / "metrics.jsonl"
    if not metrics.exists() or '"valid_loss"' not in metrics.read_text():
        return False
    return not (preds and PROTOCOLS[protocol]["decode"]) or (folder / "test-preds.jsonl").exists()


def run_finished(run: Run, work: Path, protocol: str) -> bool:
    """``run`` got to the end in ``work``: a decoding-only run has its predictions and a finished run to decode."""
    if run.decodes:
        return (folder_of(run, work) / "test-preds.jsonl").exists() and finished(source_of(run, work), protocol, preds=False)
    return finished(folder_of(run, work), protocol)


def collect(run: Run, work: Path, protocol: str, env: dict) -> dict:
    """One row of the results: what the run's config.json recorded, its validation loss, its scores (a decoding-only
    run: the config and validation loss of the run it decodes, its own predictions' scores)."""
    folder, source = folder_of(run, work), source_of(run, work)
    config = json.loads((source / "config.json").read_text())
    lines = [json.loads(x) for x in (source / "metrics.jsonl").read_text().splitlines() if x.strip()]
    valid = [x["valid_loss"] for x in lines if "valid_loss" in x]
    if run.method == "solo":
        summary = json.loads((source / "adapter.json").read_text()) if (source / "adapter.json").exists() else {}
        seconds = summary.get("seconds") or max((x.get("elapsed", 0) for x in lines), default=None)
        connections, gate = config["connections"], config["gate"]
    else:
        seconds, connections, gate = config["train_seconds"], config["connections"], None
    row = {
        "name": run.name,
        "method": run.method,
        "seed": config["seed"],
        "connections": connections,
        "rank": config["rank"],
        "gate": gate,
        "source_norm": config.get("source_norm") if run.method == "solo" else None,
        "lr": config["lr"],
        "trainable_params": config["trainable_params"],
        "valid_loss": valid[-1] if valid else None,
        "train_seconds": round(seconds, 1) if seconds else None,
        "epochs": config.get("epochs"),
        "lr_b_ratio": config.get("lr_b_ratio"),
        "homotopy_fraction": config.get("homotopy_fraction"),
        "decoding": run.decoding,
        "decodes": run.decodes,
    }
    preds = folder / "test-preds.jsonl"
    if PROTOCOLS[protocol]["decode"] and preds.exists():
        cmd = [sys.executable, "-m", "solo_cli", "eval", "--predictions", str(preds), "--data", str(E2E / "test.jsonl"), "--json"]
        cmd += ["--limit", str(PROTOCOLS[protocol]["test_mrs"])] if PROTOCOLS[protocol]["test_mrs"] else []
        scores = json.loads(subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, check=True).stdout)
        row |= {k: scores.get(k) for k in ("bleu", "nist", "meteor", "rouge_l", "cider")} | output_shape(preds)
    return row


def ordered(grid: list[Run]) -> list[Run]:
    """``grid`` with each decoding-only run moved just after the run it decodes where that comes later, so that
    no worker waits for a run that has not started."""
    keys = [(r.name, r.seed) for r in grid]
    out, later = [], {}
    for i, run in enumerate(grid):
        if run.decodes and (run.decodes, run.seed) in keys[i + 1 :]:
            later.setdefault((run.decodes, run.seed), []).append(run)
            continue
        out += [run, *later.pop((run.name, run.seed), [])]
    return out


def select(grid: list[Run], only: str, parser: argparse.ArgumentParser) -> list[Run]:
    """``--only``: NAME (every seed the grid has) or NAME@SEED (any seed of a configuration in the grid)."""
    picked: list[Run] = []
    for item in only.split(","):
        name, _, seed = item.partition("@")
        runs = [r for r in grid if r.name == name]
        if not runs:
            parser.error(
                f"--only {item}: no run named {name!r} in this protocol's grid; pick from {sorted({r.name for r in grid})}"
            )
        if seed and not seed.isdigit():
            parser.error(f"--only {item}: the seed after @ must be a whole number")
        picked += [replace(runs[0], seed=int(seed))] if seed else runs
    return list(dict.fromkeys(picked))


def output_shape(preds: Path) -> dict:
    """What the outputs look like: mean words per output, and the share of the MR's slot values (all but
    yes/no) that appear verbatim in it, a rough recall of the content (METEOR and ROUGE-L reward recall)."""
    rows = [json.loads(line) for line in preds.read_text(encoding="utf-8").splitlines() if line.strip()]
    words, copied = [], []
    for row in rows:
        words.append(len(row["prediction"].split()))
        values = [v for v in re.findall(r"\[([^\]]+)\]", row["prompt"]) if v.lower() not in ("yes", "no")]
        if values:
            copied.append(sum(v.lower() in row["prediction"].lower() for v in values) / len(values))
    if not words:
        return {"words": None, "slots_copied": None}
    return {"words": round(sum(words) / len(words), 2), "slots_copied": round(sum(copied) / max(1, len(copied)), 4)}


def device_name(device: str) -> str:
    import torch

    if device != "cpu" and torch.cuda.is_available():
        return f"{torch.cuda.get_device_name(0)} (torch {torch.__version__})"
    return f"cpu: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (torch {torch.__version__})"


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (no ties in these losses)."""

    def ranks(xs):
        order = sorted(range(len(xs)), key=xs.__getitem__)
        out = [0] * len(xs)
        for rank, i in enumerate(order):
            out[i] = rank
        return out

    ra, rb = ranks(a), ranks(b)
    n = len(a)
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(ra, rb)) / (n * (n * n - 1))


def agreement(proxy_path: Path) -> dict:
    """Rank the reference configurations by proxy validation loss and by the full protocol's."""
    runs = json.loads(proxy_path.read_text())["runs"]
    proxy = {r["name"]: r["valid_loss"] for r in runs if r.get("valid_loss") is not None and r["seed"] == 0}
    pairs = [(run.name, proxy[run.name], full) for run, full in REFERENCE.items() if run.name in proxy]
    rho = spearman([p for _, p, _ in pairs], [f for _, _, f in pairs]) if len(pairs) > 2 else None
    return {"configurations": len(pairs), "spearman": rho, "pairs": [{"name": n, "proxy": p, "full": f} for n, p, f in pairs]}


def _config_key(row: dict) -> tuple:
    """A run's configuration as its results row records it (config.json), without the seed or the run's name
    (settings a row predates count as their defaults)."""
    more = (row.get("epochs") or 1.0, row.get("lr_b_ratio") or 1.0, row.get("homotopy_fraction"), row.get("decoding", "greedy"))
    return (row["method"], row["connections"], row["rank"], row.get("gate"), row.get("source_norm"), row["lr"], *more)


def variant(row: dict) -> str:
    """What a row changes beyond plan, rank, gate, norm and lr: B's lr ratio, the ramp, epochs, the decoding."""
    parts = []
    if (row.get("lr_b_ratio") or 1.0) != 1.0:
        parts.append(f"B lr x{row['lr_b_ratio']:g}")
    if row.get("homotopy_fraction"):
        parts.append(f"ramp {row['homotopy_fraction']:.0%}")
    if (row.get("epochs") or 1.0) != 1.0:
        parts.append(f"{row['epochs']:g} epochs")
    if row.get("decoding", "greedy") != "greedy":
        parts.append(f"{row['decoding']} decoding of {row.get('decodes')}")
    return "; ".join(parts) or "-"


def agreement_today(proxy_path: Path, full_path: Path) -> dict | None:
    """Rank every configuration that both the proxy and today's full protocol ran (same settings, any names;
    validation loss, mean over seeds): does the proxy order them as the full protocol does?"""
    if not full_path.exists():
        return None

    def means(rows):
        by_key: dict[tuple, list] = {}
        for r in rows:
            if r.get("valid_loss") is not None:
                by_key.setdefault(_config_key(r), []).append((r["name"], r["valid_loss"]))
        return {k: (v[0][0], sum(x for _, x in v) / len(v)) for k, v in by_key.items()}

    proxy = means(json.loads(proxy_path.read_text())["runs"])
    full = means(json.loads(full_path.read_text())["runs"])
    keys = [k for k in full if k in proxy]
    pairs = [{"name": full[k][0], "proxy": proxy[k][1], "full": full[k][1]} for k in keys]
    rho = spearman([x["proxy"] for x in pairs], [x["full"] for x in pairs]) if len(pairs) > 2 else None
    solo = [x for k, x in zip(keys, pairs) if k[0] == "solo"]
    rho_solo = spearman([x["proxy"] for x in solo], [x["full"] for x in solo]) if len(solo) > 2 else None
    return {
        "configurations": len(pairs),
        "spearman": rho,
        "solo_configurations": len(solo),
        "spearman_solo": rho_solo,
        "pairs": pairs,
    }


def _rho(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _pair_table(title: str, label: str, pairs: list[dict]) -> list[str]:
    """An agreement check as markdown: its title, then each configuration's proxy and full validation loss."""
    rows = [f"| {x['name']} | {x['proxy']:.4f} | {x['full']:.4f} |" for x in pairs]
    return ["", title, "", f"| {label} | proxy valid loss | full valid loss |", "| --- | --- | --- |", *rows]


def markdown(report: dict) -> str:
    p = report["protocol"]
    lora_best = min(
        (r for r in report["runs"] if r["method"] == "lora" and r["rank"] == 4 and r.get("valid_loss")),
        key=lambda r: r["valid_loss"],
        default=None,
    )
    mrs = f"the first {PROTOCOLS['smoke']['test_mrs']}" if p["name"] == "smoke" else "all 630"
    lines = [
        f"# E2E NLG, protocol `{report['protocol']['name']}`",
        "",
        f"Command: `{report['command']}`. Device: {report['device']}. {p['train_rows']:,} training rows, "
        f"{p['epochs']} epoch(s) at batch {p['batch']}; validation loss on the first {p.get('valid_rows', 256)} rows of valid.jsonl"
        + (
            f"; greedy decoding (other decodings: the variant column) of {mrs} test MRs, official-scorer metrics."
            if p["decode"]
            else "; no decoding."
        )
        + f" Default: `{report.get('default')}`.",
        "",
        "| run | seed | method | plan | rank | gate | norm | lr | variant | params | % LoRA r4 | valid loss | BLEU | NIST | METEOR | ROUGE-L | CIDEr | words | slots copied | train s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def f(v, d=4):
        return "-" if v is None else f"{v:.{d}f}"

    for r in sorted(report["runs"], key=lambda r: r.get("valid_loss") or 99):
        share = f"{100 * r['trainable_params'] / lora_best['trainable_params']:.0f}%" if lora_best else "-"
        plan = r["connections"] if len(r["connections"]) < 30 else r["connections"][:27] + "..."
        lines.append(
            f"| {r['name']} | {r['seed']} | {r['method']} | {plan} | {r['rank']} | {r['gate'] or '-'} | {r.get('source_norm') or '-'} "
            f"| {r['lr']:g} | {variant(r)} | {r['trainable_params']:,} | {share} | {f(r['valid_loss'])} | {f(r.get('bleu'))} | {f(r.get('nist'), 3)} "
            f"| {f(r.get('meteor'))} | {f(r.get('rouge_l'))} | {f(r.get('cider'))} | {f(r.get('words'), 1)} | {f(r.get('slots_copied'), 3)} "
            f"| {r['train_seconds'] or '-'} |"
        )
    if report.get("notes"):
        lines += ["", *[f"- {n}" for n in report["notes"]]]
    if report.get("agreement"):
        a = report["agreement"]
        title = f"Agreement with the full protocol (reference-runs.md): Spearman {_rho(a['spearman'])} over {a['configurations']} configurations on validation loss."
        lines += _pair_table(title, "configuration", a["pairs"])
    if report.get("agreement_today"):
        a = report["agreement_today"]
        title = (
            f"Agreement with today's full protocol (e2e-full.json, same settings, means over seeds): Spearman "
            f"{_rho(a['spearman'])} over {a['configurations']} configurations; {_rho(a['spearman_solo'])} over the "
            f"{a['solo_configurations']} Solo ones."
        )
        lines += _pair_table(title, "configuration (full-protocol name)", a["pairs"])
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocol", choices=sorted(PROTOCOLS), default="proxy")
    parser.add_argument(
        "--jobs", type=int, default=None, help="runs at once, each its own process (default: 7 on CUDA, 2 on CPU)"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--only", default=None, help="comma-separated NAME or NAME@SEED; results merge into the existing file")
    parser.add_argument("--work", default=None, help="where run folders go (default /tmp/solo-e2e/<protocol>)")
    parser.add_argument("--agreement", action="store_true", help="only recompute the proxy/full agreement")
    parser.add_argument(
        "--collect",
        action="store_true",
        help="train nothing: build the results from the run folders in --work (runs made on another machine, scored here)",
    )
    opts = parser.parse_args()
    out = RESULTS / f"e2e-{opts.protocol}.json"
    if opts.agreement:
        report = json.loads((RESULTS / "e2e-proxy.json").read_text())
        report["agreement"] = agreement(RESULTS / "e2e-proxy.json")
        report["agreement_today"] = agreement_today(RESULTS / "e2e-proxy.json", RESULTS / "e2e-full.json")
        (RESULTS / "e2e-proxy.json").write_text(json.dumps(report, indent=2) + "\n")
        (RESULTS / "e2e-proxy.md").write_text(markdown(report))
        print(json.dumps(report["agreement"]))
        return
    import torch

    cuda = opts.device != "cpu" and torch.cuda.is_available()
    jobs = opts.jobs or (7 if cuda else 2)
    threads = max(1, (os.cpu_count() or 2) // jobs)
    work = Path(opts.work or f"/tmp/solo-e2e/{opts.protocol}")
    work.mkdir(parents=True, exist_ok=True)
    data = prepare_data(opts.protocol, work)
    grid = GRIDS[opts.protocol]
    if opts.only:  # a smoke run may check any run of the full grid
        grid = select(grid + (GRIDS["full"] if opts.protocol == "smoke" else []), opts.only, parser)
    grid = ordered(grid)
    merge = bool(opts.only or opts.collect)  # an --only run and a --collect add to the results file
    old = json.loads(out.read_text()) if out.exists() else {"runs": []}
    this = "python bench/e2e.py " + shlex.join(sys.argv[1:])
    p = PROTOCOLS[opts.protocol]
    report = {
        "device": device_name(opts.device),
        "command": "; ".join(filter(None, [old.get("command") if merge else None, this])),
        "protocol": {
            "name": opts.protocol,
            "train_rows": p["train_rows"] or 42061,
            "epochs": p["epochs"],
            "batch": p["batch"],
            "decode": p["decode"],
            "valid_rows": p["valid_rows"],
            "jobs": jobs,
        },
        "runs": [],
        "notes": old.get("notes", []),  # what was decided from these results, written by hand; kept on re-runs
    }
    started = time.perf_counter()
    if opts.collect:
        made = json.loads((work / "made.json").read_text())  # where and how the runs were made
        report["device"], report["protocol"]["jobs"] = made["device"], made.get("jobs", jobs)
        report["command"] = "; ".join(filter(None, [old.get("command"), f"{made['command']} (scored here: {this})"]))
        env = with_root(dict(os.environ))
        grid = [r for r in grid if run_finished(r, work, opts.protocol)]
        report["runs"] = [collect(r, work, opts.protocol, env) for r in grid]
        seconds = 0 if made["command"] in (old.get("command") or "") else made.get("seconds") or 0  # counted once
    else:
        made = {"device": report["device"], "command": this, "jobs": jobs}
        (work / "made.json").write_text(json.dumps(made) + "\n")
        ended = {(r.name, r.seed): threading.Event() for r in grid}  # decoding-only runs wait for the run they decode
        with ThreadPoolExecutor(jobs) as pool:
            for row in pool.map(lambda r: execute(r, opts.protocol, data, work, opts.device, threads, ended), grid):
                print(json.dumps(row), flush=True)
                if "error" not in row:
                    report["runs"].append(row)
        seconds = round(time.perf_counter() - started, 1)
        (work / "made.json").write_text(json.dumps(made | {"seconds": seconds}) + "\n")
    replaced = {(r.name, r.seed) for r in grid}
    report["runs"] = [r for r in old["runs"] if merge and (r["name"], r["seed"]) not in replaced] + report["runs"]
    report["seconds"] = round(seconds + (old.get("seconds") or 0 if merge else 0), 1)
    solo_runs = [
        r
        for r in report["runs"]
        if r["method"] == "solo"
        and not r["name"].startswith("ref-")
        and r.get("decoding", "greedy") == "greedy"
        and r["valid_loss"]
        and r["trainable_params"] <= BUDGET
    ]
    if solo_runs:
        report["default"] = min(solo_runs, key=lambda r: r["valid_loss"])["name"]
    if opts.protocol == "proxy":
        out.write_text(json.dumps(report, indent=2) + "\n")
        report["agreement"] = agreement(out)
        report["agreement_today"] = agreement_today(out, RESULTS / "e2e-full.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))


if __name__ == "__main__":
    main()
