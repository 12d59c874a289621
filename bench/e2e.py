"""Quality on E2E NLG: Solo configurations against peft LoRA r=4 on q,v and the base model few-shot,
all through the same loop, data, loss, dtype and decoding, scored with `solo eval`'s metrics.

    python bench/e2e.py                      # about an hour on 2 CPU cores; writes bench/results/e2e.json and e2e.md
    python bench/e2e.py --steps 30 --test-mrs 20 --valid-mrs 10 --out /tmp/e2e-smoke.json   # a smoke run

Protocol: a seeded subset of train.jsonl; each method's learning rate picked by a short sweep on
validation loss (Solo's on the default plan, then shared by the Solo variants); the same number
of steps and batch size for every run; greedy decoding; BLEU etc. on a seeded subset of test MRs
(all references); the Solo default is the Solo run with the best BLEU on the validation MRs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import E2E, encode, load_base, lora_method, read_jsonl, sample, solo_method, train, valid_loss  # noqa: E402

from solo_cli.evaluation import eval_set  # noqa: E402
from solo_cli.generation import GenerationSettings, generate  # noqa: E402
from solo_cli.metrics import Scorer  # noqa: E402

LORA_PARAMS_NOTE = "LoRA r=4 on q_proj and v_proj, alpha 32, dropout 0.1 (Hu et al. 2021)"
SOLO_RUNS = [  # name, connections, rank, gate
    ("solo-top2-r16-learned", "top:2", 16, "learned"),
    ("solo-top2-r16-schedule", "top:2", 16, "schedule"),
    ("solo-top2-r16-zero-init", "top:2", 16, "zero-init"),
    ("solo-top2-r32-learned", "top:2", 32, "learned"),
    ("solo-top4-r16-learned", "top:4", 16, "learned"),
    ("solo-long2-r16-learned", "top:2:27", 16, "learned"),
    ("solo-mirror4-r16-learned", "mirror:4", 16, "learned"),
    ("solo-chain15-r4-learned", "chain:15", 4, "learned"),
]
FEW_SHOT = 3


def grouped(rows: list[dict], n: int, seed: int):
    data = eval_set(rows, "prompt" if "references" in rows[0] else "completion")
    picked = sorted(sample(list(range(len(data.prompts))), n, seed))
    return [data.prompts[i] for i in picked], [data.references[i] for i in picked]


def few_shot_prompts(prompts: list[str], shots: list[dict]) -> list[list[dict]]:
    head = [{"role": "system", "content": "Write one fluent sentence or two describing the restaurant from its attributes."}]
    for row in shots:
        head += [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["completion"]}]
    return [head + [{"role": "user", "content": p}] for p in prompts]


def decode_and_score(model, tokenizer, prompts, references, opts, scorer) -> tuple[dict, list[str]]:
    settings = GenerationSettings(
        max_new_tokens=opts.max_new_tokens, num_beams=opts.num_beams, no_repeat_ngram_size=4 if opts.num_beams > 1 else 0
    )
    tick = time.perf_counter()
    preds = [p.strip() for p in generate(model, tokenizer, prompts, settings, chat=True, batch_size=opts.gen_batch)]
    scores = scorer.score(preds, references).to_dict()
    scores["decode_seconds"] = round(time.perf_counter() - tick, 1)
    return scores, preds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--sweep-steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--train-rows", type=int, default=2000)
    parser.add_argument("--valid-rows", type=int, default=200, help="rows for validation loss")
    parser.add_argument("--valid-mrs", type=int, default=100, help="MRs for validation BLEU (default selection)")
    parser.add_argument("--test-mrs", type=int, default=200)
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--num-beams", type=int, default=1)
    parser.add_argument("--gen-batch", type=int, default=16)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--solo-lrs", default="3e-3,1e-2,3e-2")
    parser.add_argument("--lora-lrs", default="5e-4,2e-3,5e-3")
    parser.add_argument("--only", default=None, help="comma-separated run names (others skipped)")
    parser.add_argument("--out", default=str(HERE / "results" / "e2e.json"))
    opts = parser.parse_args()
    started = time.perf_counter()
    loaded = load_base(opts.dtype)
    model, tok = loaded.model, loaded.tokenizer
    pad = tok.pad_token_id
    train_rows = sample(read_jsonl(E2E / "train.jsonl"), opts.train_rows, seed=0)
    valid_rows = read_jsonl(E2E / "valid.jsonl")
    train_examples = encode(train_rows, tok)
    valid_examples = encode(sample(valid_rows, opts.valid_rows, seed=1), tok)
    valid_prompts, valid_refs = grouped(valid_rows, opts.valid_mrs, seed=2)
    test_prompts, test_refs = grouped(read_jsonl(E2E / "test.jsonl"), opts.test_mrs, seed=3)
    out = Path(opts.out)
    report = {
        "model": "smollm2-135m (SmolLM2-135M-Instruct)",
        "device": "cpu, 2 threads",
        "dtype": opts.dtype,
        "command": "python bench/e2e.py " + " ".join(sys.argv[1:]),
        "protocol": {
            "train_rows": len(train_rows),
            "steps": opts.steps,
            "batch": opts.batch,
            "valid_loss_rows": opts.valid_rows,
            "valid_mrs": len(valid_prompts),
            "test_mrs": len(test_prompts),
            "decoding": "greedy" if opts.num_beams == 1 else f"beam {opts.num_beams}, no-repeat 4",
            "max_new_tokens": opts.max_new_tokens,
            "prompt_format": "chat template (user = MR, assistant = reference), as solo train does",
            "metric_scale": "official E2E scorer scale: BLEU, METEOR, ROUGE-L in 0-1; NIST; CIDEr; chrF 0-100",
            "lora": LORA_PARAMS_NOTE,
        },
        "sweep": {},
        "runs": [],
    }
    only = set(opts.only.split(",")) if opts.only else None

    def save():
        out.parent.mkdir(parents=True, exist_ok=True)
        solo = [r for r in report["runs"] if r["method"] == "solo"]
        if solo:
            report["default"] = max(solo, key=lambda r: r["valid_bleu"])["name"]
        report["seconds"] = round(time.perf_counter() - started, 1)
        out.write_text(json.dumps(report, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(report))

    def sweep(kind: str, lrs: str) -> float:
        losses = {}
        for lr in (float(x) for x in lrs.split(",")):
            method = (
                lora_method("sweep", model, lr, opts.sweep_steps)
                if kind == "lora"
                else solo_method("sweep", model, "top:2", 16, "learned", lr, opts.sweep_steps)
            )
            train(method, train_examples, opts.sweep_steps, opts.batch, pad)
            losses[lr] = valid_loss(method.model, valid_examples, pad)
            method.detach()
            print(f"sweep {kind} lr {lr:g}: valid loss {losses[lr]:.4f}", flush=True)
        report["sweep"][kind] = {f"{lr:g}": round(v, 4) for lr, v in losses.items()}
        save()
        return min(losses, key=losses.get)

    with Scorer() as scorer:
        if only is None or "base-few-shot" in only:
            shots = train_rows[:FEW_SHOT]
            test_scores, preds = decode_and_score(model, tok, few_shot_prompts(test_prompts, shots), test_refs, opts, scorer)
            valid_scores, _ = decode_and_score(model, tok, few_shot_prompts(valid_prompts, shots), valid_refs, opts, scorer)
            report["runs"].append(
                {
                    "name": "base-few-shot",
                    "method": "base",
                    "trainable_params": 0,
                    "lr": None,
                    "train_seconds": 0.0,
                    "valid_loss": round(valid_loss(model, valid_examples, pad), 4),
                    "valid_bleu": valid_scores["bleu"],
                    **test_scores,
                    "sample": preds[:3],
                }
            )
            print(json.dumps(report["runs"][-1]), flush=True)
            save()
        lora_lr = sweep("lora", opts.lora_lrs) if only is None or "lora-r4-qv" in only else None
        solo_lr = sweep("solo", opts.solo_lrs) if only is None or any(n.startswith("solo") for n in only) else None
        plans = ([("lora-r4-qv", "lora", None, None, None)] if lora_lr else []) + [
            (n, "solo", c, r, g) for n, c, r, g in SOLO_RUNS
        ]
        for name, kind, spec, rank, gate in plans:
            if only is not None and name not in only:
                continue
            lr = lora_lr if kind == "lora" else solo_lr
            method = (
                lora_method(name, model, lr, opts.steps)
                if kind == "lora"
                else solo_method(name, model, spec, rank, gate, lr, opts.steps)
            )
            stats = train(method, train_examples, opts.steps, opts.batch, pad)
            vloss = valid_loss(method.model, valid_examples, pad)
            valid_scores, _ = decode_and_score(method.model, tok, valid_prompts, valid_refs, opts, scorer)
            test_scores, preds = decode_and_score(method.model, tok, test_prompts, test_refs, opts, scorer)
            method.detach()
            report["runs"].append(
                {
                    "name": name,
                    "method": kind,
                    "connections": spec,
                    "rank": rank or 4,
                    "gate": gate,
                    "trainable_params": method.params,
                    "lr": lr,
                    "train_seconds": round(stats["train_seconds"], 1),
                    "step_s_median": round(sorted(stats["step_times"])[len(stats["step_times"]) // 2], 3),
                    "final_train_loss": round(stats["final_loss"], 4),
                    "valid_loss": round(vloss, 4),
                    "valid_bleu": valid_scores["bleu"],
                    **test_scores,
                    "sample": preds[:3],
                }
            )
            print(json.dumps(report["runs"][-1]), flush=True)
            save()
    save()


def markdown(report: dict) -> str:
    p = report["protocol"]
    lora = next((r for r in report["runs"] if r["method"] == "lora"), None)
    lines = [
        f"# E2E NLG: Solo vs LoRA on {report['model']}",
        "",
        f"Command: `{report['command']}` ({report['device']}, {report['dtype']}, {report.get('seconds', 0) / 60:.0f} min). "
        f"{p['train_rows']} training rows, {p['steps']} steps of batch {p['batch']}, {p['decoding']} decoding, "
        f"test metrics on {p['test_mrs']} test MRs (all references), selection on {p['valid_mrs']} validation MRs. "
        f"BLEU, METEOR, ROUGE-L on the official 0-1 scale. Learning rates by sweep on validation loss: {report['sweep']}.",
        "",
        "| run | trainable params | % of LoRA | lr | train s | valid loss | valid BLEU | BLEU | NIST | METEOR | ROUGE-L | CIDEr | chrF |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def fmt(v, digits=4):
        return "n/a" if v is None else f"{v:.{digits}f}"

    for r in report["runs"]:
        share = f"{100 * r['trainable_params'] / lora['trainable_params']:.0f}%" if lora and r["trainable_params"] else "-"
        mark = " **(default)**" if r["name"] == report.get("default") else ""
        lines.append(
            f"| {r['name']}{mark} | {r['trainable_params']:,} | {share} | {r['lr'] if r['lr'] else '-'} | "
            f"{r['train_seconds']} | {fmt(r['valid_loss'])} | {fmt(r['valid_bleu'])} | {fmt(r['bleu'])} | "
            f"{fmt(r['nist'])} | {fmt(r['meteor'])} | {fmt(r['rouge_l'])} | {fmt(r['cider'])} | {fmt(r['chrf'], 1)} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
