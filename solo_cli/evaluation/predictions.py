"""Predictions files: reading one to score (``solo eval --predictions``), and writing predictions and metrics.

Torch-free: scoring an existing file imports no model code.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..data.rows import parse_json_line
from ..errors import UsageError, param
from .eval_set import EvalSet

_JSON_KINDS = {type(None): "null", bool: "a boolean", int: "a number", float: "a number", dict: "an object", list: "an array"}


def read_predictions(path: str | Path, expected: int) -> list[str]:
    """A predictions file: JSONL with a "prediction" field, or plain text with one prediction per line."""
    path = Path(path)
    if path.is_dir() or (path.exists() and not path.is_file()):  # a FIFO would be read forever
        raise UsageError(
            f"{param('predictions')} {path}: not a regular file (a folder, FIFO or device); pass the predictions file"
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise UsageError(f"{param('predictions')} {path}: cannot read it ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise UsageError(f"{param('predictions')} {path}: not UTF-8; re-save the file as UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line.removesuffix("\r") for line in lines]
    if lines and lines[0].lstrip().startswith("{"):
        predictions = []
        for n, line in enumerate(lines, start=1):
            row = parse_json_line(line, f"--predictions {path}:{n}")  # also refuses huge, deep and surrogate JSON
            if not isinstance(row, dict) or "prediction" not in row:
                raise UsageError(f'{param("predictions")} {path}:{n}: expected a JSON object with a "prediction"')
            value = row["prediction"]
            if not isinstance(value, str):  # null, 5 or {} would be scored as the text "None", "5", "{}"
                kind = _JSON_KINDS.get(type(value), "not text")
                raise UsageError(
                    f'{param("predictions")} {path}:{n}: "prediction" is {kind}, not a string; write the predicted text as a JSON string'
                )
            predictions.append(value)
    else:
        predictions = lines
    if len(predictions) != expected:
        raise UsageError(
            f"{param('predictions')} {path}: {len(predictions)} predictions for {expected} prompts in {param('data')}; "
            "give one prediction per unique prompt, in order"
        )
    return predictions


def predictions_text(data: EvalSet, predictions: list[str]) -> str:
    lines = [
        json.dumps({"prompt": p, "prediction": y, "references": r}, ensure_ascii=False)
        for p, y, r in zip(data.prompts, predictions, data.references)
    ]
    return "\n".join(lines) + "\n"


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
