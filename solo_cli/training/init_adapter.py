"""``--init-adapter``: a run that starts from a trained adapter instead of a fresh one (SFT, then DPO from it).

The adapter keeps its shape (connections, rank, gate mode, source norm) and the run trains it on.
It starts as trained: each connection's gate t is folded into its B and stays 1 (no ramp), so the
model at the first step is the adapter's model exactly, which ``--objective dpo`` takes as its
reference. Refused in one line, before anything is trained: a file that is not a solo adapter, an
adapter trained on another architecture, or flags that ask for another shape than the adapter's.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import torch

from ..engine.adapter import AdapterConfig, SoloAdapter
from ..engine.adapter_file import AdapterInfo, load_adapter, read_info, resolve_adapter_path
from ..engine.fingerprint import ArchFingerprint
from ..engine.topology import format_connections, parse_connections
from ..errors import UsageError, param
from .config import TrainConfig

_SHAPE = ("connections", "rank", "gate", "source_norm")  # what an adapter's file decides, not the flags


def init_info(cfg: TrainConfig) -> tuple[Path, AdapterInfo]:
    """The ``--init-adapter`` file and its header (torch-free; read before the model loads)."""
    try:
        path = resolve_adapter_path(cfg.init_adapter)
        return path, read_info(path)
    except UsageError as exc:  # "adapter PATH: ..." of the adapter reader, said of the flag that named it
        text = exc.text
        shown = text[len("adapter") :] if text.startswith("adapter ") else f" {cfg.init_adapter}: {text}"
        raise UsageError(param("init_adapter") + shown) from None


def init_sha256(path: Path) -> str:
    """The adapter file's sha256: what a resume compares, and what names the reference computed from it."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _shape_differences(cfg: TrainConfig, info: AdapterInfo, fp: ArchFingerprint) -> list[str]:
    """Flags given (not at their defaults) that ask for another shape than the adapter's."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    found = []
    for name in _SHAPE:
        given, has = getattr(cfg, name), getattr(info.config, name)
        if given == defaults[name]:
            continue
        if name == "connections":
            given, has = format_connections(parse_connections(given, fp.num_blocks)), format_connections(has)
        if given != has:
            found.append(f"{param(name)} {given} (the adapter's: {has})")
    return found


def starting_adapter(cfg: TrainConfig, fp: ArchFingerprint) -> SoloAdapter:
    """The adapter ``--init-adapter`` names, checked against the base (``fp``) and the flags, its gates folded into B."""
    path, info = init_info(cfg)
    flag = f"{param('init_adapter')} {cfg.init_adapter}"
    if info.fingerprint != fp:
        raise UsageError(
            f"{flag}: trained on {info.base_model} ({info.fingerprint.describe()}), but {param('model')} {cfg.model} is "
            f"{fp.describe()}; pass the base it was trained on with {param('model')}"
        )
    differences = _shape_differences(cfg, info, fp)
    if differences:
        raise UsageError(
            f"{flag}: a run trains the adapter it starts from, in its own shape; {', '.join(differences)}: drop those flags"
        )
    return folded(load_adapter(path)[0])


@torch.no_grad()
def folded(adapter: SoloAdapter) -> SoloAdapter:
    """A copy of a trained ``adapter`` whose every gate t is folded into B (B t, then t = 1, no ramp): the same model,
    trainable on from its first step. A learned gate (solo 0.1) becomes a scheduled one that stays at 1."""
    gate = "schedule" if adapter.config.gate == "learned" else adapter.config.gate
    config = dataclasses.replace(adapter.config, gate=gate, homotopy_steps=1)
    with torch.random.fork_rng(devices=[]):  # building the copy draws an init that is then overwritten
        copy = SoloAdapter(config)
    for key, conn in adapter.connections.items():
        target = copy.connections[key]
        target.A.copy_(conn.A)
        target.B.copy_(conn.B * conn.gate_value())
        if target.gate is not None:
            target.set_gate(1.0)
    return copy


def run_adapter(cfg: TrainConfig, fp: ArchFingerprint, connections: list, steps: int) -> SoloAdapter:
    """The adapter a run trains: ``--init-adapter``'s (:func:`starting_adapter`), else a fresh one in the flags' shape
    with the ramp of ``steps``. A fresh ``--objective dpo`` adapter starts with B = 0, so that its first step's
    model is the base exactly: DPO's reference (the ramp then only eases the gate in)."""
    if cfg.init_adapter:
        return starting_adapter(cfg, fp)
    config = AdapterConfig(connections, cfg.rank, cfg.gate, cfg.ramp_steps(steps), fp.hidden_size, source_norm=cfg.source_norm)
    adapter = SoloAdapter(config)
    if cfg.objective == "dpo":
        with torch.no_grad():
            for conn in adapter.connections.values():
                conn.B.zero_()
    return adapter
