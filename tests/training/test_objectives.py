"""Preference objectives (--objective dpo|orpo|simpo): a loss over the same batches, with TRL's formulas and names.

DPO's first loss is ln 2 (the policy is its reference, the run's start), from a fresh adapter and from
--init-adapter; the metrics carry TRL's names in metrics.jsonl and the trackers; grad accumulation and
resume stay exact; the reference is computed once and cached.
"""

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from support import run

from solo_cli import load_adapter
from solo_cli.data.split_encoding import cache_dir
from solo_cli.engine.models import load_model
from solo_cli.engine.preference import METRICS, pair_losses
from solo_cli.errors import UsageError
from solo_cli.training import reference as reference_module
from solo_cli.training.config import TrainConfig
from solo_cli.training.run import check_output, execute, prepare
from solo_cli.training.trackers import tracked_values
from solo_cli.training.trainer import Interrupted

TIMES = ("tokens_per_s", "elapsed", "remaining")  # what differs between two runs of the same arithmetic
PAIRS = [
    {"id": i, "prompt": f"name[Place {i}] ->", "chosen": f" Place {i} is a cheap pub.", "rejected": f" Place {i + 1} is a cafe."}
    for i in range(16)
]


@pytest.fixture
def pair_data(tmp_path):
    folder = tmp_path / "pairs"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAIRS))
    (folder / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAIRS[:4]))
    return folder


def config(data, out, **kw):
    values = dict(
        data=str(data),
        output=str(out),
        connections="emb->2,1->3",
        rank=4,
        lr=1e-2,
        max_steps=4,
        batch_size=4,
        eval_every=2,
        seed=0,
        chat_template=False,
        device="cpu",
        dtype="float32",
        objective="dpo",
    )
    values.update(kw)
    return TrainConfig(**values).validate()


def train(model_dir, cfg, callback=None):
    run = prepare(cfg, load_model(model_dir))
    check_output(cfg)
    return execute(run, callback)


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def sft_adapter(tiny_model_dir, tmp_path_factory):
    """A short SFT run on prompt/completion rows: the adapter DPO starts from with --init-adapter."""
    folder = tmp_path_factory.mktemp("sft")
    rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in PAIRS]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = config(folder / "train.jsonl", folder / "run", objective="sft", max_steps=3, lr=3e-2, eval_every=10)
    adapter, _ = load_adapter(train(tiny_model_dir, cfg).adapter_path)
    assert any(float(c.B.detach().abs().max()) > 0 for c in adapter.connections.values())
    return folder / "run"


def test_dpo_from_the_base_starts_at_ln2_logs_trls_metrics_and_reads_its_reference_back(
    tiny_model_dir, pair_data, tmp_path, monkeypatch
):
    calls = []
    real = reference_module.score_pairs
    monkeypatch.setattr(reference_module, "score_pairs", lambda *a: calls.append(1) or real(*a))
    told = []
    train(tiny_model_dir, config(pair_data, tmp_path / "run"), lambda event, info: event == "reference" and told.append(info))
    assert len(calls) == 2  # the training and the validation pairs, once
    assert told == [{"pairs": 20, "cached": False}]  # said before the pass, so the wait before step 1 is explained
    lines = records(tmp_path / "run")
    steps = [r for r in lines if "loss" in r]
    valid = [r for r in lines if "valid_loss" in r]
    assert abs(steps[0]["loss"] - math.log(2)) < 1e-6  # the policy is its reference: the base exactly (B = 0)
    assert steps[0]["rewards/margins"] == 0 and steps[0]["rewards/accuracies"] == 0
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and [r["step"] for r in valid] == [2, 4]
    assert set(METRICS) <= set(steps[0]) and {f"valid_{name}" for name in METRICS} <= set(valid[0])
    assert steps[-1]["loss"] < steps[0]["loss"] and valid[-1]["valid_rewards/margins"] > 0
    assert steps[-1]["rewards/margins"] == pytest.approx(steps[-1]["rewards/chosen"] - steps[-1]["rewards/rejected"], abs=1e-5)
    scalars = tracked_values(steps[0]) | tracked_values(valid[0])
    assert {"train/loss", "train/rewards/chosen", "train/logps/rejected", "eval/loss", "eval/rewards/accuracies"} <= set(scalars)
    train(
        tiny_model_dir,
        config(pair_data, tmp_path / "again", max_steps=1),
        lambda event, info: event == "reference" and told.append(info),
    )
    assert told[1:] == [{"pairs": 20, "cached": True}]
    assert len(calls) == 2 and records(tmp_path / "again")[0]["loss"] == steps[0]["loss"]  # read back from the cache


