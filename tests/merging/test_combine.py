"""solo merge: combining adapters, SVD re-factoring, and the standalone export."""

import json

import pytest
import torch
from support import info_for, inputs, make_adapter, perturb
from tiny import make_model
from torch.testing import assert_close
from typer.testing import CliRunner

from solo_cli import attach, load_adapter, save_adapter
from solo_cli.cli import app
from solo_cli.engine.adapter import AdapterConfig, SoloAdapter
from solo_cli.errors import UsageError
from solo_cli.merging.combine import merge_adapters, parse_weights, refactor

runner = CliRunner()


def saved(tmp_path, name, model, plan, gate="learned", rank=4, seed=0):
    adapter = perturb(make_adapter(model, gate, plan=plan, rank=rank, seed=seed), scale=0.3)
    with torch.no_grad():
        for conn in adapter.connections.values():
            if conn.gate is not None:
                conn.gate.fill_(0.5 + 0.1 * seed)
    return save_adapter(tmp_path / f"{name}.safetensors", adapter, info_for(model, adapter)), adapter


def logits_with(model, adapter, ids):
    handle = attach(model, adapter)
    out = model(ids).logits
    handle.detach()
    return out


def test_weights_one_zero_reproduce_the_first_adapter_exactly(tmp_path):
    model = make_model("llama")
    a_path, a = saved(tmp_path, "a", model, [(0, 3), (1, 3)])
    b_path, _ = saved(tmp_path, "b", model, [(0, 3), (-1, 2)], seed=1)
    result = merge_adapters([a_path, b_path], [1.0, 0.0])
    assert result.adapter.config.connections == a.config.connections
    ids = inputs()
    assert torch.equal(logits_with(model, result.adapter, ids), logits_with(model, a, ids))


def test_shared_connections_are_weighted_sums_of_their_maps(tmp_path):
    model = make_model("llama")
    a_path, a = saved(tmp_path, "a", model, [(0, 3), (1, 3)])
    b_path, b = saved(tmp_path, "b", model, [(0, 3), (-1, 2)], seed=1)
    result = merge_adapters([a_path, b_path], [0.7, 0.3], rank=8)  # rank 8 holds both rank-4 maps exactly
    merged = result.adapter.connections
    expected = 0.7 * a.connections["0_3"].delta_weight() + 0.3 * b.connections["0_3"].delta_weight()
    assert_close(merged["0_3"].delta_weight(), expected, rtol=1e-5, atol=1e-6)
    assert_close(merged["1_3"].delta_weight(), 0.7 * a.connections["1_3"].delta_weight(), rtol=1e-6, atol=1e-7)
    assert_close(merged["emb_2"].delta_weight(), 0.3 * b.connections["emb_2"].delta_weight(), rtol=1e-6, atol=1e-7)
    assert result.errors["0->3"] < 1e-6


def test_refactoring_error_is_the_discarded_singular_mass():
    torch.manual_seed(0)
    factors = [(torch.randn(32, 4), torch.randn(4, 32)), (torch.randn(32, 4), torch.randn(4, 32))]
    full = sum(b @ a for b, a in factors)
    B, A, error = refactor(factors, 3)
    s = torch.linalg.svdvals(full.double())
    assert error == pytest.approx(float((s[3:].square().sum() / s.square().sum()).sqrt()), rel=1e-6)
    assert float(torch.linalg.matrix_norm(full - B @ A) / torch.linalg.matrix_norm(full)) == pytest.approx(error, rel=1e-4)
    B, A, error = refactor(factors, 8)
    assert error < 1e-7 and B.shape == (32, 8)


def test_adapters_of_different_bases_are_refused_naming_both(tmp_path):
    a_path, _ = saved(tmp_path, "a", make_model("llama"), [(0, 3)])
    b_path, _ = saved(tmp_path, "b", make_model("gpt2"), [(0, 3)])
    with pytest.raises(UsageError, match=r"cannot merge .*b\.safetensors.*gpt2.*a\.safetensors.*llama"):
        merge_adapters([a_path, b_path], [0.5, 0.5])


def test_weights_parsing():
    assert parse_weights(None, 4) == [0.25] * 4
    assert parse_weights("0.7,0.3", 2) == [0.7, 0.3]
    with pytest.raises(UsageError, match="2 weights for 3 adapters"):
        parse_weights("1,2", 3)
    with pytest.raises(UsageError, match="weights") as info:
        parse_weights("a,b", 2)
    assert info.value.as_flags().startswith("--weights 'a,b': ")  # the engine names the parameter, the CLI the flag


