"""--compile off|on|auto: compiled decoder blocks keep the adapter's hooks and give the eager logits; auto compiles
only runs long enough to repay it; bucket padding leaves the loss as it was and bounds the compiled shapes."""

import functools
import json
import random

import pytest
import torch
from support import assert_one_line, inputs, make_adapter, perturb, run

from solo_cli import attach
from solo_cli.data.packing import PackedRow, collate_packed
from solo_cli.data.row_encoding import Example, collate
from solo_cli.engine.blocks import find_blocks
from solo_cli.engine.loss import causal_lm_loss
from solo_cli.engine.models import load_model
from solo_cli.errors import UsageError
from solo_cli.training import compiled as compiled_module
from solo_cli.training.compiled import BREAK_EVEN_STEPS, bucket_widths, compiled_blocks, decide_compile, pad_batch
from solo_cli.training.config import TrainConfig, build_config


def test_compiled_blocks_give_the_eager_logits_with_the_adapter_attached(tiny_model_dir):
    model = load_model(tiny_model_dir).model.eval()
    adapter = perturb(make_adapter(model, gate="schedule"))
    handle = attach(model, adapter)
    ids = inputs(batch=2, length=9)
    eager = model(input_ids=ids).logits.detach()  # with gradients on: the blocks compile for training only
    with handle.disabled():
        base = model(input_ids=ids).logits.detach()
    with compiled_blocks(model, True):
        compiled = model(input_ids=ids).logits.detach()
        with handle.disabled():
            compiled_base = model(input_ids=ids).logits.detach()
    handle.detach()
    assert not torch.allclose(eager, base, atol=1e-3)  # the adapter changes the logits: the hooks ran
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(compiled_base, base, rtol=1e-4, atol=1e-4)
    assert all("forward" not in vars(block) for block in find_blocks(model)[1])  # eager again after the run


def test_auto_compiles_only_runs_that_repay_it_and_stays_eager_where_nothing_is_measured():
    cuda = BREAK_EVEN_STEPS["cuda"]
    short = decide_compile("auto", "cuda", cuda, max_seq_length=256, ready=True)
    assert not short.enabled and f"~{cuda:,}" in short.reason and "auto: eager" in short.reason
    long = decide_compile("auto", "cuda", 20 * cuda, max_seq_length=256, ready=True)
    assert long.enabled and long.buckets == (64, 128, 256) and not long.cuda_graphs
    assert long.reason.startswith("auto: compiled") and "64/128/256" in long.reason
    unknown = decide_compile("auto", "mps", 10**7, max_seq_length=256, ready=True)
    assert not unknown.enabled and "no measured break-even" in unknown.reason
    no_compiler = decide_compile("auto", "cuda", 20 * cuda, max_seq_length=256, ready=False)
    assert not no_compiler.enabled and "triton" in no_compiler.reason
    # measured slower compiled on the CPU (bench/results/compile.md): auto never compiles there, however long
    cpu = decide_compile("auto", "cpu", 10**7, max_seq_length=256, ready=True)
    assert not cpu.enabled and "does not pay on cpu" in cpu.reason
    # CUDA graphs only where every batch has the same width: packed rows, on CUDA
    packed = decide_compile("auto", "cuda:0", 10**5, max_seq_length=512, packing=True, ready=True)
    assert packed.enabled and packed.cuda_graphs and packed.buckets == (512,) and "CUDA graphs" in packed.reason
    assert not decide_compile("auto", "cuda", 10**5, max_seq_length=512, ready=True).cuda_graphs
    assert not decide_compile("on", "cpu", 10, max_seq_length=512, packing=True, ready=True).cuda_graphs
    assert decide_compile("on", "mps", 1, max_seq_length=100).enabled  # on: whatever the run's length
    assert not decide_compile("off", "cuda", 10**7, max_seq_length=256).enabled
    assert bucket_widths(100) == (64, 100) and bucket_widths(64) == (64,) and bucket_widths(32) == (32,)


def _mixed(count, seed=0, longest=40):
    rng = random.Random(seed)
    out = []
    for n in range(count):
        ids = [rng.randrange(3, 300) for _ in range(rng.randrange(3, longest))]
        prompt = rng.randrange(1, len(ids) - 1) if n % 2 else 0
        out.append(Example(ids, [-100] * prompt + ids[prompt:]))
    return out


def _loss_and_grads(model, adapter, batch):
    loss, count = causal_lm_loss(model, batch)
    grads = torch.autograd.grad(loss, list(adapter.parameters()))
    return loss.detach(), count, grads


@pytest.mark.parametrize("packed", [False, True])
def test_bucket_padding_gives_the_unpadded_loss_and_gradients(tiny_model_dir, packed):
    model = load_model(tiny_model_dir).model.eval()
    adapter = perturb(make_adapter(model, gate="schedule"))
    handle = attach(model, adapter)
    examples = _mixed(5)
    if packed:
        batch = collate_packed([PackedRow.of(examples[:3]), PackedRow.of(examples[3:])], pad_id=0)
    else:
        batch = collate(examples, pad_id=0)
    wider = pad_batch(batch, 64 if packed else 48, pad_id=0)
    assert wider["input_ids"].shape[1] > batch["input_ids"].shape[1]
    loss, count, grads = _loss_and_grads(model, adapter, batch)
    padded_loss, padded_count, padded_grads = _loss_and_grads(model, adapter, wider)
    handle.detach()
    assert padded_count == count
    torch.testing.assert_close(padded_loss, loss, rtol=1e-5, atol=1e-6)
    for padded_grad, grad in zip(padded_grads, grads):
        torch.testing.assert_close(padded_grad, grad, rtol=1e-4, atol=1e-6)


