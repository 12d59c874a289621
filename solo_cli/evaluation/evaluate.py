"""`solo eval`: loss and perplexity on completion tokens, and generation scored with the E2E metrics."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..data.encode import context_length, encode_rows
from ..data.rows import parse_json_line, read_numbered_rows
from ..engine.loss import evaluate_loss
from ..errors import UsageError
from ..inference.generation import GenerationSettings, generate


@dataclass
class EvalSet:
    """Rows grouped for generation: one prompt per unique input, with every reference it has."""

    prompts: list  # str, or a list of chat messages
    references: list[list[str]]
    rows: list[dict] = field(default_factory=list)
    fmt: str = "completion"
    where: list[str] = field(default_factory=list)  # each prompt's first row, "file:line", for error messages


def _prompt_key(prompt) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def eval_set(rows: list[dict], fmt: str, where: list[str] | None = None) -> EvalSet:
    """Group rows by prompt (E2E has one row per reference) into prompts with reference lists.

    ``where`` names each row (``file:line``); a prompt is named after its first row.
    """
    if fmt == "text":
        raise UsageError("text rows have no prompt to generate from; use prompt/completion, prompt/references or chat rows")
    where = where if where is not None else [f"row {n}" for n in range(1, len(rows) + 1)]
    grouped: dict[str, tuple] = {}
    first: dict[str, str] = {}
    for row, label in zip(rows, where):
        if fmt == "chat":
            messages = row["messages"]
            prompt, refs = messages[:-1], [messages[-1]["content"]] if messages[-1]["role"] == "assistant" else []
        else:
            prompt = row["prompt"]
            refs = list(row.get("references") or []) + ([row["completion"]] if "completion" in row else [])
        key = _prompt_key(prompt)
        entry = grouped.setdefault(key, (prompt, []))
        first.setdefault(key, label)
        entry[1].extend(refs)
    prompts = [p for p, _ in grouped.values()]
    references = [r for _, r in grouped.values()]
    missing = [n for n, r in enumerate(references) if not r]
    if missing:
        raise UsageError(
            f"{len(missing)} prompts have no reference to score against (first: prompt #{missing[0] + 1}); "
            'add "references" or a "completion"'
        )
    return EvalSet(prompts, references, rows, fmt, list(first.values()))


def check_max_seq_length(max_seq_length: int) -> None:
    if max_seq_length < 1:
        raise UsageError(f"--max-seq-length {max_seq_length}: must be at least 1 (tokens per example for the loss)")


def loss_and_perplexity(
    model, tokenizer, rows: list[dict], fmt: str, *, chat_template: bool | None, max_seq_length: int, batch_size: int, device
) -> dict | None:
    """Token-weighted loss on the trained tokens (as in training) and its perplexity; None if nothing to score.

    Examples are cut to ``min(max_seq_length, the model's context)`` tokens, as in training.
    """
    check_max_seq_length(max_seq_length)
    if fmt == "prompt":
        return None
    encoded = encode_rows(
        rows,
        fmt,
        tokenizer,
        chat_template=chat_template,
        train_on_prompt=False,
        max_len=max_seq_length,
        context=context_length(model),
    )
    if not encoded.examples:
        return None
    loss = evaluate_loss(model, encoded.examples, batch_size, tokenizer.pad_token_id, device)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "loss_tokens": encoded.stats["trained_tokens"]}


def predict(
    model, tokenizer, data: EvalSet, settings: GenerationSettings, *, chat: bool, batch_size: int, on_batch=None
) -> list[str]:
    """Greedy (or beam) predictions for every prompt, batched with left padding.

    A prompt that does not fit the model's context with ``--max-new-tokens`` is refused before
    anything is generated, named by its row (see :func:`solo_cli.generation.check_context`).
    """
    where = data.where[: len(data.prompts)] if len(data.where) >= len(data.prompts) else None
    outputs = generate(model, tokenizer, data.prompts, settings, chat=chat, batch_size=batch_size, on_batch=on_batch, where=where)
    return [p.strip() for p in outputs]


_JSON_KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", dict: "an object", list: "an array"}


def read_predictions(path: str | Path, expected: int) -> list[str]:
    """A predictions file: JSONL with a "prediction" field, or plain text with one prediction per line."""
    path = Path(path)
    if path.is_dir() or (path.exists() and not path.is_file()):  # a FIFO would be read forever
        raise UsageError(f"--predictions {path}: not a regular file (a folder, FIFO or device); pass the predictions file")
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
            row = parse_json_line(line, f"--predictions {path}:{n}")  # also refuses huge, deep and surrogate JSON
            if not isinstance(row, dict) or "prediction" not in row:
                raise UsageError(f'--predictions {path}:{n}: expected a JSON object with a "prediction"')
            value = row["prediction"]
            if not isinstance(value, str):  # null, 5 or {} would be scored as the text "None", "5", "{}"
                kind = _JSON_KINDS.get(type(value), "not text")
                raise UsageError(
                    f'--predictions {path}:{n}: "prediction" is {kind}, not a string; write the predicted text as a JSON string'
                )
            predictions.append(value)
    else:
        predictions = lines
    if len(predictions) != expected:
        raise UsageError(
            f"--predictions {path}: {len(predictions)} predictions for {expected} prompts in --data; "
            "give one prediction per unique prompt, in order"
        )
    return predictions


def predictions_text(data: EvalSet, predictions: list[str]) -> str:
    lines = [
        json.dumps({"prompt": p, "prediction": y, "references": r}, ensure_ascii=False)
        for p, y, r in zip(data.prompts, predictions, data.references)
    ]
    return "\n".join(lines) + "\n"


def write_predictions(path: str | Path, data: EvalSet, predictions: list[str]) -> None:
    from ..files.atomic import write_text

    write_text(path, predictions_text(data, predictions))


def write_outputs(path: str | Path, data: EvalSet, predictions: list[str], metrics: dict) -> None:
    """Write the predictions and, beside them, the metrics: both or neither (old files stay on failure).

    A full disk or another write error is one line (:class:`RuntimeFailure`) naming the file.
    """
    from ..files.atomic import is_stream, write_texts

    files = {Path(path): predictions_text(data, predictions)}
    if not is_stream(path):  # /dev/null or a FIFO has no folder to put the metrics beside
        files[metrics_path(path)] = json.dumps(metrics, indent=2, ensure_ascii=False) + "\n"
    write_texts(files, flag="--output")


def metrics_path(predictions_path: str | Path) -> Path:
    path = Path(predictions_path)
    return path.with_name(path.stem + ".metrics.json")


def load_eval_rows(path: str | Path) -> tuple[list[dict], str]:
    """``--data``: a JSONL file, or a folder (its test.jsonl, else valid.jsonl)."""
    rows, fmt, _ = load_numbered_eval_rows(path)
    return rows, fmt


def load_numbered_eval_rows(path: str | Path) -> tuple[list[dict], str, list[str]]:
    """:func:`load_eval_rows`, plus where each row is (``file:line``), for error messages."""
    path = Path(path)
    if path.is_dir():
        for name in ("test.jsonl", "valid.jsonl"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise UsageError(f"--data {path}: the folder has no test.jsonl or valid.jsonl; pass a .jsonl file")
    elif path.exists() and not path.is_file():  # a FIFO would be read forever
        raise UsageError(f"--data {path}: not a regular file (a FIFO, socket or device); pass a .jsonl file or a folder")
    elif not path.is_file():
        raise UsageError(f"--data {path}: no such file or folder")
    rows, fmt, linenos = read_numbered_rows(path)
    return rows, fmt, [f"{path}:{n}" for n in linenos]