def test_merge_cli_writes_a_loadable_adapter(tmp_path):
    model = make_model("llama")
    a_path, _ = saved(tmp_path, "a", model, [(0, 3)])
    b_path, _ = saved(tmp_path, "b", model, [(0, 3)], seed=1)
    out = tmp_path / "merged.safetensors"
    result = runner.invoke(app, ["merge", str(a_path), str(b_path), "--weights", "0.5,0.5", "--rank", "2", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "relative reconstruction error" in result.output
    adapter, info = load_adapter(out)
    assert adapter.config.rank == 2 and info.training["weights"] == [0.5, 0.5]
    again = runner.invoke(app, ["merge", str(a_path), str(b_path), "-o", str(out)])
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.parametrize("gate", ["learned", "zero-init"])
def test_export_loads_in_plain_transformers_with_the_same_logits_and_greedy_output(tiny_model_dir, tmp_path, gate):
    from transformers import AutoModelForCausalLM

    from solo_cli.engine.models import load_model

    base = load_model(tiny_model_dir).model
    adapter = perturb(make_adapter(base, gate, plan=[(-1, 2), (1, 3)]), scale=0.3)
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(base, adapter))
    export = tmp_path / "export"
    result = runner.invoke(app, ["merge", str(path), "--model", tiny_model_dir, "--export", str(export)])
    assert result.exit_code == 0, result.output
    assert "largest logit difference" in result.output and "identical" in result.output
    assert "trust_remote_code=True" in (export / "README.md").read_text()
    config = json.loads((export / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_solo.SoloForCausalLM"
    exported = AutoModelForCausalLM.from_pretrained(export, trust_remote_code=True).eval()
    ids = inputs()
    expected = logits_with(base, adapter, ids)
    assert_close(exported(ids).logits, expected, rtol=1e-5, atol=1e-5)
    handle = attach(base, adapter)
    settings = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": 2}
    assert torch.equal(exported.generate(ids[:1], **settings), base.generate(ids[:1], **settings))
    handle.detach()
    # solo itself loads the folder with no --adapter and runs none of its code
    gen = runner.invoke(app, ["generate", "--model", str(export), "--max-new-tokens", "4", "name[Place 1] ->"])
    direct = runner.invoke(
        app, ["generate", "--model", tiny_model_dir, "--adapter", str(path), "--max-new-tokens", "4", "name[Place 1] ->"]
    )
    assert gen.exit_code == 0 and gen.output == direct.output


def test_export_refuses_an_existing_folder(tiny_model_dir, tmp_path):
    from solo_cli.engine.models import load_model

    base = load_model(tiny_model_dir).model
    adapter = SoloAdapter(AdapterConfig([(0, 3)], 2, "zero-init", 1, 32))
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(base, adapter))
    (tmp_path / "taken").mkdir()
    result = runner.invoke(app, ["merge", str(path), "--model", tiny_model_dir, "--export", str(tmp_path / "taken")])
    assert result.exit_code == 2 and "already exists" in result.output


@pytest.mark.parametrize("weights", ["nan,1", "inf,1", "1,-inf"])
def test_non_finite_weights_are_refused_in_one_line(tmp_path, weights):
    model = make_model("llama")
    a_path, _ = saved(tmp_path, "a", model, [(0, 3)])
    b_path, _ = saved(tmp_path, "b", model, [(0, 3)], seed=1)
    out = tmp_path / "m.safetensors"
    result = runner.invoke(app, ["merge", str(a_path), str(b_path), "--weights", weights, "-o", str(out)])
    assert result.exit_code == 2 and "finite" in result.output and len(result.output.strip().splitlines()) == 1
    assert not out.exists()


def test_an_export_loaded_with_trust_remote_code_applies_the_adapter_once(tiny_model_dir, tmp_path):
    """solo loads an export as its base class even when asked to trust remote code: base + adapter, once."""
    from transformers import AutoModelForCausalLM

    from solo_cli.engine.models import load_model
    from solo_cli.inference.load import load_for_inference

    base = load_model(tiny_model_dir).model
    adapter = perturb(make_adapter(base, "zero-init", plan=[(-1, 2), (1, 3)]), scale=0.3)
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(base, adapter))
    export = tmp_path / "export"
    assert runner.invoke(app, ["merge", str(path), "--model", tiny_model_dir, "--export", str(export)]).exit_code == 0
    ids = inputs()
    expected = logits_with(base, adapter, ids)
    for trust in (False, True):
        target = load_for_inference(str(export), trust_remote_code=trust)
        assert_close(target.loaded.model(ids).logits, expected, rtol=1e-5, atol=1e-5)
        target.handle.detach()
    remote = AutoModelForCausalLM.from_pretrained(export, trust_remote_code=True).eval()
    with pytest.raises(ValueError, match="already has solo connections"):
        attach(remote, adapter)


def test_export_keeps_a_bfloat16_base_in_bfloat16(tmp_path):
    from safetensors import safe_open
    from tiny import make_tokenizer

    base_dir = tmp_path / "bf16-base"
    make_model("llama").to(torch.bfloat16).save_pretrained(base_dir)
    make_tokenizer().save_pretrained(base_dir)
    model = make_model("llama").to(torch.bfloat16)
    adapter = perturb(make_adapter(model, "zero-init", plan=[(0, 3)]), scale=0.3)
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(model, adapter))
    export = tmp_path / "export"
    result = runner.invoke(app, ["merge", str(path), "--model", str(base_dir), "--export", str(export)])
    assert result.exit_code == 0, result.output
    with safe_open(str(export / "model.safetensors"), "pt") as handle:
        dtypes = {key: handle.get_slice(key).get_dtype() for key in handle.keys()}
    assert dtypes["model.layers.0.mlp.up_proj.weight"] == "BF16"
    assert {dtypes[k] for k in dtypes if k.startswith("solo.")} == {"F32"}
