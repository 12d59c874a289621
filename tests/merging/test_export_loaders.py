"""Every loader runs an export with its connections or refuses it (issue 27 item 7), and the export check compares in
the dtype the export runs in, with the connections in float32 as in solo (issue 28 item 13); solo computes an export
in that dtype too under --dtype auto."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
import transformers
import transformers.dynamic_module_utils
from support import info_for, inputs, make_adapter, perturb, runner
from tiny import HIDDEN, VOCAB, make_tokenizer
from torch.testing import assert_close
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, pipeline

from solo_cli import attach, load_adapter, save_adapter
from solo_cli.cli import app
from solo_cli.engine.models import load_model
from solo_cli.errors import UsageError
from solo_cli.inference.load import load_for_inference
from solo_cli.merging import export
from solo_cli.merging.export import EXPORT_CLASS, export_model

PROMPT = "name[Blue Spice], eatType"
GREEDY = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": 2}


@pytest.fixture(scope="module")
def exported(tiny_model_dir, tmp_path_factory):
    """An export whose adapter changes the greedy text of PROMPT."""
    tmp = tmp_path_factory.mktemp("export")
    base = load_model(tiny_model_dir).model
    adapter = perturb(make_adapter(base, "schedule", plan=[(-1, 2), (1, 3)], source_norm="rms"), scale=1.0)
    path = save_adapter(tmp / "a.safetensors", adapter, info_for(base, adapter))
    export_model(path, tiny_model_dir, tmp / "export")
    return tmp / "export"


def _greedy(model, tokenizer) -> str:
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, **GREEDY)
    return tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)


def test_the_config_names_a_class_no_library_ships_and_auto_map_still_loads_it(exported, tiny_model_dir):
    """transformers serve loads getattr(transformers, architectures[0]): it named LlamaForCausalLM, the bare base."""
    config = json.loads((exported / "config.json").read_text())
    assert config["architectures"] == [EXPORT_CLASS] == ["SoloForCausalLM"]
    assert getattr(transformers, config["architectures"][0], None) is None  # what serve and pipelines look up
    assert config["model_type"] == "solo" and config["solo_adapter"]["base_model_type"] == "llama"
    assert config["auto_map"] == {
        "AutoConfig": "modeling_solo.SoloConfig",
        "AutoModelForCausalLM": "modeling_solo.SoloForCausalLM",
    }
    model = AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=True).eval()
    assert type(model).__name__ == "SoloForCausalLM" and isinstance(model, transformers.LlamaForCausalLM)
    assert type(model.config).__name__ == "SoloConfig" and isinstance(model.config, transformers.LlamaConfig)
    assert not model.is_backend_compatible()  # vLLM's transformers backend refuses it rather than build the bare body
    target = load_for_inference(str(exported))  # solo: the base class natively, plus the export's adapter
    try:
        assert type(target.loaded.model).__name__ == "LlamaForCausalLM" and target.handle is not None
        assert _greedy(target.loaded.model, target.loaded.tokenizer) == _greedy(model, target.loaded.tokenizer)
    finally:
        target.handle.detach()
    base = load_model(tiny_model_dir)
    assert _greedy(base.model, base.tokenizer) != _greedy(model, base.tokenizer)  # the adapter changes the text


@pytest.fixture
def never_ask(monkeypatch):
    """transformers asks on a terminal whether to run a folder's code (15 s): here it refuses at once, as without one."""
    monkeypatch.setattr(transformers.dynamic_module_utils, "TIME_OUT_REMOTE_CODE", 0)


def test_transformers_without_trust_remote_code_refuses_the_export_and_never_builds_the_bare_base(exported, never_ask):
    """model_type named the base (llama): AutoModelForCausalLM and pipeline built LlamaForCausalLM and dropped the
    connections, saying only that the solo.* tensors were unexpected."""
    for load in (
        lambda: AutoModelForCausalLM.from_pretrained(exported),
        lambda: pipeline("text-generation", model=str(exported)),
        lambda: AutoConfig.from_pretrained(exported),
    ):
        with pytest.raises(ValueError, match="trust_remote_code=True"):
            load()
    tokenizer = AutoTokenizer.from_pretrained(exported)  # the tokenizer needs none of the folder's code
    assert tokenizer(PROMPT)["input_ids"] == make_tokenizer()(PROMPT)["input_ids"]


