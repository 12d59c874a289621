"""A training step reads the device once: loss, gates and the finiteness checks come back in one transfer."""

import sys
from collections import Counter
from pathlib import Path

import pytest
import torch

from solo_cli.engine.models import load_model
from solo_cli.training.config import TrainConfig
from solo_cli.training.run import check_output, execute, prepare

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__")
TRAINING = str(Path(__file__).resolve().parents[2] / "solo_cli" / "training")


@pytest.mark.parametrize("grad_accum", [1, 3])
def test_at_most_one_host_read_per_optimizer_step(tiny_model_dir, tiny_data, tmp_path, monkeypatch, grad_accum):
    """Counts every tensor-to-host read made by the training loop's code in steady state (steps 3 to 7).

    The loss function's own reads (engine/loss.py) are the loss's, not the loop's, and are not counted.
    """
    reads, steps = Counter(), {"done": 0}
    for name in READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if 3 <= steps["done"] < 8 and (caller.startswith(TRAINING) or "modeling_solo" in caller):
                reads[f"{Path(caller).name}:{_name}"] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)

    def callback(event, info):
        steps["done"] += event == "step"

    cfg = TrainConfig(
        data=str(tiny_data),
        output=str(tmp_path / "run"),
        connections="emb->2,1->3",
        gate="schedule",
        rank=4,
        max_steps=8,
        batch_size=4,
        grad_accum=grad_accum,
        eval_every=100,
        device="cpu",
        chat_template=False,
    ).validate()
    run = prepare(cfg, load_model(tiny_model_dir))
    check_output(cfg)
    execute(run, callback)
    assert sum(reads.values()) <= 5, reads  # 5 steps counted: one read each
    assert reads == Counter({"readout.py:tolist": 5}), reads