def test_dpo_from_an_init_adapter_starts_at_ln2_and_resumes_exactly(tiny_model_dir, sft_adapter, pair_data, tmp_path):
    settings = dict(init_adapter=str(sft_adapter), save_every=2)
    whole = train(tiny_model_dir, config(pair_data, tmp_path / "whole", **settings))
    first = records(tmp_path / "whole")[0]
    assert abs(first["loss"] - math.log(2)) < 1e-6 and first["rewards/chosen"] == 0 and first["rewards/rejected"] == 0
    tuned, info = load_adapter(whole.adapter_path)
    sft, _ = load_adapter(sft_adapter / "adapter.safetensors")
    assert tuned.config.connections == sft.config.connections and tuned.config.homotopy_steps == 1
    assert info.training["objective"] == "dpo" and info.training["beta"] == 0.1
    assert "objective: dpo (beta 0.1), from" in (tmp_path / "whole" / "README.md").read_text()

    def stop_at_3(event, info):
        if event == "step" and info["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(Interrupted):
        train(tiny_model_dir, config(pair_data, tmp_path / "split", **settings), stop_at_3)
    shutil.rmtree(cache_dir().parent / "solo-reference")  # the resumed run scores the reference again, from the file
    resumed = train(tiny_model_dir, config(pair_data, tmp_path / "split", resume="auto", **settings))
    a, b = (load_adapter(r.adapter_path)[0].state_dict() for r in (whole, resumed))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-5, atol=1e-7)
    assert [r["step"] for r in records(tmp_path / "split") if "loss" in r] == [1, 2, 3, 4]


@pytest.mark.parametrize("objective, beta", [("orpo", 0.1), ("simpo", 2.0)])
def test_orpo_and_simpo_train_with_rewards_on_average_log_probs(tiny_model_dir, pair_data, tmp_path, objective, beta):
    train(tiny_model_dir, config(pair_data, tmp_path / "run", objective=objective, gate="zero-init", lr=3e-2, eval_every=10))
    steps = [r for r in records(tmp_path / "run") if "loss" in r]
    assert steps[-1]["loss"] < steps[0]["loss"]
    for r in steps:  # TRL's rewards of the reference-free losses: beta x the length-averaged log-probabilities
        assert r["rewards/chosen"] == pytest.approx(beta * r["logps/chosen"], abs=1e-5)
        assert r["logps/chosen"] < 0 and r["logps/chosen"] > -20  # an average over tokens, not a sum


def test_the_losses_are_trls_formulas():
    logps = torch.tensor([-10.0, -12.0, -14.0, -9.0])  # chosen: -10, -12; rejected: -14, -9
    counts = torch.tensor([5, 4, 7, 3])
    reference = torch.tensor([[-11.0, -13.0], [-12.5, -9.5]])
    losses, sums = pair_losses("dpo", 0.1, logps, counts, reference)
    logits = 0.1 * ((logps[:2] - reference[:, 0]) - (logps[2:] - reference[:, 1]))
    torch.testing.assert_close(losses, -F.logsigmoid(logits))
    assert sums[2] == 1  # rewards/accuracies: chosen's reward above rejected's in the first pair only
    avg_c, avg_r = logps[:2] / counts[:2], logps[2:] / counts[2:]
    losses, _ = pair_losses("simpo", 2.0, logps, counts, gamma=1.0)
    torch.testing.assert_close(losses, -F.logsigmoid(2.0 * (avg_c - avg_r) - 1.0))
    losses, sums = pair_losses("orpo", 0.1, logps, counts)
    odds = (avg_c - avg_r) - (torch.log1p(-torch.exp(avg_c)) - torch.log1p(-torch.exp(avg_r)))
    torch.testing.assert_close(losses, -avg_c - 0.1 * F.logsigmoid(odds))
    torch.testing.assert_close(sums[0], 0.1 * avg_c.sum())


