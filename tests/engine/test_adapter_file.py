"""The adapter file: round trip, header, atomic writes, and refusal of what is not ours."""

import json

import pytest
import torch
from safetensors.torch import save_file
from support import info_for, inputs, make_adapter, perturb
from tiny import make_model

from solo_cli import attach, fingerprint, load_adapter, read_info, save_adapter
from solo_cli.engine.adapter_file import FORMAT_VERSION
from solo_cli.errors import RuntimeFailure, UsageError


@pytest.mark.parametrize("gate", ["learned", "schedule", "zero-init"])
def test_save_and_load_give_identical_logits(tmp_path, gate):
    model = make_model("qwen2")
    adapter = perturb(make_adapter(model, gate))
    path = save_adapter(tmp_path / "run", adapter, info_for(model, adapter))
    assert path.name == "adapter.safetensors"
    ids = inputs()
    handle = attach(model, adapter)
    expected = model(ids).logits
    handle.detach()
    loaded, info = load_adapter(path)
    attach(model, loaded)
    assert torch.equal(model(ids).logits, expected)
    assert info.config.connections == adapter.config.connections and info.config.gate == gate


def test_header_records_everything_as_json_strings(tmp_path):
    model = make_model("gpt2")
    adapter = make_adapter(model)
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(model, adapter))
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    decoded = {k: json.loads(v) for k, v in meta.items()}
    assert decoded["format"] == "solo-adapter" and decoded["format_version"] == FORMAT_VERSION
    assert decoded["connections"] == [[-1, 2], [0, 3], [1, 3]]
    assert decoded["fingerprint"] == {"model_type": "gpt2", "num_blocks": 4, "hidden_size": 32, "vocab_size": 320}
    assert decoded["chat_template"] is True and decoded["data_format"] == "completion"
    assert decoded["training"]["steps"] == 3 and decoded["base_revision"] == "abc"
    for key in ("solo_version", "rank", "gate", "homotopy_steps", "base_model"):
        assert key in decoded
    info = read_info(path)
    assert info.fingerprint == fingerprint(model)


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path, monkeypatch):
    model = make_model("llama")
    adapter = make_adapter(model)
    path = save_adapter(tmp_path / "adapter.safetensors", adapter, info_for(model, adapter))
    before = path.read_bytes()

    def broken_save(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("solo_cli.engine.adapter_file.save_file", broken_save)
    with pytest.raises(RuntimeFailure, match="no space left on device writing .*adapter.safetensors"):
        save_adapter(path, perturb(adapter), info_for(model, adapter))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter.safetensors"]


def test_a_safetensors_file_that_is_not_an_adapter_is_refused(tmp_path):
    path = tmp_path / "adapter_model.safetensors"
    save_file({"base_model.model.q_proj.lora_A.weight": torch.zeros(4, 8)}, str(path))
    with pytest.raises(UsageError, match="not a solo adapter"):
        read_info(path)


def test_a_newer_format_version_is_refused(tmp_path):
    model = make_model("llama")
    adapter = make_adapter(model)
    info = info_for(model, adapter)
    info.format_version = FORMAT_VERSION + 1
    path = save_adapter(tmp_path / "a.safetensors", adapter, info)
    with pytest.raises(UsageError, match="upgrade solo"):
        read_info(path)


def test_missing_and_truncated_files_are_clear_errors(tmp_path):
    with pytest.raises(UsageError, match="no such file"):
        read_info(tmp_path / "nope.safetensors")
    model = make_model("llama")
    adapter = make_adapter(model)
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(model, adapter))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(UsageError, match="a.safetensors"):
        load_adapter(path)


def test_a_version_1_file_without_source_norm_loads_as_none(tmp_path):
    """solo 0.1 wrote no source_norm and trained on raw h_i: such files must keep their exact outputs."""
    model = make_model("llama")
    adapter = perturb(make_adapter(model, "schedule"))
    info = info_for(model, adapter)
    info.format_version = 1
    meta = info.to_metadata()
    del meta["source_norm"]
    path = tmp_path / "old.safetensors"
    save_file({k: v.contiguous() for k, v in adapter.state_dict().items()}, str(path), metadata=meta)
    loaded, read = load_adapter(path)
    assert read.config.source_norm == "none" and read.format_version == 1
    ids = inputs()
    attach(model, adapter).detach()
    handle = attach(model, adapter)
    expected = model(ids).logits
    handle.detach()
    handle = attach(model, loaded)
    assert torch.equal(model(ids).logits, expected)
    handle.detach()


@pytest.mark.parametrize("source_norm", ["rms", "none"])
def test_source_norm_round_trips(tmp_path, source_norm):
    model = make_model("llama")
    adapter = perturb(make_adapter(model, "schedule", source_norm=source_norm))
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(model, adapter))
    assert read_info(path).config.source_norm == source_norm


@pytest.mark.parametrize("gate", ["learned", "schedule", "zero-init"])
def test_tensor_shapes_are_the_adapters_state_dict(gate):
    from solo_cli.engine.adapter_config import tensor_shapes

    adapter = make_adapter(make_model("llama"), gate)
    assert tensor_shapes(adapter.config) == {k: tuple(v.shape) for k, v in adapter.state_dict().items()}


def test_inspect_norms_match_the_torch_computation(tmp_path):
    from solo_cli.inference.report import adapter_report

    model = make_model("llama")
    adapter = perturb(make_adapter(model, "schedule"))
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(model, adapter))
    report = adapter_report(path)
    for row, ((src, dst), conn) in zip(report["connections"], adapter.items()):
        expected = float(torch.linalg.matrix_norm(conn.delta_weight().detach()))
        assert (row["source"], row["destination"]) == (src, dst)
        assert row["norm"] == pytest.approx(expected, rel=1e-5) and row["gate"] == pytest.approx(0.7)
    assert report["trainable_params"] == sum(p.numel() for k, p in adapter.state_dict().items() if not k.endswith(".gate"))


def test_inspect_imports_no_torch(tmp_path):
    """`solo inspect ADAPTER` reads the header and computes the norms with numpy: no torch, no transformers."""
    import subprocess
    import sys

    model = make_model("llama")
    adapter = perturb(make_adapter(model))
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(model, adapter))
    code = (
        "import sys; from solo_cli.cli import main; path = sys.argv[1]; sys.argv = ['solo', 'inspect', path, '--json']\n"
        "try:\n    main()\nexcept SystemExit as exc:\n    assert exc.code == 0, exc.code\n"
        "from pathlib import Path; from solo_cli.files.outputs import is_solo_adapter; assert is_solo_adapter(Path(path))\n"
        "print([m for m in ('torch', 'transformers') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report, imported = done.stdout.rstrip("\n").rsplit("\n", 1)
    assert json.loads(report)["trainable_params"] > 0
    assert imported == "[]"
