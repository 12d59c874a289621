"""The "As a library" snippet of docs/library.md, run as written (on a tiny model), so that it cannot drift from the code."""

import re

from support import REPO, run

from solo_cli import read_info
from solo_cli.training.config import TrainConfig

MODEL_LINE = 'MODEL = "smollm2-135m"'


def library_snippet() -> str:
    readme = (REPO / "docs" / "library.md").read_text(encoding="utf-8")
    section = readme[readme.index("## As a library") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_library_snippet_attaches_trains_saves_loads_and_generates(tiny_model_dir, tmp_path, monkeypatch, capsys):
    snippet = library_snippet()
    assert MODEL_LINE in snippet and f"rank={TrainConfig().rank}," in snippet  # solo train's default rank
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(snippet.replace(MODEL_LINE, f"MODEL = {str(tiny_model_dir)!r}"), "README.md", "exec"), scope)
    assert capsys.readouterr().out.strip()  # the generated text
    info = read_info(tmp_path / "my-adapter.safetensors")
    assert info.base_model == str(tiny_model_dir) and info.fingerprint == scope["shape"]
    assert info.config.rank == TrainConfig().rank and info.training == {"dtype": "float32", "quantize": "none"}
    loaded = scope["adapter"]  # the adapter loaded back: trained, so its maps are not zero
    assert all(float(c.delta_weight().abs().max()) > 0 for c in loaded.connections.values())
    code, lines = run("inspect", tmp_path / "my-adapter.safetensors")
    assert code == 0, lines
    assert any(line.startswith("data: not recorded, chat template off") for line in lines), lines
    assert "training: dtype=float32, quantize=none" in lines
