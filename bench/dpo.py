"""Preference tuning on E2E: an SFT adapter, DPO from it, and what DPO changes; solo's DPO step against TRL's.

    python bench/dpo.py                 # the measurement (bench/results/dpo.json and dpo.md)
    python bench/dpo.py --quick         # a smoke run of every part on a few rows (written beside its runs)

1. SFT: `solo train` with today's defaults on sample_data/e2e (300 rows, one epoch).
2. DPO from it: `--objective dpo --init-adapter` the SFT adapter, one epoch over the first ``--pairs``
   pairs of sample_data/e2e-pairs/train.jsonl (320: the two pairs of each of the first 160 rows; all
   598 cost twice the time on 2 CPU cores), validated on e2e-pairs/valid.jsonl, with --grad-checkpoint
   (the trade TRL's DPOConfig makes by default; --no-grad-checkpoint turns it off in both runs), run in a
   worker process that records its step times, the reference pass and its peak RSS.
3. TRL: bench/dpo_trl.py, DPOTrainer with peft LoRA r=8 on q_proj and v_proj over the same base
   (float32), pairs and batch, for ``--trl-steps`` steps (a TRL step is the slow one), in a process of
   its own. Step times compared: the medians of each run's first ``--trl-steps`` steps, less the first.
4. Quality, on held-out data: each adapter's pair accuracy on sample_data/e2e-pairs/test.jsonl (the
   chosen reply is the likelier one) and its mean margin, the DPO adapter's reward accuracy against
   its reference (TRL's rewards/accuracies: the SFT adapter), and the slot errors (bench/slot_errors.py)
   of greedy outputs on the 50 MRs of sample_data/e2e/test.jsonl.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from paths import with_root  # noqa: E402
from slot_errors import count as count_slot_errors  # noqa: E402

E2E, PAIRS = ROOT / "sample_data" / "e2e", ROOT / "sample_data" / "e2e-pairs"
COMMAND = "python bench/dpo.py"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def solo(*args, env=None) -> None:
    """`solo ARGS` in a process of its own (python -m solo_cli), failing loudly."""
    done = subprocess.run([sys.executable, "-m", "solo_cli", *map(str, args)], env=with_root(env or dict(os.environ)))
    if done.returncode:
        raise SystemExit(f"solo {' '.join(map(str, args))}: exit {done.returncode}")


def worker(opts) -> None:
    """The DPO run in this process: `solo train`'s engine, with its step times, reference pass and memory recorded."""
    import solo_cli.training.run as run_module
    from solo_cli.training.config import build_config
    from solo_cli.training.run import check_output, execute, prepare

    cfg = build_config(None, json.loads(opts.worker))
    run = prepare(cfg)
    loaded_rss = rss_mb()
    check_output(cfg)
    reference = {}
    real = run_module.attach_references

    def timed(*args):
        tick = time.perf_counter()
        real(*args)
        reference["seconds"] = time.perf_counter() - tick

    run_module.attach_references = timed
    stamps = []
    execute(run, lambda event, info: stamps.append(time.perf_counter()) if event == "step" else None)
    steps = [b - a for a, b in zip(stamps, stamps[1:])]
    result = {
        "steps": run.steps,
        "step_times": steps,  # between consecutive steps' reports: step 2 on (the first holds the loop's start)
        "reference_seconds": reference.get("seconds"),
        # the batches that pass scored: what a frozen reference would score again, one batch each step
        "reference_batches": sum(-(-len(d.examples) // cfg.batch_size) for d in (run.train, run.valid) if d is not None),
        "rss_loaded_mb": loaded_rss,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "trainable_params": run.adapter.num_parameters(),
    }
    Path(opts.worker_out).write_text(json.dumps(result, indent=2))


def subset(folder: Path, out: Path, counts: dict[str, int]) -> Path:
    for split, n in counts.items():
        write_jsonl(out / f"{split}.jsonl", read_jsonl(folder / f"{split}.jsonl")[:n])
    return out


def pair_logps(model, tokenizer, rows, batch: int = 16):
    """Per pair: (chosen, rejected) log-probabilities under ``model`` as it is (each reply on its own tokens)."""
    import torch

    from solo_cli.data.pairs import collate_pairs
    from solo_cli.data.split_encoding import encode_rowset
    from solo_cli.engine.preference import reply_logps

    pairs = encode_rowset(rows, tokenizer, chat_template=True, train_on_prompt=False, max_len=256).examples
    out = []
    model.eval()
    with torch.no_grad():
        for start in range(0, len(pairs), batch):
            logps, _ = reply_logps(model, collate_pairs(pairs[start : start + batch], tokenizer.pad_token_id))
            out += list(zip(*(t.tolist() for t in logps.chunk(2))))
    return out


def error_kind(pair: dict) -> str:
    """Which error sample_data/make_pairs.py put in the rejected reply, read off the two texts: add, drop or swap."""
    chosen, rejected = pair["chosen"], pair["rejected"]
    if rejected.startswith(chosen.rstrip()) and len(rejected) > len(chosen):
        return "add"
    return "drop" if len(rejected) < len(chosen) - 3 else "swap"


def by_kind(rows: list[dict], margins: list[float]) -> dict:
    """Pair accuracy by kind of error (drops are the hard ones: the rejected reply is the shorter)."""
    kinds: dict[str, list[bool]] = {}
    for row, margin in zip(rows, margins):
        kinds.setdefault(error_kind(row), []).append(margin > 0)
    return {kind: {"pairs": len(v), "pair_accuracy": sum(v) / len(v)} for kind, v in sorted(kinds.items())}


def quality(work: Path, test_pairs: Path, test_mrs: Path, generate_limit: int | None = None, max_new_tokens: int = 64) -> dict:
    """Pair accuracy, margins and slot errors of the SFT and DPO adapters; DPO's reward accuracy against SFT."""
    from solo_cli import attach, load_adapter
    from solo_cli.data.sources import load_split
    from solo_cli.data.spec import DataSpec
    from solo_cli.engine.models import load_model
    from solo_cli.evaluation.eval_set import eval_set_of
    from solo_cli.evaluation.model_eval import predict
    from solo_cli.inference.generation_settings import GenerationSettings

    loaded = load_model("smollm2-135m", dtype="float32")
    pairs = load_split(DataSpec(test_pairs))
    targets = eval_set_of(load_split(DataSpec(test_mrs)))
    n = generate_limit or len(targets.prompts)
    targets.prompts, targets.references = targets.prompts[:n], targets.references[:n]
    settings = GenerationSettings(max_new_tokens=max_new_tokens)
    found, logps = {}, {}
    for name in ("sft", "dpo"):
        adapter, info = load_adapter(work / name / "adapter.safetensors")
        handle = attach(loaded.model, adapter)
        try:
            logps[name] = pair_logps(loaded.model, loaded.tokenizer, pairs)
            tick = time.perf_counter()
            preds = predict(loaded.model, loaded.tokenizer, targets, settings, chat=info.chat_template, batch_size=16)
            seconds = time.perf_counter() - tick
        finally:
            handle.detach()
        margins = [c - r for c, r in logps[name]]
        errors = count_slot_errors(preds, targets.prompts)
        write_jsonl(work / f"{name}-test-preds.jsonl", [{"prompt": p, "prediction": x} for p, x in zip(targets.prompts, preds)])
        found[name] = {
            "pairs": len(margins),
            "pair_accuracy": sum(m > 0 for m in margins) / len(margins),
            "pair_margin": statistics.fmean(margins),
            "pair_accuracy_by_error": by_kind(read_jsonl(test_pairs), margins),
            "slot_errors": {k: v for k, v in errors.items() if k != "per_output"},
            "generate_seconds": seconds,
            "examples": [{"mr": p, "output": x} for p, x in list(zip(targets.prompts, preds))[:3]],
        }
    reward = [(dc - sc) > (dr - sr) for (dc, dr), (sc, sr) in zip(logps["dpo"], logps["sft"])]  # beta > 0: its sign
    found["dpo"]["reward_accuracy_vs_sft"] = sum(reward) / len(reward)
    return found


def describe_machine() -> str:
    import torch

    return f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="every part on a few rows and steps (a smoke run)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-dpo", help="run folders and predictions")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--dpo-lr", type=float, default=5e-3)
    parser.add_argument("--pairs", type=int, default=320, help="training pairs of the DPO run (one epoch over them)")
    parser.add_argument("--trl-steps", type=int, default=9, help="TRL steps timed (the first is left out of the median)")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument(
        "--no-grad-checkpoint",
        action="store_true",
        help="both DPO runs without activation checkpointing (default: with it, as TRL's DPOConfig ships; solo's --grad-checkpoint)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.worker:
        return worker(opts)
    started = time.perf_counter()
    work = opts.work / ("quick" if opts.quick else "full")
    work.mkdir(parents=True, exist_ok=True)
    sft_data, sft_args, limits = E2E, [], {}
    pairs = subset(PAIRS, work / "pairs", {"train": opts.pairs, "valid": 50, "test": 10**6})
    if opts.quick:
        sft_data = subset(E2E, work / "e2e", {"train": 16, "valid": 8})
        pairs = subset(PAIRS, work / "pairs", {"train": 16, "valid": 8, "test": 8})
        sft_args, limits = ["--max-steps", 2, "--batch-size", 4], {"generate_limit": 4, "max_new_tokens": 16}
    # 1. SFT with today's defaults
    solo("train", "--data", sft_data, "-o", work / "sft", "--overwrite", *sft_args)
    # 2. DPO from it, in a worker that records its steps and memory
    dpo = {"data": str(pairs), "output": str(work / "dpo"), "objective": "dpo", "init_adapter": str(work / "sft"),
           "lr": opts.dpo_lr, "beta": opts.beta, "dtype": "float32", "overwrite": True,
           "grad_checkpoint": not opts.no_grad_checkpoint,  # the memory-for-compute trade TRL's DPOConfig makes
           "eval_every": 10**6}  # fmt: skip  # validation only after the last step: no step time holds one
    if opts.quick:
        dpo |= {"max_steps": 2, "batch_size": 4}
    worker_out = work / "dpo-worker.json"
    command = [sys.executable, str(Path(__file__)), "--worker", json.dumps(dpo), "--worker-out", str(worker_out)]
    subprocess.run(command, check=True, env=with_root(dict(os.environ)))
    solo_run = json.loads(worker_out.read_text())
    # 3. TRL over the same base, pairs, batch and steps
    trl_out = work / "trl.json"
    trl = [sys.executable, str(HERE / "dpo_trl.py"), "--data", str(pairs / "train.jsonl"), "-o", str(trl_out)]
    trl += ["--steps", str(min(opts.trl_steps, solo_run["steps"])), "--batch", str(dpo.get("batch_size", 8))]
    trl += ["--no-grad-checkpoint"] if opts.no_grad_checkpoint else []
    subprocess.run(trl, check=True, env=with_root(dict(os.environ)))
    trl_run = json.loads(trl_out.read_text())
    # 4. quality on held-out data
    found = quality(work, pairs / "test.jsonl", E2E / "test.jsonl", **limits)
    report(opts, work, solo_run, trl_run, found, time.perf_counter() - started)


def report(opts, work: Path, solo_run: dict, trl_run: dict, found: dict, seconds: float) -> None:
    # the first steps of each, less the first (TRL's warm-up; solo's times start at its second step)
    timed = len(trl_run["step_times"])
    solo_step = statistics.median(solo_run["step_times"][: max(1, timed - 1)])
    trl_step = statistics.median(trl_run["step_times"][1:] or trl_run["step_times"])
    sft_errors, dpo_errors = (found[k]["slot_errors"]["slot_errors"] for k in ("sft", "dpo"))
    result = {
        "command": COMMAND + (" --quick" if opts.quick else ""),
        "device": describe_machine(),
        # TRL's rewards/accuracies on the held-out pairs: the DPO adapter's log-ratio against its reference (SFT) is
        # higher for the chosen reply than for the rejected one
        "heldout_reward_accuracy": found["dpo"]["reward_accuracy_vs_sft"],
        # each adapter on its own: the chosen reply is the likelier one (what `solo eval` reports on pairs)
        "heldout_pair_accuracy": {name: found[name]["pair_accuracy"] for name in ("sft", "dpo")},
        "slot_error_reduction": 1 - dpo_errors / max(1, sft_errors),
        "peak_ratio_vs_trl": solo_run["peak_rss_mb"] / trl_run["peak_rss_mb"],
        "step_ratio_vs_trl": solo_step / trl_step,
        "peak_above_loaded_ratio_vs_trl": (solo_run["peak_rss_mb"] - solo_run["rss_loaded_mb"])
        / max(1e-9, trl_run["peak_rss_mb"] - trl_run["rss_loaded_mb"]),
        "step_ratio_vs_trl_with_reference_pass": (solo_step + (solo_run["reference_seconds"] or 0) / solo_run["steps"])
        / trl_step,
        # the other design: a frozen copy of the start adapter scoring each step's batch (the reference pass, per batch)
        "frozen_reference_step_s": (solo_run["reference_seconds"] or 0) / max(1, solo_run["reference_batches"]),
        "solo": solo_run | {"median_step_s": solo_step},
        "trl": {k: v for k, v in trl_run.items() if k != "logs"} | {"median_step_s": trl_step},
        "trl_last_log": trl_run["logs"][-1] if trl_run["logs"] else None,
        "quality": found,
        "settings": {"dpo_lr": opts.dpo_lr, "beta": opts.beta, "quick": opts.quick},
        "seconds": seconds,
    }
    out = work if opts.quick else opts.out  # a smoke run's numbers stay beside its runs, out of bench/results
    out.mkdir(parents=True, exist_ok=True)
    (out / "dpo.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "dpo.md").write_text(markdown(result))
    print(markdown(result))


def markdown(r: dict) -> str:
    q, s, t = r["quality"], r["solo"], r["trl"]

    def row(name: str) -> str:
        e = q[name]["slot_errors"]
        by_error = " / ".join(f"{v['pair_accuracy']:.2f}" for v in q[name]["pair_accuracy_by_error"].values())
        return (
            f"| {name} | {q[name]['pair_accuracy']:.3f} | {by_error} | {q[name]['pair_margin']:.2f} "
            f"| {e['slot_errors']} | {e['missing']} | {e['added']} | {e['slot_error_rate']:.3f} |"
        )

    return "\n".join(
        [
            "# Preference tuning on E2E: SFT, then DPO from it (smollm2-135m)",
            "",
            f"Command: `{r['command']}`. Device: {r['device']}. Took {r['seconds'] / 60:.1f} min.",
            "",
            "## Held-out quality",
            "",
            f"| adapter | pair accuracy | by error ({' / '.join(q['dpo']['pair_accuracy_by_error'])}) | mean margin (nats) "
            "| slot errors | missing | added | slot error rate |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            row("sft"),
            row("dpo"),
            "",
            f"- Pairs: sample_data/e2e-pairs/test.jsonl ({q['dpo']['pairs']} pairs); pair accuracy: the chosen reply has the "
            "higher log-probability under the adapter (`solo eval` on pairs). The DPO adapter's reward accuracy against "
            f"its reference (the SFT adapter; TRL's rewards/accuracies): {q['dpo']['reward_accuracy_vs_sft']:.3f}.",
            f"- Slot errors (bench/slot_errors.py) of greedy outputs on {q['dpo']['slot_errors']['outputs']} MRs of "
            f"sample_data/e2e/test.jsonl: {r['slot_error_reduction']:.0%} fewer after DPO.",
            f"- Target: held-out accuracy >= 0.9 after DPO: reward accuracy (heldout_reward_accuracy) "
            f"{r['heldout_reward_accuracy']:.3f}, pair accuracy {r['heldout_pair_accuracy']['dpo']:.3f}. Target: slot errors "
            f"down >= 30%: slot_error_reduction {r['slot_error_reduction']:.3f}.",
            "",
            "## The DPO run against TRL's DPOTrainer + peft LoRA r=8 on q,v",
            "",
            "| | trainable params | steps | median step (s) | peak RSS (MB) | RSS loaded (MB) | peak above loaded (MB) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| solo dpo | {s['trainable_params']:,} | {s['steps']} | {s['median_step_s']:.3f} | {s['peak_rss_mb']:.0f} | "
            f"{s['rss_loaded_mb']:.0f} | {s['peak_rss_mb'] - s['rss_loaded_mb']:.0f} |",
            f"| trl + lora | {t['trainable_params']:,} | {t['steps']} | {t['median_step_s']:.3f} | {t['peak_rss_mb']:.0f} | "
            f"{t['rss_loaded_mb']:.0f} | {t['peak_rss_mb'] - t['rss_loaded_mb']:.0f} |",
            "",
            f"- step_ratio_vs_trl {r['step_ratio_vs_trl']:.3f}, peak_ratio_vs_trl {r['peak_ratio_vs_trl']:.3f} (targets <= 0.8); "
            f"peak above the loaded model {r['peak_above_loaded_ratio_vs_trl']:.3f}x TRL's.",
            f"- solo scores its reference once before the first step ({s['reference_seconds'] or 0:.1f} s for every training "
            f"and validation pair); spread over the steps, the ratio is {r['step_ratio_vs_trl_with_reference_pass']:.3f}. "
            f"A frozen copy of the starting adapter scoring each step's batch instead would add about "
            f"{r['frozen_reference_step_s']:.2f} s to every step ({r['frozen_reference_step_s'] / s['median_step_s']:.0%} of "
            "one), and again to every validation, for the same numbers.",
            f"- TRL scores the reference (the adapter disabled) in every step. Activation checkpointing "
            f"{'on in both runs (TRL: DPOConfig as it ships; solo: --grad-checkpoint)' if t['grad_checkpoint'] else 'off in both runs'}.",
            "",
        ]
    )


if __name__ == "__main__":
    main()
