"""Model cards: front matter the Hub reads, and a body that agrees with the adapter file."""

import dataclasses

import yaml
from support import info_for, make_adapter
from tiny import make_model

from solo_cli.engine.model_card import render_card


def _front(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_an_adapter_card_names_base_data_and_metrics():
    model = make_model("llama")
    adapter = make_adapter(model, "schedule", rank=2)
    info = info_for(model, adapter)
    info = dataclasses.replace(
        info, base_model="smollm2-135m", training={"steps": 76, "final_loss": 1.25, "best_valid_loss": 1.34, "data": "me/e2e"}
    )
    card = render_card(info, metrics={"bleu": 0.6618})
    front = _front(card)
    assert front["library_name"] == "solo"
    assert front["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"  # the built-in name, as its Hub id
    assert front["datasets"] == ["me/e2e"]
    assert "solo" in front["tags"] and "custom_code" not in front["tags"]
    metrics = {m["type"]: m["value"] for m in front["model-index"][0]["results"][0]["metrics"]}
    assert metrics == {"train_loss": 1.25, "valid_loss": 1.34, "bleu": 0.6618}
    assert "rank 2" in card and "solo generate --model smollm2-135m --adapter" in card
    params = len(adapter.config.connections) * 2 * 2 * info.fingerprint.hidden_size
    assert f"trainable parameters: {params:,}" in card and params == adapter.num_parameters()


def test_local_paths_are_not_passed_off_as_hub_ids(tmp_path):
    model = make_model("gpt2")
    info = info_for(model, make_adapter(model, "zero-init"))
    data = tmp_path / "train.jsonl"
    data.write_text("{}\n")
    info = dataclasses.replace(info, base_model=str(tmp_path), training={"data": str(data)})
    front = _front(render_card(info))
    assert "base_model" not in front and "datasets" not in front and "model-index" not in front


def test_an_export_card_says_how_transformers_loads_it():
    model = make_model("gpt2")
    info = info_for(model, make_adapter(model, "zero-init"))
    card = render_card(info, export=True)
    assert "custom_code" in _front(card)["tags"]
    assert "trust_remote_code=True" in card
