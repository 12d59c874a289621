"""`solo eval`: loss and perplexity on completion tokens, and generation scored with the E2E metrics."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from .data import encode_rows, read_rows
from .errors import UsageError
from .generation import GenerationSettings, generate
from .trainer import evaluate_loss


@dataclass
class EvalSet:
    """Rows grouped for generation: one prompt per unique input, with every reference it has."""

    prompts: list  # str, or a list of chat messages
    references: list[list[str]]
    rows: list[dict] = field(default_factory=list)
    fmt: str = "completion"


def _prompt_key(prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def eval_set(rows: list[dict], fmt: str) -> EvalSet:
    """Group rows by prompt (E2E has one row per reference) into prompts with reference lists."""
    if fmt == "text":
        raise UsageError("text rows have no prompt to generate from; use prompt/completion, prompt/references or chat rows")
    grouped: dict[str, tuple] = {}
    for row in rows:
        if fmt == "chat":
            messages = row["messages"]
            prompt, refs = messages[:-1], [messages[-1]["content"]] if messages[-1]["role"] == "assistant" else []
        else:
            prompt = row["prompt"]
            refs = list(row.get("references") or []) + ([row["completion"]] if "completion" in row else [])
        entry = grouped.setdefault(_prompt_key(prompt), (prompt, []))
        entry[1].extend(refs)
    prompts = [p for p, _ in grouped.values()]
    references = [r for _, r in grouped.values()]
    missing = [n for n, r in enumerate(references) if not r]
    if missing:
        raise UsageError(
            f"{len(missing)} prompts have no reference to score against (first: prompt #{missing[0] + 1}); "
            'add "references" or a "completion"'
        )
    return EvalSet(prompts, references, rows, fmt)


def loss_and_perplexity(
    model, tokenizer, rows: list[dict], fmt: str, *, chat_template: bool | None, max_seq_length: int, batch_size: int, device
) -> dict | None:
    """Token-weighted loss on the trained tokens (as in training) and its perplexity; None if nothing to score."""
    if fmt == "prompt":
        return None
    encoded = encode_rows(rows, fmt, tokenizer, chat_template=chat_template, train_on_prompt=False, max_len=max_seq_length)
    if not encoded.examples:
        return None
    loss = evaluate_loss(model, encoded.examples, batch_size, tokenizer.pad_token_id, device)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "loss_tokens": encoded.stats["trained_tokens"]}


def predict(
    model, tokenizer, data: EvalSet, settings: GenerationSettings, *, chat: bool, batch_size: int, on_batch=None
) -> list[str]:
    """Greedy (or beam) predictions for every prompt, batched with left padding."""
    return [
        p.strip() for p in generate(model, tokenizer, data.prompts, settings, chat=chat, batch_size=batch_size, on_batch=on_batch)
    ]


def read_predictions(path: str | Path, expected: int) -> list[str]:
    """A predictions file: JSONL with a "prediction" field, or plain text with one prediction per line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"--predictions {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"--predictions {path}: not UTF-8; re-save the file as UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    if lines and lines[0].lstrip().startswith("{"):
        predictions = []
        for n, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
                predictions.append(str(row["prediction"]))
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UsageError(f'--predictions {path}:{n}: expected a JSON object with a "prediction"') from None
    else:
        predictions = lines
    if len(predictions) != expected:
        raise UsageError(
            f"--predictions {path}: {len(predictions)} predictions for {expected} prompts in --data; "
            "give one prediction per unique prompt, in order"
        )
    return predictions


def write_predictions(path: str | Path, data: EvalSet, predictions: list[str]) -> None:
    from .atomic import write_text

    lines = [
        json.dumps({"prompt": p, "prediction": y, "references": r}, ensure_ascii=False)
        for p, y, r in zip(data.prompts, predictions, data.references)
    ]
    write_text(path, "\n".join(lines) + "\n")


def metrics_path(predictions_path: str | Path) -> Path:
    path = Path(predictions_path)
    return path.with_name(path.stem + ".metrics.json")


def load_eval_rows(path: str | Path) -> tuple[list[dict], str]:
    """``--data``: a JSONL file, or a folder (its test.jsonl, else valid.jsonl)."""
    path = Path(path)
    if path.is_dir():
        for name in ("test.jsonl", "valid.jsonl"):
            if (path / name).is_file():
                return read_rows(path / name)
        raise UsageError(f"--data {path}: the folder has no test.jsonl or valid.jsonl; pass a .jsonl file")
    if not path.is_file():
        raise UsageError(f"--data {path}: no such file or folder")
    return read_rows(path)
