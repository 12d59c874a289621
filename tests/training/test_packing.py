"""--packing: several examples a row, each seeing only itself, training exactly as unpacked."""

import json
import random

import pytest
import torch
from support import assert_one_line, make_adapter, perturb, run
from tiny import make_model, save_tiny

from solo_cli import attach, load_adapter
from solo_cli.data.packing import PackedRow, collate_packed, pack, row_count
from solo_cli.data.row_encoding import Example, collate, loss_tokens
from solo_cli.engine.loss import causal_lm_loss, model_inputs, prove_packing
from solo_cli.engine.models import load_model
from solo_cli.errors import UsageError
from solo_cli.training.config import TrainConfig
from solo_cli.training.run import check_output, execute, prepare
from solo_cli.training.sampler import epoch_units, packed_epoch_steps, packed_step_batches, total_steps
from solo_cli.training.trainer import Interrupted


def examples(seed=0, count=6):
    """Examples of mixed lengths, every other one trained from its first token (a text row), the others after a prompt."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        ids = [rng.randrange(3, 300) for _ in range(rng.randrange(3, 14))]
        prompt = rng.randrange(1, len(ids) - 1) if n % 2 else 0
        out.append(Example(ids, [-100] * prompt + ids[prompt:]))
    return out


def test_pack_fills_rows_within_capacity_deterministically():
    lengths = [random.Random(1).randrange(1, 40) for _ in range(200)]
    order = list(range(200))
    random.Random(2).shuffle(order)
    rows = pack(order, lengths, 64)
    assert sorted(i for row in rows for i in row) == list(range(200))  # every example once
    assert all(sum(lengths[i] for i in row) <= 64 for row in rows)
    assert pack(order, lengths, 64) == rows
    assert len(rows) <= sum(lengths) // 64 + 2  # best-fit decreasing leaves little room
    assert row_count(lengths, 64) == len(rows) == len(pack(sorted(order), lengths, 64))  # the shuffle never changes it
    with pytest.raises(ValueError, match="example 0 has 65 tokens"):
        pack([0], [65], 64)


def test_a_row_scores_each_example_from_its_second_token():
    a, b = Example([5, 6, 7], [5, 6, 7]), Example([8, 9], [-100, 9])
    row = PackedRow.of([a, b])
    assert row.labels == [-100, 6, 7, -100, 9] and row.lengths == [3, 2]
    assert loss_tokens(row.labels) == loss_tokens(a.labels) + loss_tokens(b.labels)
    batch = collate_packed([row, PackedRow.of([b])], pad_id=2)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]  # the padding is a run of its own
    assert "attention_mask" not in batch
    assert batch["loss_positions"].tolist() == [0, 1, 3, 4 + 0]  # never row 0's position 2 (7 -> 8)
    flat = collate_packed([row, PackedRow.of([b])], pad_id=2, flat=True)
    assert flat["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1]]


def _loss_and_grads(model, adapter, batch):
    adapter.zero_grad(set_to_none=True)
    loss, count = causal_lm_loss(model, batch)
    loss.backward()
    return loss.detach(), count, {k: p.grad.clone() for k, p in adapter.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("flat", [False, True])
def test_packed_loss_and_gradients_equal_unpacked(arch, flat):
    model = make_model(arch)
    adapter = perturb(make_adapter(model))
    attach(model, adapter)
    data = examples()
    rows = [PackedRow.of([data[i] for i in row]) for row in pack(range(len(data)), [len(e.input_ids) for e in data], 20)]
    assert len(rows) < len(data)  # some rows hold several examples
    prove_packing(model, collate_packed(rows, pad_id=2))
    unpacked = _loss_and_grads(model, adapter, collate(data, pad_id=2))
    packed = _loss_and_grads(model, adapter, collate_packed(rows, pad_id=2, flat=flat))
    assert packed[1] == unpacked[1] == sum(loss_tokens(e.labels) for e in data)
    torch.testing.assert_close(packed[0], unpacked[0])
    assert unpacked[2] and packed[2].keys() == unpacked[2].keys()
    for key, grad in unpacked[2].items():
        torch.testing.assert_close(packed[2][key], grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_no_attention_crosses_an_example(arch):
    model = make_model(arch)
    attach(model, perturb(make_adapter(model)))
    first, second = examples(seed=3, count=2)
    other = Example([(t + 17) % 300 + 3 for t in first.input_ids], first.labels)

    def logits(a):
        batch = collate_packed([PackedRow.of([a, second])], pad_id=2)
        with torch.no_grad():
            return model(**model_inputs(batch), use_cache=False).logits[0]

    n = len(first.input_ids)
    before, after = logits(first), logits(other)
    assert not torch.allclose(before[:n], after[:n])
    torch.testing.assert_close(after[n:], before[n:], rtol=0, atol=0)


def test_a_model_that_lets_packed_examples_attend_to_each_other_is_refused():
    model = make_model("opt")  # OPT derives positions from the attention mask and ignores position_ids
    batch = collate_packed([PackedRow.of(examples(count=2))], pad_id=2)
    with pytest.raises(UsageError, match="packing.*opt .* does not keep packed examples apart") as info:
        prove_packing(model, batch)
    assert info.value.exit_code == 2 and "--packing" in info.value.as_flags()


def test_the_packed_stream_is_a_pure_function_of_seed_and_step():
    data = examples(count=23)
    lengths = [len(e.input_ids) for e in data]
    rows, batch, accum = row_count(lengths, 24), 2, 2
    per_epoch = -(-rows // (batch * accum))
    whole = packed_step_batches(data, batch, seed=5, capacity=24, accum=accum)
    steps = [next(whole) for _ in range(3 * per_epoch)]
    for start in (1, per_epoch, per_epoch + 1):
        resumed = packed_step_batches(data, batch, seed=5, capacity=24, start=start, accum=accum)
        assert [next(resumed) for _ in range(per_epoch)] == steps[start : start + per_epoch]
    for epoch in range(3):
        plan = packed_epoch_steps(lengths, 24, batch, 5, epoch, accum)
        assert len(plan) == per_epoch
        assert sorted(i for step in plan for micro in step for row in micro for i in row) == list(range(23))
    assert packed_epoch_steps(lengths, 24, batch, 5, 0, accum) != packed_epoch_steps(lengths, 24, batch, 5, 1, accum)
    cfg = TrainConfig(batch_size=batch, grad_accum=accum, max_seq_length=24, packing=True, epochs=2)
    assert epoch_units(cfg, data) == rows and total_steps(cfg, rows) == 2 * per_epoch


def _config(data, out, **kw):
    # chat_template off: examples of 32-34 tokens, two a row of 72, so 8 rows and 4 steps an epoch
    values = dict(data=str(data), output=str(out), connections="emb->2,1->3", rank=4, lr=1e-2, max_steps=8,
                  batch_size=2, max_seq_length=72, packing=True, eval_every=3, save_every=3, seed=0,
                  chat_template=False, device="cpu", warmup=2)  # fmt: skip
    values.update(kw)
    return TrainConfig(**values).validate()


def _train(model_dir, cfg, callback=None):
    run_ = prepare(cfg, load_model(model_dir, dtype=cfg.dtype))
    check_output(cfg)
    return execute(run_, callback)


def test_a_packed_run_resumed_equals_the_uninterrupted_run(tiny_model_dir, tiny_data, tmp_path):
    whole = _train(tiny_model_dir, _config(tiny_data, tmp_path / "whole"))
    out = tmp_path / "split"

    def stop_at_4(event, info):
        if event == "step" and info["step"] == 4:
            raise Interrupted("interrupted at step 4 of 8")

    with pytest.raises(Interrupted):
        _train(tiny_model_dir, _config(tiny_data, out), stop_at_4)
    resumed = _train(tiny_model_dir, _config(tiny_data, out, resume="auto"))
    a, _ = load_adapter(whole.adapter_path)
    b, _ = load_adapter(resumed.adapter_path)
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=1e-5, atol=1e-7)
    with pytest.raises(UsageError, match="packing true -> false"):
        _train(tiny_model_dir, _config(tiny_data, out, resume="auto", packing=False))


def test_solo_train_packing_on_a_model_folder(tiny_model_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    # 16 chat-rendered examples of 50-52 tokens: two a row of 128, so 8 rows, 4 steps of 2 rows (8 steps unpacked)
    code, lines = run("train", "--model", tiny_model_dir, "--data", tiny_data, "-o", out, "--packing",
                      "--max-seq-length", "128", "--batch-size", "2", "--epochs", "1", "--device", "cpu")  # fmt: skip
    assert code == 0, lines
    assert (out / "adapter.safetensors").exists()
    config = json.loads((out / "config.json").read_text())
    assert config["packing"] is True
    assert config["run_shape"]["packed_rows"] == 8 and config["run_shape"]["steps_per_epoch"] == 4
    steps = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert [s["step"] for s in steps] == [1, 2, 3, 4] and all(s["loss"] > 0 for s in steps)


def test_solo_train_packing_refuses_a_model_that_cannot_keep_examples_apart(tiny_data, tmp_path):
    model_dir = save_tiny(tmp_path / "opt", "opt")
    out = tmp_path / "run"
    code, lines = run("train", "--model", model_dir, "--data", tiny_data, "-o", out, "--packing",
                      "--max-seq-length", "128", "--max-steps", "2", "--device", "cpu")  # fmt: skip
    assert code == 2
    assert_one_line(lines, "--packing", "does not keep packed examples apart", "without it")
    assert not (out / "adapter.safetensors").exists()
