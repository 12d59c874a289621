"""``--quantize``: a quantized base under a float32 adapter (bitsandbytes nf4 / int8, torchao int8 weight-only).

The tiny Llama here is 64 wide: bitsandbytes packs 4-bit weights in blocks of 64.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from support import assert_one_line, info_for, inputs, make_adapter, perturb, run
from tiny import VOCAB, make_tokenizer

from solo_cli.engine import quantization
from solo_cli.engine.adapter import attach
from solo_cli.engine.adapter_file import read_info, save_adapter
from solo_cli.engine.blocks import fingerprint
from solo_cli.engine.models import load_model
from solo_cli.engine.precision import resolve_precision
from solo_cli.errors import UsageError
from solo_cli.inference.load import load_for_inference

has_bnb = quantization.installed("bitsandbytes")
has_torchao = quantization.installed("torchao")
# bitsandbytes is in the dev extra. torchao is not: once installed, transformers imports it on every
# model load (seconds per process, and log lines), so scripts/setup.sh puts it in a folder of its own
# and test_torchao_int8_in_an_environment_that_has_it runs the torchao case there, in a subprocess.
TORCHAO_SITE = Path(__file__).resolve().parents[2] / ".venv" / "extras" / "torchao"
BACKENDS = ["nf4", "fp4", "int8"] + (["torchao-int8"] if has_torchao else [])
assert has_bnb, "bitsandbytes is in the dev extra: run scripts/setup.sh"


def make_model64(seed: int = 0):
    """A tiny Llama 64 wide (4 blocks), frozen, in eval mode."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.for_model(
        "llama",
        num_hidden_layers=4,
        hidden_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=VOCAB,
        max_position_embeddings=256,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return AutoModelForCausalLM.from_config(config).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def model64_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-llama-64")
    make_model64().save_pretrained(path)
    make_tokenizer().save_pretrained(path)
    return str(path)


def quantized_linears(model) -> list[str]:
    """Class names of the base's q_proj weights' containers: a quantized layer or a quantized tensor."""
    q_proj = model.model.layers[0].self_attn.q_proj
    return [type(q_proj).__name__, type(q_proj.weight).__name__]


@pytest.mark.parametrize("quantize", BACKENDS)
def test_quantized_base_starts_exact_and_trains_a_float32_adapter(model64_dir, quantize):
    loaded = load_model(model64_dir, quantize=quantize)
    model = loaded.model
    assert loaded.precision.quantize == quantize and quantize in loaded.precision.reason
    assert any(name not in ("Linear", "Parameter") for name in quantized_linears(model)), quantized_linears(model)
    x = inputs()
    with torch.no_grad():
        base = model(x).logits
    adapter = make_adapter(model, gate="schedule")
    handle = attach(model, adapter)
    with torch.no_grad():
        torch.testing.assert_close(model(x).logits, base, rtol=0, atol=0)  # t = 0: exactly the quantized base

    adapter.set_homotopy_step(0)  # t > 0, as training's first step
    before = {k: v.detach().clone() for k, v in adapter.state_dict().items()}
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=1e-2)
    loss = torch.nn.functional.cross_entropy(model(x).logits[:, :-1].reshape(-1, VOCAB).float(), x[:, 1:].reshape(-1))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in adapter.parameters())
    optimizer.step()
    moved = [k for k, v in adapter.state_dict().items() if k.endswith((".A", ".B")) and not torch.equal(v, before[k])]
    assert len(moved) == 2 * len(adapter.items()), moved
    assert all(p.dtype == torch.float32 for p in adapter.parameters())  # the adapter stays float32 ...
    states = [t for s in optimizer.state.values() for t in s.values() if t.dim() > 0]
    assert states and all(t.dtype == torch.float32 for t in states)  # ... and so does its optimizer state
    handle.detach()


def test_a_missing_backend_is_one_line_naming_the_extra(monkeypatch):
    monkeypatch.setattr(quantization, "installed", lambda package: False)
    for quantize, package, extra in (
        ("nf4", "bitsandbytes", "quantize"),
        ("int8", "bitsandbytes", "quantize"),
        ("torchao-int8", "torchao", "torchao"),
    ):
        with pytest.raises(UsageError, match=rf"quantize {quantize} needs {package}, which is not installed") as caught:
            resolve_precision("float32", "cpu", quantize=quantize)
        assert f"pip install 'solo-cli[{extra}]'" in caught.value.message and "\n" not in caught.value.message
    assert resolve_precision("float32", "cpu").quantize == "none"  # none needs no backend