def test_grad_accumulation_matches_a_larger_batch(tiny_model_dir, pair_data, tmp_path):
    results = []
    for name, batch, accum in (("big", 8, 1), ("accum", 4, 2)):
        result = train(tiny_model_dir, config(pair_data, tmp_path / name, max_steps=2, batch_size=batch, grad_accum=accum))
        results.append(load_adapter(result.adapter_path)[0].state_dict())
    for key in results[0]:
        torch.testing.assert_close(results[0][key], results[1][key], rtol=1e-4, atol=1e-6)


def test_objectives_refuse_rows_and_flags_they_cannot_train(tiny_model_dir, tiny_data, sft_adapter, pair_data, tmp_path):
    loaded = load_model(tiny_model_dir)
    with pytest.raises(UsageError, match="its rows are preference pairs .* train them with objective dpo, orpo or simpo"):
        prepare(config(pair_data, tmp_path / "a", objective="sft"), loaded)
    with pytest.raises(UsageError, match='objective dpo trains on preference pairs, rows with "prompt", "chosen"'):
        prepare(config(tiny_data, tmp_path / "b"), loaded)
    with pytest.raises(UsageError, match="packing does not apply to objective dpo"):
        config(pair_data, tmp_path / "c", packing=True)
    with pytest.raises(UsageError, match="init_adapter .*: no such file"):
        prepare(config(pair_data, tmp_path / "d", init_adapter=str(tmp_path / "missing")), loaded)
    with pytest.raises(UsageError, match=r"rank 8 \(the adapter's: 4\): drop those flags"):
        prepare(config(pair_data, tmp_path / "e", init_adapter=str(sft_adapter), rank=8), loaded)


def test_dpo_under_fsdp_over_two_processes_trains_the_one_process_adapter(tiny_model_dir, tmp_path):
    """14 pairs, a global batch of 3 x 2: the reference pass, the steps and validation leave rank 1 without pairs at
    the end, where FSDP makes it run a stand-in (counted 0); the adapter and the metrics are one process's."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAIRS[:14]))
    (folder / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in PAIRS[:7]))
    env = os.environ | {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    common = [*("train", "--model", tiny_model_dir, "--data", folder, "--max-steps", 3, "--eval-every", 3, "--device", "cpu")]
    common += [*("--connections", "emb->2,1->3", "--rank", 4, "--lr", "1e-2", "--objective", "dpo", "--dtype", "float32")]
    torchrun = [
        shutil.which("torchrun") or str(Path(sys.executable).parent / "torchrun"),
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    code, lines = run(*common, "-o", tmp_path / "one", "--batch-size", 6)  # one process, in this one
    assert code == 0, lines
    args = [*torchrun, "-m", "solo_cli", *common, "-o", tmp_path / "fsdp", "--batch-size", 3, "--parallel", "fsdp"]
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout
    a, b = (load_adapter(tmp_path / out / "adapter.safetensors")[0].state_dict() for out in ("one", "fsdp"))
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=1e-6)
    one, two = (records(tmp_path / out) for out in ("one", "fsdp"))
    assert len(two) == len(one) == 4 and abs(two[0]["loss"] - math.log(2)) < 1e-6
    for x, y in zip(one, two):
        assert {k: pytest.approx(v, rel=1e-4, abs=1e-6) for k, v in x.items() if k not in TIMES} == {
            k: v for k, v in y.items() if k not in TIMES
        }


def test_a_resume_compares_the_objective_and_its_settings():
    from solo_cli.training.resume import _setting_differences

    cfg = TrainConfig(data="d", objective="dpo", beta=0.2, init_adapter="runs/sft/").validate()
    recorded = TrainConfig(data="d", objective="dpo", init_adapter="runs/sft").to_dict()
    assert _setting_differences(cfg, recorded) == ["\x1fbeta\x1f unset -> 0.2"]  # the same adapter folder, other beta
    old_run = {k: v for k, v in TrainConfig(data="d").to_dict().items() if k not in ("objective", "beta", "init_adapter")}
    found = _setting_differences(cfg, old_run)  # a run from before --objective trained sft
    assert "\x1fobjective\x1f sft -> dpo" in found