def test_transformers_with_trust_remote_code_runs_base_plus_adapter(exported, tiny_model_dir, never_ask):
    base = load_model(tiny_model_dir)
    adapter, _ = load_adapter(exported.parent / "a.safetensors")
    ids = inputs()
    handle = attach(base.model, adapter)
    with torch.no_grad():
        expected = base.model(ids).logits
    handle.detach()
    model = AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=True).eval()
    with torch.no_grad():
        assert_close(model(ids).logits, expected, rtol=1e-5, atol=1e-5)
    generator = pipeline("text-generation", model=str(exported), trust_remote_code=True)
    assert type(generator.model).__name__ == "SoloForCausalLM"
    with torch.no_grad():
        text = generator(PROMPT, max_new_tokens=8, do_sample=False, return_full_text=False)[0]["generated_text"]
    assert text == _greedy(model, AutoTokenizer.from_pretrained(exported, trust_remote_code=True))


def test_an_export_written_before_solo_named_its_model_type_still_loads_in_solo(exported, tmp_path):
    """Exports of earlier solo versions name the base's model_type and have no config class in auto_map."""
    old = tmp_path / "old-export"
    shutil.copytree(exported, old)
    config = json.loads((old / "config.json").read_text())
    config["model_type"] = config["solo_adapter"].pop("base_model_type")
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_solo.SoloForCausalLM"}
    (old / "config.json").write_text(json.dumps(config))
    ids = inputs()
    logits = []
    for folder in (exported, old):
        target = load_for_inference(str(folder))
        assert type(target.loaded.model).__name__ == "LlamaForCausalLM" and target.handle is not None
        with torch.no_grad():
            logits.append(target.loaded.model(ids).logits)
        target.handle.detach()
    assert_close(logits[1], logits[0], rtol=0, atol=0)


def test_an_export_whose_base_model_type_transformers_does_not_know_is_one_line(exported, tmp_path):
    folder = tmp_path / "edited"
    shutil.copytree(exported, folder)
    config = json.loads((folder / "config.json").read_text())
    config["solo_adapter"]["base_model_type"] = "llama9"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        UsageError, match=r"^model .*: the export's base model_type 'llama9' is not one this transformers"
    ) as caught:
        load_for_inference(str(folder))
    assert "\n" not in str(caught.value)


def test_solo_computes_an_export_in_its_own_dtype_under_dtype_auto(exported, tiny_model_dir, tmp_path, monkeypatch):
    """--dtype auto chose by this machine (or SOLO_AUTO_DTYPE): a bf16 export ran in float32 in solo and in bf16 in
    transformers, so they wrote different words."""
    base = load_model(tiny_model_dir).model
    adapter = perturb(make_adapter(base, "schedule", plan=[(-1, 2), (1, 3)], source_norm="rms"), scale=1.0)
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(base, adapter))
    export_model(path, tiny_model_dir, tmp_path / "bf16", dtype="bf16")
    monkeypatch.setenv("SOLO_AUTO_DTYPE", "float32")
    target = load_for_inference(str(tmp_path / "bf16"), dtype="auto")
    precision = target.loaded.precision
    assert precision.dtype == "bfloat16" and precision.reason.startswith("bfloat16: the export's dtype")
    assert target.loaded.model.dtype == torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16", trust_remote_code=True).eval()
    ids = target.loaded.tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.equal(target.loaded.model.generate(ids, **GREEDY), model.generate(ids, **GREEDY))
    target.handle.detach()
    monkeypatch.setenv("SOLO_AUTO_DTYPE", "bfloat16")
    assert load_for_inference(str(exported), dtype="auto").loaded.precision.dtype == "float32"  # a float32 export
    assert load_for_inference(str(tmp_path / "bf16"), dtype="float32").loaded.precision.dtype == "float32"  # as asked