def test_a_backend_that_cannot_run_on_the_device_is_one_line(monkeypatch):
    monkeypatch.setattr(quantization, "installed", lambda package: True)
    with pytest.raises(UsageError, match="torchao does not quantize on mps; use device cuda or cpu, or quantize none"):
        quantization.check_backend("torchao-int8", "mps")


def test_cli_quantize_without_its_backend_exits_2_in_one_line(monkeypatch, model64_dir, tiny_data, tmp_path):
    monkeypatch.setattr(quantization, "installed", lambda package: False)
    code, lines = run("train", "--model", model64_dir, "--data", tiny_data, "-o", tmp_path / "run", "--quantize", "nf4")
    assert code == 2
    assert_one_line(lines, "--quantize nf4 needs bitsandbytes", "pip install 'solo-cli[quantize]'")
    assert not (tmp_path / "run" / "adapter.safetensors").exists()
    code, lines = run("generate", "hello", "--model", model64_dir, "--quantize", "torchao-int8")
    assert code == 2
    assert_one_line(lines, "--quantize torchao-int8 needs torchao", "pip install 'solo-cli[torchao]'")
    code, lines = run("generate", "hello", "--model", model64_dir, "--quantize", "int4")
    assert code == 2
    assert_one_line(lines, "--quantize int4: use one of none, nf4, fp4, int8, torchao-int8")


def test_an_already_quantized_model_loads_as_it_is_and_refuses_quantize(model64_dir, tmp_path):
    folder = tmp_path / "nf4-model"
    load_model(model64_dir, quantize="nf4").model.save_pretrained(folder)
    make_tokenizer().save_pretrained(folder)
    assert json.loads((folder / "config.json").read_text())["quantization_config"]["bnb_4bit_quant_type"] == "nf4"
    loaded = load_model(str(folder))
    assert loaded.precision.quantize == "nf4" and "already quantized (nf4)" in loaded.precision.reason
    assert "Linear4bit" in quantized_linears(loaded.model)
    with pytest.raises(UsageError, match=r"is already quantized \(nf4\) and loads as it is; drop quantize int8"):
        load_model(str(folder), quantize="int8")


def test_an_already_quantized_model_without_its_package_is_one_line(model64_dir, tmp_path):
    import shutil

    folder = tmp_path / "gptq-model"
    shutil.copytree(model64_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq", "bits": 4, "group_size": 64, "desc_act": False}
    (folder / "config.json").write_text(json.dumps(config))
    if quantization.installed("optimum") and quantization.installed("gptqmodel"):
        pytest.skip("the GPTQ packages are installed here")
    with pytest.raises(UsageError, match=r"is quantized with gptq, which cannot load here \(.*\); install the package") as caught:
        load_model(str(folder))
    assert "\n" not in caught.value.message


def test_an_adapter_moves_between_the_nf4_and_the_full_base_with_a_note(model64_dir, tmp_path):
    full = load_model(model64_dir)
    adapter = perturb(make_adapter(full.model, gate="schedule"))
    for trained, path in (("nf4", tmp_path / "over-nf4.safetensors"), ("none", tmp_path / "over-full.safetensors")):
        info = info_for(full.model, adapter)
        info.training = {"steps": 3, "quantize": trained}
        save_adapter(path, adapter, info)
    legacy = info_for(full.model, adapter)  # an adapter file from before --quantize: its base was full precision
    save_adapter(tmp_path / "legacy.safetensors", adapter, legacy)

    target = load_for_inference(model64_dir, str(tmp_path / "over-nf4.safetensors"))
    assert target.notes == [
        "note: the adapter was trained over the base quantized to nf4 and runs here on the full-precision base "
        "(same architecture); outputs may differ slightly"
    ]
    target = load_for_inference(model64_dir, str(tmp_path / "over-full.safetensors"), quantize="nf4")
    assert len(target.notes) == 1 and "over the full-precision base and runs here on the base quantized to nf4" in target.notes[0]
    assert fingerprint(target.loaded.model) == fingerprint(full.model)
    with torch.no_grad():
        assert torch.isfinite(target.loaded.model(inputs()).logits).all()
    assert load_for_inference(model64_dir, str(tmp_path / "legacy.safetensors")).notes == []
    assert load_for_inference(model64_dir, str(tmp_path / "over-nf4.safetensors"), quantize="nf4").notes == []


def test_solo_train_quantize_nf4_records_it_and_generate_notes_the_full_base(model64_dir, tiny_data, tmp_path):
    out = tmp_path / "run"
    code, lines = run(
        "train", "--model", model64_dir, "--data", tiny_data, "-o", out, "--quantize", "nf4", "--max-steps", 2,
        "--batch-size", 4, "--connections", "emb->2,1->3", "--rank", 2,
    )  # fmt: skip
    assert code == 0, lines
    config = json.loads((out / "config.json").read_text())
    assert config["quantize"] == "nf4" and config["precision"]["quantize"] == "nf4"
    info = read_info(out / "adapter.safetensors")
    assert info.training["quantize"] == "nf4"
    assert [tuple(c) for c in info.config.connections] == [(-1, 2), (1, 3)]
    code, lines = run("generate", "hello", "--model", model64_dir, "--adapter", out, "--max-new-tokens", 2)
    assert code == 0, lines
    assert any(line.startswith("note: the adapter was trained over the base quantized to nf4") for line in lines), lines


def test_yaml_and_flag_choices_come_from_the_one_field():
    from solo_cli.training.config import TrainConfig

    assert TrainConfig().quantize == "none"
    with pytest.raises(UsageError, match="quantize 'int4': use one of none, nf4, fp4, int8, torchao-int8"):
        TrainConfig(quantize="int4").validate()


def test_torchao_int8_in_an_environment_that_has_it():
    """The torchao-int8 case of the test above, run where torchao is importable (see TORCHAO_SITE)."""
    assert TORCHAO_SITE.is_dir(), f"scripts/setup.sh installs torchao into {TORCHAO_SITE}; run it"
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in (str(TORCHAO_SITE), os.environ.get("PYTHONPATH")) if p)}
    case = f"{__file__}::test_quantized_base_starts_exact_and_trains_a_float32_adapter[torchao-int8]"
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", case],
        env=env, cwd=TORCHAO_SITE.parents[2], capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-2000:] + result.stderr[-2000:]


