"""An adapter file's header, read and checked without torch (``solo inspect`` stays instant).

A solo adapter is one safetensors file; its header metadata (every value a JSON string) says what
the adapter is: format, format_version, solo_version, connections, rank, gate, homotopy_steps,
source_norm (from version 2), base_model, base_revision, fingerprint, data_format, chat_template,
training. :func:`read_info` checks every field once, so nothing downstream meets a malformed value.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from safetensors import SafetensorError, safe_open

from .. import __version__
from ..data.rows import lone_surrogate
from ..errors import UsageError
from ..files.outputs import ADAPTER_FILENAME, ADAPTER_FORMAT
from .adapter_config import GATE_MODES, SOURCE_NORMS, AdapterConfig, max_rank
from .fingerprint import Fingerprint

FORMAT_NAME = ADAPTER_FORMAT
FORMAT_VERSION = 2  # 2 added source_norm; version 1 files (no field) were trained without one


@dataclass
class AdapterInfo:
    """Everything an adapter file says about itself, read from its header."""

    config: AdapterConfig
    fingerprint: Fingerprint
    base_model: str
    base_revision: str | None = None
    data_format: str | None = None
    chat_template: bool = False
    training: dict = field(default_factory=dict)
    solo_version: str = __version__
    format_version: int = FORMAT_VERSION

    def to_metadata(self) -> dict[str, str]:
        values = {
            "format": FORMAT_NAME,
            "format_version": self.format_version,
            "solo_version": self.solo_version,
            "connections": [list(c) for c in self.config.connections],
            "rank": self.config.rank,
            "gate": self.config.gate,
            "homotopy_steps": self.config.homotopy_steps,
            "source_norm": self.config.source_norm,
            "base_model": self.base_model,
            "base_revision": self.base_revision,
            "fingerprint": self.fingerprint.to_dict(),
            "data_format": self.data_format,
            "chat_template": self.chat_template,
            "training": self.training,
        }
        return {key: json.dumps(value, ensure_ascii=False) for key, value in values.items()}


def resolve_adapter_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    try:
        if path.is_dir():
            path = path / ADAPTER_FILENAME
        if path.exists() and not path.is_file():  # a FIFO would be read forever
            raise UsageError(f"adapter {path}: not a regular file (a FIFO, socket or device); pass an adapter.safetensors")
        with path.open("rb"):  # safetensors says "No such file or directory" for any file it cannot open
            pass
    except (FileNotFoundError, NotADirectoryError):
        raise UsageError(f"adapter {path}: no such file; pass the adapter.safetensors that `solo train` wrote") from None
    except OSError as exc:
        raise UsageError(f"adapter {path}: cannot read it ({exc.strerror or exc}); check its permissions") from None
    return path


# Header fields every file has; source_norm is absent from version 1 files (read as "none").
_REQUIRED = (
    "format_version",
    "solo_version",
    "connections",
    "rank",
    "gate",
    "homotopy_steps",
    "base_model",
    "base_revision",
    "fingerprint",
    "data_format",
    "chat_template",
    "training",
)
_FINGERPRINT_KEYS = ("model_type", "num_blocks", "hidden_size", "vocab_size")
_TRAINING_DEPTH = 8  # the training summary is printed; a few levels are all solo writes


def _show(value) -> str:
    """A header value as it may appear in a one-line message: JSON, ASCII only, at most 40 characters."""
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (RecursionError, ValueError):
        text = type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_text(value) -> bool:
    return isinstance(value, str) and lone_surrogate(value) is None


def _depth(value) -> int:
    """Nesting depth of a JSON value (iteratively, so any depth is measured safely)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if isinstance(item, dict):
            stack.extend((v, level + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, level + 1) for v in item)
    return deepest


def _parse_fields(meta: dict) -> tuple[dict, list[str]]:
    """Decode every JSON-valued header field; problems are collected, never raised one by one."""
    values, problems = {}, []
    for key in (*_REQUIRED, "source_norm"):
        if key not in meta:
            if key in _REQUIRED:
                problems.append(f"no {key!r}")
            continue
        try:
            values[key] = json.loads(meta[key])
        except json.JSONDecodeError as exc:
            problems.append(f"{key!r} is not valid JSON ({exc.msg})")
        except RecursionError:
            problems.append(f"{key!r} is nested too deeply")
        except ValueError:  # an integer literal past Python's digit limit
            problems.append(f"{key!r} holds a number too long to read")
    return values, problems


def _check_fingerprint(value, problems: list[str]) -> Fingerprint | None:
    if not isinstance(value, dict):
        problems.append(f"fingerprint {_show(value)} must be an object with {', '.join(_FINGERPRINT_KEYS)}")
        return None
    before = len(problems)
    missing = [k for k in _FINGERPRINT_KEYS if k not in value]
    unknown = sorted(str(k) for k in value if k not in _FINGERPRINT_KEYS)
    if missing:
        problems.append(f"fingerprint has no {', '.join(missing)}")
    if unknown:
        problems.append(f"fingerprint has unknown keys {_show(unknown)}")
    if "model_type" in value and not (_is_text(value["model_type"]) and value["model_type"]):
        problems.append(f"fingerprint model_type {_show(value['model_type'])} must be a non-empty UTF-8 string")
    for key in ("num_blocks", "hidden_size", "vocab_size"):
        if key in value and not (_is_int(value[key]) and value[key] >= 1):
            problems.append(f"fingerprint {key} {_show(value[key])} must be an integer >= 1")
    return Fingerprint(**value) if len(problems) == before else None


