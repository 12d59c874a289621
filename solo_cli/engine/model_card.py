"""The README.md model card that every run folder and every export carries.

YAML front matter as the Hugging Face Hub reads it (``base_model``, ``library_name: solo``, tags,
the dataset, a ``model-index`` with the metrics the run reached), then what the adapter is, how it
was trained and how to use it. Built from the adapter's own header, so the card never disagrees
with the file beside it.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from .topology import format_connections

# Built-in models by their Hub ids (the card's base_model must be a Hub id to link there).
BUILTIN_HUB_IDS = {"smollm2-135m": "HuggingFaceTB/SmolLM2-135M-Instruct"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _hub_id(name: str | None) -> str | None:
    """``name`` if it reads as a Hub repo id and is not a local path."""
    if not name:
        return None
    name = BUILTIN_HUB_IDS.get(name, name)
    return name if _HUB_ID.match(name) and not Path(name).exists() else None


def _metrics(training: dict, extra: dict | None) -> list[dict]:
    values = {"train_loss": training.get("final_loss"), "valid_loss": training.get("best_valid_loss")}
    values |= extra or {}
    return [
        {"type": key, "name": key.replace("_", " "), "value": round(float(v), 4)}
        for key, v in values.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    ]


def _front_matter(info, base: str | None, dataset: str | None, metrics: list[dict], export: bool) -> dict:
    tags = ["solo", "solo-connection", "peft", "text-generation"] + (["custom_code"] if export else [])
    front = {"library_name": "solo", "tags": tags, "pipeline_tag": "text-generation"}
    if base:
        front["base_model"] = base
    if dataset:
        front["datasets"] = [dataset]
    if metrics:
        result = {"task": {"type": "text-generation"}, "metrics": metrics}
        if dataset:
            result["dataset"] = {"name": dataset, "type": dataset}
        front["model-index"] = [{"name": "solo-adapter", "results": [result]}]
    return front


def render_card(info, *, export: bool = False, metrics: dict | None = None) -> str:
    """The model card of an adapter (``info``: its AdapterInfo), or of an export when ``export``.

    ``metrics`` adds scores beyond the header's losses (e.g. ``{"bleu": 0.66}`` from solo eval).
    """
    training = info.training or {}
    base, data = _hub_id(info.base_model), training.get("data")
    dataset = _hub_id(data)
    listed = _metrics(training, metrics)
    front = yaml.safe_dump(_front_matter(info, base, dataset, listed, export), sort_keys=False, allow_unicode=True)
    config = info.config
    params = len(config.connections) * 2 * config.rank * info.fingerprint.hidden_size
    lines = [
        f"---\n{front}---",
        "",
        f"# {'Solo Connection model' if export else 'Solo Connection adapter'} for {info.base_model}",
        "",
        "Trained with [solo](https://arxiv.org/abs/2507.14353) (Solo Connection: low-rank long skip connections "
        "between decoder blocks, gated by a homotopy parameter; the base model stays frozen).",
        "",
        f"- base model: `{info.base_model}`" + (f" (revision `{info.base_revision}`)" if info.base_revision else ""),
        f"- connections: `{format_connections(config.connections)}` ({len(config.connections)}), rank {config.rank}, "
        f"gate `{config.gate}`, source norm `{config.source_norm}`",
        f"- trainable parameters: {params:,}",
    ]
    if data:
        lines.append(
            f"- data: `{data}` ({info.data_format or 'unknown'} rows, chat template {'on' if info.chat_template else 'off'})"
        )
    if training.get("objective"):  # what the adapter was tuned for: sft, or a preference loss from --init-adapter
        lines.append(f"- objective: {_objective(training)}")
    for key in ("steps", "tokens", "lr", "batch_size", "seed", "dtype"):
        if training.get(key) is not None:
            lines.append(f"- {key.replace('_', ' ')}: {training[key]}")
    for metric in listed:
        lines.append(f"- {metric['name']}: {metric['value']}")
    lines += ["", "## Usage", ""] + (_export_usage() if export else _adapter_usage(info.base_model))
    return "\n".join(lines) + "\n"


def _objective(training: dict) -> str:
    """``dpo (beta 0.1), from `runs/sft/adapter.safetensors```: the objective, its strength and where it started."""
    text = str(training["objective"])
    settings = [
        f"{key.replace('simpo_', '')} {training[key]}" for key in ("beta", "simpo_gamma") if training.get(key) is not None
    ]
    text += f" ({', '.join(settings)})" if settings else ""
    return text + (f", from `{training['init_adapter']}`" if training.get("init_adapter") else "")


def _adapter_usage(base: str) -> list[str]:
    return [
        "```bash",
        "pip install solo-cli",
        f'solo generate --model {base} --adapter <this folder, or its Hub repo id> "Your prompt"',
        "solo eval --adapter <this folder, or its Hub repo id> --data test.jsonl",
        "```",
        "",
        "```python",
        "from solo_cli import attach, load_adapter, load_model",
        "",
        f'loaded = load_model("{base}")',
        'adapter, info = load_adapter("adapter.safetensors")',
        "attach(loaded.model, adapter)  # the model now runs base + adapter",
        "```",
    ]


def _export_usage() -> list[str]:
    return [
        "```python",
        "from transformers import AutoModelForCausalLM, AutoTokenizer",
        "",
        'model = AutoModelForCausalLM.from_pretrained("<this folder>", trust_remote_code=True)',
        'tokenizer = AutoTokenizer.from_pretrained("<this folder>", trust_remote_code=True)',
        "```",
        "",
        "Without `trust_remote_code=True`, transformers refuses the folder rather than run the base model without "
        'its connections; `solo generate --model <this folder> "Your prompt"` loads it with its adapter and runs none '
        "of its code.",
    ]