@pytest.fixture
def avx512bf16_cpu(monkeypatch):
    """bitsandbytes as it behaves on a CPU with AVX512-BF16 (AMX machines), on any CPU: each Linear4bit built from
    now on repacks its weight for the CPU kernel in its first eval-mode forward on an input without grad."""
    import bitsandbytes.nn.modules as bnb_modules

    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)


def packed_for_cpu(model) -> list[str]:
    states = {name: getattr(p, "quant_state", None) for name, p in model.named_parameters()}
    return [name for name, state in states.items() if getattr(state, "packing_format_for_cpu", False)]


@pytest.mark.parametrize("quantize", ["nf4", "fp4"])
def test_a_4bit_base_computes_one_way_in_train_and_eval_mode_on_every_cpu(avx512bf16_cpu, model64_dir, quantize):
    """A validation forward (eval mode, no grad) and a training one give the same loss: bitsandbytes' repacked bfloat16
    CPU kernel would take over after the first eval forward, and only on AVX512-BF16 CPUs."""
    from solo_cli.engine.loss import causal_lm_loss

    model = load_model(model64_dir, quantize=quantize).model
    ids = inputs(batch=3, length=12)
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}
    model.train()
    training = causal_lm_loss(model, batch)[0]
    model.eval()
    with torch.no_grad():
        validation = causal_lm_loss(model, batch)[0]
    assert packed_for_cpu(model) == []
    torch.testing.assert_close(validation, training.detach())
    loaded = load_model(model64_dir, quantize=quantize).model  # and one loaded fresh, whose first forward is eval's
    with torch.no_grad():
        torch.testing.assert_close(causal_lm_loss(loaded, batch)[0], validation)
    assert packed_for_cpu(loaded) == []


def test_a_4bit_base_counts_its_weights_not_its_packed_bytes(model64_dir):
    """Params4bit.numel() counts the packed storage (two weights a byte): the totals count the model's weights."""
    from solo_cli.training.run import param_summary

    full, packed = load_model(model64_dir).model, load_model(model64_dir, quantize="nf4").model
    numel = sum(p.numel() for p in full.parameters())
    assert sum(p.numel() for p in packed.parameters()) < numel  # what the totals said before
    assert quantization.count_params(packed) == quantization.count_params(full) == numel
    adapter = make_adapter(full, gate="schedule")
    assert param_summary(packed, adapter) == param_summary(full, adapter)
    assert param_summary(packed, adapter)["total"] == numel + adapter.num_parameters()