def _check_connections(value, fp: Fingerprint | None, problems: list[str]) -> list[tuple[int, int]] | None:
    if not isinstance(value, list) or not value:
        problems.append(f"connections {_show(value)} must be a non-empty list of [source, destination] pairs")
        return None
    bad, seen, connections = [], set(), []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and all(_is_int(x) for x in pair)):
            bad.append(f"{_show(pair)} is not a pair of integers")
            continue
        src, dst = pair
        if not -1 <= src < dst:
            bad.append(f"{_show(pair)} must go from a block (or -1, the embeddings) to a later block")
        elif fp is not None and dst >= fp.num_blocks:
            bad.append(f"{_show(pair)} is out of range for {fp.num_blocks} blocks")
        elif (src, dst) in seen:
            bad.append(f"{_show(pair)} is listed twice")
        seen.add((src, dst))
        connections.append((src, dst))
    if bad:
        more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
        problems.append(f"connections: {', '.join(bad[:3])}{more}")
        return None
    return connections


def _validate_header(values: dict, problems: list[str]) -> AdapterInfo | None:
    """Check every field's type and range, appending one phrase per problem; the info if none."""
    get = values.get
    fp = _check_fingerprint(get("fingerprint"), problems) if "fingerprint" in values else None
    connections = _check_connections(get("connections"), fp, problems) if "connections" in values else None
    if "rank" in values:
        rank = get("rank")
        top = max_rank(fp.hidden_size) if fp is not None else None
        if not (_is_int(rank) and rank >= 1 and (top is None or rank <= top)):
            limits = f"1..{top} (the hidden size)" if top is not None else ">= 1"
            problems.append(f"rank {_show(rank)} must be an integer in {limits}")
    if "gate" in values and (not isinstance(get("gate"), str) or get("gate") not in GATE_MODES):
        problems.append(f"gate {_show(get('gate'))} is not one of {', '.join(GATE_MODES)}")
    if "homotopy_steps" in values and not (_is_int(get("homotopy_steps")) and get("homotopy_steps") >= 0):
        problems.append(f"homotopy_steps {_show(get('homotopy_steps'))} must be an integer >= 0")
    source_norm = get("source_norm", "none")
    if not isinstance(source_norm, str) or source_norm not in SOURCE_NORMS:
        problems.append(f"source_norm {_show(source_norm)} is not one of {', '.join(SOURCE_NORMS)}")
    if "base_model" in values and not (_is_text(get("base_model")) and get("base_model").strip()):
        problems.append(f"base_model {_show(get('base_model'))} must be a non-empty UTF-8 string (the model it was trained on)")
    for key in ("base_revision", "data_format"):
        if key in values and get(key) is not None and not _is_text(get(key)):
            problems.append(f"{key} {_show(get(key))} must be a UTF-8 string or null")
    if "solo_version" in values and not _is_text(get("solo_version")):
        problems.append(f"solo_version {_show(get('solo_version'))} must be a UTF-8 string")
    if "chat_template" in values and not isinstance(get("chat_template"), bool):
        problems.append(f"chat_template {_show(get('chat_template'))} must be true or false")
    training = get("training")
    if training is not None and not isinstance(training, dict):
        problems.append(f"training {_show(training)} must be an object (the training summary) or null")
    elif training and (_depth(training) > _TRAINING_DEPTH or lone_surrogate(training) is not None):
        problems.append("training summary is nested too deeply or holds text that is not UTF-8")
    if problems:
        return None
    config = AdapterConfig(
        connections=connections,
        rank=get("rank"),
        gate=get("gate"),
        homotopy_steps=get("homotopy_steps"),
        hidden_size=fp.hidden_size,
        source_norm=source_norm,
    )
    return AdapterInfo(
        config=config,
        fingerprint=fp,
        base_model=get("base_model"),
        base_revision=get("base_revision"),
        data_format=get("data_format"),
        chat_template=get("chat_template"),
        training=training or {},
        solo_version=get("solo_version"),
        format_version=get("format_version"),
    )


def read_info(path: str | os.PathLike) -> AdapterInfo:
    """Read an adapter's header (no tensors) and check it is a solo adapter this version reads.

    The whole header is validated here, once: every field's type and range (rank in 1..hidden
    size, connections as pairs of block indices within the fingerprint's blocks, training an
    object or null, base_model a non-empty string, ...). Every problem found is reported in one
    :class:`UsageError` naming the file, so nothing downstream meets a malformed value.
    """
    path = resolve_adapter_path(path)
    try:
        with safe_open(str(path), framework="numpy") as handle:  # the header only: no torch
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"adapter {path}: not a readable safetensors file ({exc}); re-save or re-train it") from None
    if meta.get("format") != json.dumps(FORMAT_NAME):
        raise UsageError(
            f"adapter {path}: not a solo adapter (no 'format: {FORMAT_NAME}' in its header); "
            "solo reads only files written by `solo train` or `solo merge`"
        )
    values, problems = _parse_fields(meta)
    version = values.get("format_version")
    if _is_int(version) and version > FORMAT_VERSION:  # a newer format: its other fields may differ
        raise UsageError(
            f"adapter {path}: written in format version {version} by solo {_show(values.get('solo_version', '?'))}, "
            f"this solo reads up to version {FORMAT_VERSION}; upgrade solo (pip install -U solo-cli)"
        )
    if "format_version" in values and not (_is_int(version) and version >= 1):
        problems.append(f"format_version {_show(version)} must be an integer from 1 to {FORMAT_VERSION}")
    info = _validate_header(values, problems)
    if info is None:
        raise UsageError(
            f"adapter {path}: malformed header: {'; '.join(problems)}; the file is damaged "
            "or was not written by solo; re-train it or use an intact copy"
        )
    return info