def test_compiled_shapes_stay_bounded_over_batches_of_many_widths(tiny_model_dir, monkeypatch):
    """Thirty widths make one graph a bucket (traced with dynamo's eager backend: no kernels to build)."""
    from torch._dynamo.utils import counters

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    torch._dynamo.reset()
    model = load_model(tiny_model_dir).model.train()
    adapter = perturb(make_adapter(model, gate="schedule"))
    handle = attach(model, adapter)
    plan = decide_compile("on", "cpu", 10, max_seq_length=128)
    assert plan.buckets == (64, 128)
    widths = list(range(3, 120, 9))
    with compiled_blocks(model, plan):
        for width in widths:
            examples = [Example(list(range(3, 3 + width)), list(range(3, 3 + width))), Example([5, 6, 7], [5, 6, 7])]
            batch = plan.pad(collate(examples, pad_id=0), pad_id=0)
            assert batch["input_ids"].shape[1] in plan.buckets
            loss, _ = causal_lm_loss(model, batch)
            loss.backward()
            if width == widths[0]:
                per_bucket = counters["stats"]["unique_graphs"]
        graphs = counters["stats"]["unique_graphs"]
    handle.detach()
    assert per_bucket >= 1  # the blocks did compile
    assert graphs <= per_bucket * len(plan.buckets), (graphs, per_bucket)


def test_compile_takes_off_on_auto_and_reads_the_switch_older_runs_recorded(tmp_path):
    yaml = tmp_path / "run.yaml"
    for written, taken in (("true", "on"), ("false", "off"), ("on", "on"), ("off", "off"), ("auto", "auto")):
        yaml.write_text(f"compile: {written}\n")  # YAML 1.1 reads on/off as true/false
        assert build_config(yaml, {}).compile == taken
    assert TrainConfig(compile=True).compile == "on" and TrainConfig(compile=False).compile == "off"
    with pytest.raises(UsageError, match="compile 'sometimes': use one of off, on, auto"):
        build_config(None, {"compile": "sometimes"})


def test_a_run_recorded_with_compile_true_resumes_under_compile_auto(tiny_model_dir, tiny_data, tmp_path):
    """config.json and checkpoints of older runs hold compile: true/false; --resume reads them, and auto says why it
    stays eager for the steps left."""
    from solo_cli.training.run import check_output, execute, prepare

    def train(**kw):
        cfg = TrainConfig(
            data=str(tiny_data), output=str(tmp_path / "run"), connections="emb->2,1->3", rank=2, max_steps=4,
            batch_size=4, save_every=2, eval_every=100, chat_template=False, device="cpu", **kw,
        ).validate()  # fmt: skip
        run = prepare(cfg, load_model(tiny_model_dir, dtype=cfg.dtype))
        check_output(cfg)
        seen = []
        return execute(run, lambda event, info: seen.append((event, info))), seen

    _, _ = train(compile="off")
    for path in [tmp_path / "run" / "config.json", tmp_path / "run" / "checkpoints" / "step-2" / "trainer_state.json"]:
        record = json.loads(path.read_text())
        (record["config"] if "config" in record else record)["compile"] = True  # as a run of an older solo recorded it
        path.write_text(json.dumps(record))
    result, seen = train(compile="auto", resume=str(tmp_path / "run" / "checkpoints" / "step-2"))
    start = next(info for event, info in seen if event == "start")
    assert result.steps == 4 and start["start_step"] == 2
    assert start["compile_reason"].startswith("auto: eager (compiling does not pay on cpu")


def test_training_pads_batches_only_while_compiling(monkeypatch):
    plan = decide_compile("on", "cpu", 10, max_seq_length=256)
    batch = collate([Example([5] * 70, [5] * 70)], pad_id=0)
    assert plan.pad(batch, 0)["input_ids"].shape[1] == 128
    assert compiled_module.EAGER.pad(batch, 0) is batch


def test_the_start_of_training_shows_what_compile_became_and_why():
    import io

    from rich.console import Console

    from solo_cli.cli.display import TrainDisplay

    start = {"trainable": 1, "total": 2, "percent": 50.0, "connections": "chain", "examples": 4, "total_steps": 3}
    shown, auto = {}, decide_compile("auto", "cpu", 3, max_seq_length=256).reason
    for reason in ("off", auto):
        console = Console(file=io.StringIO(), width=200)
        TrainDisplay(console)("start", start | {"compile_reason": reason})
        shown[reason] = console.file.getvalue()
    assert "compile" not in shown["off"]  # off, the default, is not worth a line
    assert "compile auto: eager (compiling does not pay on cpu" in shown[auto]


def test_compile_on_without_the_compiler_is_one_line_before_anything_is_written(tiny_model_dir, tiny_data, tmp_path, monkeypatch):
    """--compile on checks the compiler as auto does (g++ on the CPU, triton on CUDA); other kinds are left to torch."""
    with pytest.raises(UsageError, match="compile on: torch.compile on cpu needs a C\\+\\+ compiler"):
        decide_compile("on", "cpu", 10, max_seq_length=64, ready=False)
    with pytest.raises(UsageError, match="needs triton"):
        decide_compile("on", "cuda:1", 10, max_seq_length=64, ready=False)
    assert decide_compile("on", "mps", 10, max_seq_length=64, ready=False).enabled
    monkeypatch.setattr(compiled_module, "compiler_ready", lambda kind: False)  # a machine without g++
    out = tmp_path / "run"
    code, lines = run("train", "--model", tiny_model_dir, "--data", tiny_data, "-o", out, "--compile", "on", "--max-steps", 1)
    assert code == 2
    assert_one_line(lines, "--compile on", "C++ compiler", "--compile off")
    assert not out.exists()
