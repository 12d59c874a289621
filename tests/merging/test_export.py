"""The export carries solo's own modeling_solo.py, unchanged: one implementation of the connections."""

import ast
import json
from pathlib import Path

import pytest
from support import info_for, make_adapter, perturb

import solo_cli.merging.export as export
from solo_cli import save_adapter
from solo_cli.engine import modeling_solo
from solo_cli.engine.models import load_model
from solo_cli.files.outputs import is_export
from solo_cli.inference import load
from solo_cli.merging.export import export_model


def test_the_exported_modeling_file_is_the_package_module_byte_for_byte(tiny_model_dir, tmp_path):
    base = load_model(tiny_model_dir).model
    adapter = perturb(make_adapter(base, "schedule", plan=[(-1, 2), (1, 3)], source_norm="rms"), scale=0.3)
    path = save_adapter(tmp_path / "a.safetensors", adapter, info_for(base, adapter))
    result = export_model(path, tiny_model_dir, tmp_path / "export")
    assert result.max_abs_diff <= 1e-4 and result.greedy_equal  # a scheduled gate and the rms norm, reloaded
    folder = tmp_path / "export"
    assert (folder / "modeling_solo.py").read_bytes() == Path(modeling_solo.__file__).read_bytes()
    glue = (folder / "solo_base.py").read_text()
    assert "from transformers import LlamaForCausalLM as Base" in glue and len(glue.splitlines()) <= 3
    spec = json.loads((folder / "config.json").read_text())["solo_adapter"]
    assert spec["connections"] == [[-1, 2], [1, 3]] and spec["keys"] == ["emb_2", "1_3"]
    assert is_export(folder) and is_export(str(folder))


def test_modeling_solo_imports_only_torch_and_transformers():
    tree = ast.parse(Path(modeling_solo.__file__).read_text())
    absolute, relative = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            absolute |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            (relative if node.level else absolute).add(node.module.split(".")[0])
    assert absolute <= {"math", "torch", "transformers"}
    assert relative == {"solo_base"}  # the one generated file an export has beside it


def test_the_model_and_config_classes_exist_only_in_an_export():
    with pytest.raises(AttributeError, match="only in an export folder"):
        modeling_solo.SoloForCausalLM  # noqa: B018
    with pytest.raises(AttributeError, match="only in an export folder"):
        modeling_solo.SoloConfig  # noqa: B018
    with pytest.raises(AttributeError):
        modeling_solo.anything_else  # noqa: B018


def test_one_is_export_and_no_template():
    assert load.is_export is is_export
    assert not hasattr(export, "is_export") and not hasattr(export, "MODELING_TEMPLATE")
