"""Shared pieces of the benchmarks: one training loop, one loss and one decoding path for every method,
so that the difference measured between Solo and LoRA is the adapter's.

LoRA is Hugging Face peft (a benchmark-only dependency: pip install -e ".[bench]").
"""

from __future__ import annotations

import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paths import E2E  # noqa: E402,F401  (re-exported for the benchmarks)

from solo_cli import AdapterConfig, SoloAdapter, attach, fingerprint  # noqa: E402
from solo_cli.data.row_encoding import Example, collate  # noqa: E402
from solo_cli.engine.loss import causal_lm_loss  # noqa: E402
from solo_cli.engine.models import load_model  # noqa: E402
from solo_cli.engine.topology import parse_connections  # noqa: E402
from solo_cli.training.optim import make_optimizer  # noqa: E402
from solo_cli.training.sampler import epoch_steps, step_batches  # noqa: E402

LORA_TARGETS = ["q_proj", "v_proj"]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def sample(rows: list, n: int, seed: int) -> list:
    picked = sorted(random.Random(seed).sample(range(len(rows)), min(n, len(rows))))
    return [rows[i] for i in picked]


def encode_file(path, tokenizer, max_len=128, chat_template=None, train_on_prompt=False):
    """The training split of a data file or folder as `solo train` reads, checks and encodes it (cached)."""
    from solo_cli.data.sources import load_source
    from solo_cli.data.spec import DataSpec
    from solo_cli.data.split_encoding import encode_rowset

    source = load_source(DataSpec(path))
    return encode_rowset(source.train, tokenizer, chat_template=chat_template, train_on_prompt=train_on_prompt, max_len=max_len)


def encode(rows, tokenizer, max_len=128, chat_template=None, train_on_prompt=False) -> list[Example]:
    """``rows`` encoded as `solo train` encodes them: written to a JSONL file, then :func:`encode_file`."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return list(encode_file(path, tokenizer, max_len, chat_template, train_on_prompt).examples)


def micro_batches(examples, batch_size: int, seed: int):
    """The sampler's stream for one process without accumulation: one micro-batch a step, as `solo train` orders them."""
    return (step[0] for step in step_batches(examples, batch_size, seed))


def epoch_batches(examples, batch_size: int, seed: int, epoch: int, lengths=None) -> list[list[int]]:
    """One epoch's micro-batches (example indices) in training order, length-grouped with ``lengths``."""
    return [batch for step in epoch_steps(examples, batch_size, seed, epoch, lengths) for batch in step]


class Method:
    """A trainable adapter on the shared base: Solo (hooks) or LoRA (peft), with its optimizer."""

    def __init__(self, name: str, kind: str, model, params: int, optimizer, on_step=None, detach=None, peft_model=None):
        self.name, self.kind, self.model, self.params = name, kind, model, params
        self.optimizer, self.on_step, self.detach, self.peft_model = optimizer, on_step or (lambda s: None), detach, peft_model


def solo_method(name, model, spec: str, rank: int, gate: str, lr: float, steps: int, homotopy: int | None = None):
    from solo_cli.training.config import TrainConfig

    fp = fingerprint(model)
    torch.manual_seed(0)
    adapter = SoloAdapter(
        AdapterConfig(
            parse_connections(spec, fp.num_blocks), rank, gate, homotopy or max(1, steps // 10), fp.hidden_size, source_norm="rms"
        )
    )
    handle = attach(model, adapter)
    optimizer, scheduler = make_optimizer(adapter, TrainConfig(lr=lr, warmup=max(1, steps // 20), schedule="linear"), steps)
    method = Method(
        name, "solo", model, adapter.num_parameters(), (optimizer, scheduler), adapter.set_homotopy_step, handle.detach
    )
    method.adapter = adapter
    return method


def lora_method(name, model, lr: float, steps: int, rank: int = 4, alpha: int = 32, dropout: float = 0.1, targets=None):
    """peft LoRA of rank ``rank`` on ``targets`` (default q_proj and v_proj; peft's "all-linear": every linear layer but the head)."""
    from peft import LoraConfig, get_peft_model
    from transformers import get_scheduler

    torch.manual_seed(0)
    peft_model = get_peft_model(
        model,
        LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets or LORA_TARGETS, task_type="CAUSAL_LM"),
    )
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    scheduler = get_scheduler("linear", optimizer, num_warmup_steps=max(1, steps // 20), num_training_steps=steps)

    def detach():
        peft_model.unload()  # removes the LoRA layers, leaving the base model as it was

    # The injected base model (not the PeftModel wrapper) goes through the shared loss, like Solo's.
    return Method(
        name,
        "lora",
        peft_model.get_base_model(),
        sum(p.numel() for p in params),
        (optimizer, scheduler),
        detach=detach,
        peft_model=peft_model,
    )


def train(
    method: Method, examples: list[Example], steps: int, batch_size: int, pad_id: int, seed: int = 0, device: str = "cpu"
) -> dict:
    """The one loop: same batches, same loss (completion tokens only), same schedule shape.

    On CUDA the float32 base runs under bf16 autocast, as `solo train` runs it, and each step is timed
    between two synchronizations (the GPU runs ahead of the host otherwise)."""
    optimizer, scheduler = method.optimizer
    trainable = [p for group in optimizer.param_groups for p in group["params"]]
    stream = micro_batches(examples, batch_size, seed)
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    method.model.train()
    times, losses = [], []
    for step in range(steps):
        method.on_step(step)
        batch = {k: v.to(device, non_blocking=True) for k, v in collate(next(stream), pad_id).items()}
        sync()
        tick = time.perf_counter()
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=cuda):
            loss, _ = causal_lm_loss(method.model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - tick)
        losses.append(float(loss.detach()))
    method.model.eval()
    return {"train_seconds": sum(times), "step_times": times, "final_loss": sum(losses[-10:]) / len(losses[-10:])}


@torch.no_grad()
def valid_loss(model, examples: list[Example], pad_id: int, batch_size: int = 16) -> float:
    total, count = 0.0, 0
    for start in range(0, len(examples), batch_size):
        loss, n = causal_lm_loss(model, collate(examples[start : start + batch_size], pad_id))
        total += float(loss) * n
        count += n
    return total / max(1, count)


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else math.nan


def load_base(dtype: str = "bfloat16"):
    torch.set_num_threads(2)
    return load_model("smollm2-135m", dtype=dtype)
