"""The baseline of bench/dpo.py: TRL's DPOTrainer with peft LoRA r=8 on q_proj and v_proj, timed step by step.

    python bench/dpo_trl.py --data sample_data/e2e-pairs/train.jsonl -o OUT.json --steps 75 --batch 8 [--no-grad-checkpoint]

One process: the built-in model's float32 weights (what `solo train` loads), the pairs given to TRL
conversationally (a user turn, an assistant reply), so that its chat template renders them as solo's
does; in float32 as solo's run computes (DPOConfig's default is bf16); TRL's defaults otherwise (beta 0.1,
sigmoid loss, the reference is the model with the adapter disabled, gradient checkpointing on as DPOConfig
ships it unless --no-grad-checkpoint). Writes the
step times (between TrainerCallback's on_step_begin and on_step_end), the logged losses and
metrics, and the process's peak RSS and its RSS once the model has loaded.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    """This process's resident memory now, from /proc (MB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pairs(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    turn = lambda role, text: [{"role": role, "content": text}]  # noqa: E731
    return [
        {
            "prompt": turn("user", r["prompt"]),
            "chosen": turn("assistant", r["chosen"]),
            "rejected": turn("assistant", r["rejected"]),
        }
        for r in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=75)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--no-grad-checkpoint", action="store_true")
    opts = parser.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from solo_cli.engine.models import builtin_path

    path = builtin_path("smollm2-135m")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(path)
    loaded_rss = rss_mb()
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.tick = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.tick)

    args = DPOConfig(
        output_dir=str(opts.output.parent / "trl-run"),
        per_device_train_batch_size=opts.batch,
        max_steps=opts.steps,
        learning_rate=opts.lr,
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        max_length=opts.max_length,
        use_cpu=True,
        seed=0,
        gradient_checkpointing=not opts.no_grad_checkpoint,
        dataloader_num_workers=0,
        bf16=False,  # float32, as solo's run (DPOConfig turns bf16 on, which a CPU without AMX emulates at ~1/50 the speed)
    )
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(pairs(opts.data)),
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[Clock()],
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    result = {
        "framework": "trl",
        "trl_version": __import__("trl").__version__,
        "peft_version": __import__("peft").__version__,
        "steps": len(times),
        "batch": opts.batch,
        "grad_checkpoint": not opts.no_grad_checkpoint,
        "step_times": times,
        "train_seconds": seconds,
        "rss_loaded_mb": loaded_rss,
        "peak_rss_mb": peak_mb(),
        "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
        "logs": logs,
    }
    opts.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
