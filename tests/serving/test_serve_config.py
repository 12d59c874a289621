"""ServeConfig: adapter specs, and how many CPU threads the model gets beside the HTTP side."""

from __future__ import annotations

import pytest
import torch

from solo_cli.errors import UsageError
from solo_cli.serving.config import ServeConfig, adapter_spec, adapters_by_name
from solo_cli.serving.server import decode_threads


def test_adapter_specs_name_each_adapter():
    assert adapter_spec("e2e=runs/e2e") == ("e2e", "runs/e2e")
    assert adapter_spec("runs/e2e") == ("e2e", "runs/e2e")
    assert adapter_spec("runs/e2e/adapter.safetensors") == ("e2e", "runs/e2e/adapter.safetensors")
    assert adapter_spec("user/repo") == ("repo", "user/repo")
    assert adapters_by_name(["a=x", "b=y=z"]) == {"a": "x", "b": "y=z"}
    with pytest.raises(UsageError, match="given twice"):
        adapters_by_name(["a=x", "runs/a"])


def test_the_model_leaves_one_of_torchs_threads_to_the_http_side_unless_told(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert decode_threads(ServeConfig()) == max(1, torch.get_num_threads() - 1)
    assert decode_threads(ServeConfig(threads=3)) == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's choice stands
    assert decode_threads(ServeConfig()) == torch.get_num_threads()
    with pytest.raises(UsageError, match="threads 0"):
        ServeConfig(threads=0).validate()


def test_an_export_folder_as_the_model_is_refused_naming_its_base_and_adapter(tmp_path):
    """Its base class would load without the connections: the server would answer with the bare base."""
    (tmp_path / "config.json").write_text('{"model_type": "solo", "solo_adapter": {"base_model": "smollm2-135m"}}')
    with pytest.raises(
        UsageError, match=r"is a `solo merge --export` folder; serve its base with its adapter: .*adapter\.safetensors"
    ):
        ServeConfig(model=str(tmp_path)).validate()
    ServeConfig(model=str(tmp_path / "elsewhere")).validate()  # an ordinary model folder or hub id is fine
