"""The adapter file: one safetensors file whose header metadata describes the adapter.

Tensors: ``connections.<src>_<dst>.A`` (r x d), ``.B`` (d x r) and ``.gate`` (a scalar, in the
gated modes). Metadata (every value a JSON string): format, format_version, solo_version,
connections, rank, gate, homotopy_steps, source_norm (from version 2), base_model, base_revision, fingerprint, data_format,
chat_template, training.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from . import __version__
from .adapter import GATE_MODES, SOURCE_NORMS, AdapterConfig, SoloAdapter
from .atomic import write_atomic
from .blocks import Fingerprint
from .errors import UsageError

FORMAT_NAME = "solo-adapter"
FORMAT_VERSION = 2  # 2 added source_norm; version 1 files (no field) were trained without one
ADAPTER_FILENAME = "adapter.safetensors"


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


def save_adapter(path: str | os.PathLike, adapter: SoloAdapter, info: AdapterInfo) -> Path:
    """Write ``adapter`` to ``path`` (a file, or a folder that gets ``adapter.safetensors``) atomically."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path / ADAPTER_FILENAME
    tensors = {key: value.detach().to("cpu", torch.float32).contiguous() for key, value in adapter.state_dict().items()}
    write_atomic(path, lambda tmp: save_file(tensors, str(tmp), metadata=info.to_metadata()))
    return path


def resolve_adapter_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / ADAPTER_FILENAME
    if not path.is_file():
        raise UsageError(f"adapter {path}: no such file; pass the adapter.safetensors that `solo train` wrote")
    return path


def _field(meta: dict, key: str, path: Path):
    if key not in meta:
        raise UsageError(f"adapter {path}: header has no {key!r}; the file is damaged or not a solo adapter")
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError as exc:
        raise UsageError(f"adapter {path}: header field {key!r} is not valid JSON ({exc.msg}); the file is damaged") from None


def read_info(path: str | os.PathLike) -> AdapterInfo:
    """Read an adapter's header (no tensors) and check it is a solo adapter this version reads."""
    path = resolve_adapter_path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"adapter {path}: not a readable safetensors file ({exc}); re-save or re-train it") from None
    if meta.get("format") != json.dumps(FORMAT_NAME):
        raise UsageError(
            f"adapter {path}: not a solo adapter (no 'format: {FORMAT_NAME}' in its header); "
            "solo reads only files written by `solo train` or `solo merge`"
        )
    version = _field(meta, "format_version", path)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise UsageError(
            f"adapter {path}: written in format version {version} by solo {meta.get('solo_version', '?')}, "
            f"this solo reads up to version {FORMAT_VERSION}; upgrade solo (pip install -U solo-cli)"
        )
    try:
        connections = [tuple(int(x) for x in c) for c in _field(meta, "connections", path)]
        fp = Fingerprint(**_field(meta, "fingerprint", path))
        gate = _field(meta, "gate", path)
        if gate not in GATE_MODES:
            raise ValueError(f"unknown gate {gate!r}")
        config = AdapterConfig(
            connections=connections,
            rank=int(_field(meta, "rank", path)),
            gate=gate,
            homotopy_steps=int(_field(meta, "homotopy_steps", path)),
            hidden_size=fp.hidden_size,
            source_norm=_field(meta, "source_norm", path) if "source_norm" in meta else "none",
        )
        if config.source_norm not in SOURCE_NORMS:
            raise ValueError(f"unknown source_norm {config.source_norm!r}")
    except (TypeError, ValueError) as exc:
        raise UsageError(f"adapter {path}: malformed header ({exc}); the file is damaged") from None
    return AdapterInfo(
        config=config,
        fingerprint=fp,
        base_model=_field(meta, "base_model", path),
        base_revision=_field(meta, "base_revision", path),
        data_format=_field(meta, "data_format", path),
        chat_template=bool(_field(meta, "chat_template", path)),
        training=_field(meta, "training", path) or {},
        solo_version=_field(meta, "solo_version", path),
        format_version=version,
    )


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = resolve_adapter_path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise UsageError(f"adapter {path}: tensors cannot be read ({exc}); the file is damaged") from None


def load_adapter(path: str | os.PathLike) -> tuple[SoloAdapter, AdapterInfo]:
    """Build a :class:`SoloAdapter` from a file, checking every tensor's name and shape."""
    info = read_info(path)
    adapter = SoloAdapter(info.config)
    tensors = read_tensors(path)
    expected = adapter.state_dict()
    problems = [f"missing {k}" for k in expected if k not in tensors]
    problems += [f"unexpected {k}" for k in tensors if k not in expected]
    problems += [
        f"{k} has shape {tuple(tensors[k].shape)}, expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in tensors and tensors[k].shape != v.shape
    ]
    if problems:
        raise UsageError(f"adapter {resolve_adapter_path(path)}: tensors do not match its header: {'; '.join(problems)}")
    adapter.load_state_dict(tensors)
    return adapter, info
