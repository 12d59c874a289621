"""Operations one training step dispatches (forward and backward, views left out): a device-free count of
the kernels a GPU would launch, for the default Solo adapter and peft LoRA on the built-in model.

    python bench/ops.py             # prints the counts and the most frequent operations

The step runs under bf16 autocast, as `solo train` runs a float32 base on a GPU, so the casts count.
"""

from __future__ import annotations

import collections
import json
import platform
import sys
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import E2E, encode, lora_method, read_jsonl, sample, solo_method  # noqa: E402

from solo_cli.data.row_encoding import collate  # noqa: E402
from solo_cli.engine.loss import causal_lm_loss  # noqa: E402
from solo_cli.engine.models import load_model  # noqa: E402
from solo_cli.training.config import TrainConfig  # noqa: E402

VIEWS = {"view", "_unsafe_view", "t", "transpose", "expand", "slice", "select", "unsqueeze", "squeeze", "permute"}
VIEWS |= {"alias", "as_strided", "detach", "reshape", "split", "unbind", "_reshape_alias", "lift_fresh"}
VIEWS |= {"empty", "empty_like", "empty_strided"}


class Count(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in VIEWS:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))


def count(method, batch) -> collections.Counter:
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss, _ = causal_lm_loss(method.model, batch)
        loss.backward()

    method.model.train()  # as in training: LoRA's dropout runs
    step()  # warm-up: lazy initialisation is not part of a step
    with Count() as counter:
        step()
    return counter.ops


def main() -> None:
    loaded = load_model("smollm2-135m", dtype="float32")
    rows = sample(read_jsonl(E2E / "train.jsonl"), 64, seed=0)
    examples = [e for e in encode(rows, loaded.tokenizer, max_len=64) if len(e.input_ids) == 64][:4]
    batch = collate(examples, loaded.tokenizer.pad_token_id)
    d = TrainConfig()
    result = {}
    solo = solo_method("solo", loaded.model, d.connections, d.rank, d.gate, 1e-3, 10)
    solo.on_step(5)  # mid-ramp: the gate is neither 0 nor 1
    result[f"solo default ({d.connections}, r={d.rank})"] = count(solo, batch)
    solo.detach()
    lora = lora_method("lora", loaded.model, 1e-3, 10, rank=4)
    result["lora r4 q,v"] = count(lora, batch)
    for name, ops in result.items():
        print(json.dumps({"adapter": name, "ops_per_step": sum(ops.values()), "top": ops.most_common(8)}))
    totals = {name: sum(ops.values()) for name, ops in result.items()}
    solo_total, lora_total = totals.values()
    device = f"CPU ({platform.processor() or platform.machine()}), torch {torch.__version__}"
    here = Path(__file__).resolve().parent / "results"
    (here / "ops.json").write_text(
        json.dumps(
            {
                "command": "python bench/ops.py",
                "device": device,
                "batch": "4 x 64 tokens, bf16 autocast on the CPU",
                "ops_per_step": totals,
                "solo_over_lora": round(solo_total / lora_total, 3),
                "ops": result,
            },
            indent=2,
        )
        + "\n"
    )
    rows = "\n".join(f"| {name} | {total:,} |" for name, total in totals.items())
    (here / "ops.md").write_text(
        f"# Operations one training step dispatches\n\n`python bench/ops.py` on {device}: one forward and backward,\n"
        f"4 x 64 tokens of E2E, bf16 autocast over the float32 built-in model, views left out (bench/ops.py).\n\n"
        f"| adapter | operations |\n|---|---:|\n{rows}\n\nSolo / LoRA r=4: **{solo_total / lora_total:.3f}x**.\n"
    )


if __name__ == "__main__":
    main()