def test_an_export_of_a_base_whose_checkpoint_transformers_converts_by_model_type_loads_its_weights(tmp_path):
    """Mixtral's per-expert checkpoint tensors are fused as they load, by model_type: under the export's own
    model_type the experts were left missing (random) in transformers."""
    sizes = {"num_hidden_layers": 4, "hidden_size": HIDDEN, "num_attention_heads": 4, "num_key_value_heads": 2}
    moe = {"intermediate_size": 64, "num_local_experts": 4, "num_experts_per_tok": 2, "vocab_size": VOCAB, "pad_token_id": 2}
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(AutoConfig.for_model("mixtral", **sizes, **moe)).save_pretrained(tmp_path / "moe")
    make_tokenizer().save_pretrained(tmp_path / "moe")
    base = load_model(str(tmp_path / "moe")).model
    adapter = perturb(make_adapter(base, "schedule", plan=[(-1, 2), (1, 3)]), scale=1.0)
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(base, adapter))
    result = export_model(path, str(tmp_path / "moe"), tmp_path / "export")
    assert result.max_abs_diff <= export.TOLERANCE[torch.float32] and result.greedy_equal


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _completion(port: int) -> str:
    body = json.dumps({"model": "export", "prompt": PROMPT, "max_tokens": GREEDY["max_new_tokens"], "temperature": 0})
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions", body.encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())["choices"][0]["text"]


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.slow  # transformers serve starts two processes: 30-70 s on 2 cores
def test_transformers_serve_serves_the_adapter_or_refuses_never_the_bare_base(exported, tiny_model_dir, tmp_path):
    for package in ("fastapi", "uvicorn", "openai"):  # transformers[serving]
        pytest.importorskip(package)
    port = _free_port()
    command = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(exported), "--trust-remote-code"]
    command += ["--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    try:
        deadline = time.monotonic() + 180
        while server.poll() is None and not _healthy(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        if server.poll() is None and _healthy(port):  # it serves: then it must be the adapter's text
            served = _completion(port)
            model = AutoModelForCausalLM.from_pretrained(exported, trust_remote_code=True).eval()
            base = load_model(tiny_model_dir)
            assert served == _greedy(model, base.tokenizer) != _greedy(base.model, base.tokenizer)
        else:
            assert server.wait(timeout=30) != 0
            log.seek(0)
            assert "SoloForCausalLM" in log.read()  # it says which class it could not find
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        log.close()


def test_a_bf16_export_keeps_its_connections_float32_and_matches_solo(tiny_model_dir, tmp_path):
    """_keep_in_fp32_modules keeps modules float32 under float16 only: a bf16 export ran its connections in bf16."""
    base = load_model(tiny_model_dir).model
    adapter = perturb(make_adapter(base, "schedule", plan=[(-1, 2), (1, 3)], source_norm="rms"), scale=0.3)
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(base, adapter))
    result = export_model(path, tiny_model_dir, tmp_path / "export", dtype="bf16")
    assert result.dtype == "bfloat16" and result.greedy_equal
    assert result.max_abs_diff <= 1e-4  # the same bf16 base and float32 connections on both sides (was 3.9e-3)
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "export", trust_remote_code=True)  # its own dtype: bf16
    assert model.dtype == torch.bfloat16
    solo = {name: p.dtype for name, p in model.named_parameters() if name.startswith("solo.")}
    assert solo and set(solo.values()) == {torch.float32}


def test_merge_export_says_which_dtype_it_checked_the_one_solo_computes_it_in(tiny_model_dir, tmp_path, monkeypatch):
    base = load_model(tiny_model_dir).model
    adapter = perturb(make_adapter(base, "schedule", plan=[(-1, 2)]), scale=0.3)
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(base, adapter))
    args = ["merge", str(path), "--model", tiny_model_dir, "--export"]
    monkeypatch.setenv("SOLO_AUTO_DTYPE", "bfloat16")  # a machine where auto picks bf16 (an AMX CPU)
    result = runner.invoke(app, [*args, str(tmp_path / "e1")])
    assert result.exit_code == 0, result.output
    assert "checked in float32, as transformers loads it" in result.output
    assert "note:" not in result.output  # solo generate --dtype auto computes the export in float32 too (it said bfloat16)
    assert Path(tmp_path / "e1" / "config.json").is_file()


@pytest.fixture
def avx512bf16_cpu(monkeypatch):
    """bitsandbytes as it behaves on a CPU with AVX512-BF16 (AMX machines), on any CPU: a Linear4bit repacks its
    weight for a bfloat16 CPU kernel in its first eval-mode forward without grad."""
    bnb_modules = pytest.importorskip("bitsandbytes.nn.modules")
    monkeypatch.setattr(bnb_modules, "has_avx512bf16", lambda: True)


def test_an_export_over_a_4bit_base_passes_its_check_on_every_cpu(avx512bf16_cpu, tmp_path):
    """transformers could not save a base that came 4-bit (no reverse of its loading), and the reloaded export
    multiplied in bfloat16 on AVX512-BF16 CPUs while solo's base does not: a logit difference of 0.65."""
    # 64 wide: bitsandbytes packs 4-bit weights in blocks of 64
    shape = {
        "num_hidden_layers": 4,
        "hidden_size": 64,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
    }
    tokens = {"vocab_size": VOCAB, "max_position_embeddings": 256, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
    config = AutoConfig.for_model("llama", **shape, **tokens)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "full")
    make_tokenizer().save_pretrained(tmp_path / "full")
    load_model(str(tmp_path / "full"), quantize="nf4").model.save_pretrained(tmp_path / "nf4")
    make_tokenizer().save_pretrained(tmp_path / "nf4")
    base = load_model(str(tmp_path / "nf4"))
    assert base.precision.quantize == "nf4"
    adapter = perturb(make_adapter(base.model, "schedule", plan=[(-1, 2), (1, 3)], source_norm="rms"), scale=1.0)
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(base.model, adapter))
    result = export_model(path, str(tmp_path / "nf4"), tmp_path / "export")
    assert result.max_abs_diff <= export.TOLERANCE[torch.float32] and result.greedy_equal
    assert load_for_inference(str(tmp_path / "export")).loaded.precision.quantize == "nf4"
