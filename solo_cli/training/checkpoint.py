"""Training checkpoints: everything needed to resume a run exactly, with no pickles.

``checkpoints/step-N/`` holds ``adapter.safetensors`` (a normal adapter file),
``optimizer.safetensors`` (AdamW's moment tensors and the CPU and CUDA RNG states) and
``trainer_state.json`` (step, position in the data order, best validation loss, the scheduler's,
optimizer's and float16 grad scaler's scalar state). The folder is written under a temporary name and renamed, so a
crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..engine.adapter import SoloAdapter
from ..engine.adapter_file import ADAPTER_FILENAME, AdapterInfo, load_adapter, non_finite, save_adapter
from ..engine.blocks import Fingerprint
from ..engine.topology import format_connections
from ..errors import RuntimeFailure, UsageError, param
from ..files.atomic import ASIDE_SUFFIX, atomic_dir, write_error
from .run_folder import RunFolder
from .trainer import Trainer, TrainState

STATE_FILE = "trainer_state.json"
OPTIMIZER_FILE = "optimizer.safetensors"
_STEP_DIR = re.compile(r"^step-(\d+)$")


def rng_state() -> dict[str, torch.Tensor]:
    """Every generator a resumed run draws from: the CPU's and each CUDA device's (dropout on a GPU)."""
    state = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state |= {f"rng.cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())}
    return state


def set_rng_state(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def _param_names(adapter: SoloAdapter) -> dict[int, str]:
    return {id(p): name for name, p in adapter.named_parameters()}


def save_checkpoint(folder: Path, trainer: Trainer, state: TrainState, info: AdapterInfo) -> Path:
    """Write a resumable checkpoint of ``trainer`` at ``state`` into ``folder`` atomically.

    A NaN or infinite value in the adapter or the optimizer state is refused (:class:`RuntimeFailure`,
    naming the tensor) before anything is written: a checkpoint is always one a run can resume from.
    """
    names = _param_names(trainer.adapter)
    tensors, scalars = {}, {}
    index_to_name = {}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            index_to_name[len(index_to_name)] = names[id(p)]
    for p, slots in trainer.optimizer.state.items():
        name = names[id(p)]
        for slot, value in slots.items():
            if torch.is_tensor(value) and value.ndim > 0:
                tensors[f"{name}.{slot}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{name}.{slot}"] = float(value)
    bad = non_finite(dict(trainer.adapter.state_dict()) | tensors) + [k for k, v in scalars.items() if not math.isfinite(v)]
    if bad:
        raise RuntimeFailure(
            f"not writing checkpoint {folder}: tensor {bad[0]} holds NaN or infinite values; nothing was written "
            f"(the training diverged: lower {param('lr')} or add {param('warmup')})"
        )
    tensors |= rng_state()
    try:
        with atomic_dir(folder) as staging:
            save_adapter(staging / ADAPTER_FILENAME, trainer.adapter, info)
            save_file(tensors, str(staging / OPTIMIZER_FILE))
            groups = [{k: v for k, v in g.items() if k != "params"} for g in trainer.optimizer.param_groups]
            payload = {
                "step": state.step,
                "micro_batches": state.micro_batches,
                "best_valid_loss": state.best_valid_loss,
                "last_loss": state.last_loss,
                "tokens": state.tokens,
                "scheduler": {k: v for k, v in trainer.scheduler.state_dict().items() if k != "lr_lambdas"},
                "optimizer_groups": groups,
                "optimizer_scalars": scalars,
                "param_order": [index_to_name[i] for i in range(len(index_to_name))],
                "grad_scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
            }
            (staging / STATE_FILE).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    except OSError as exc:  # a full disk: the staging folder is removed, an older checkpoint kept
        raise write_error(exc, folder) from None
    return Path(folder)


def list_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    root = RunFolder(run_dir).checkpoints
    found = []
    if root.is_dir():
        for child in root.iterdir():
            match = _STEP_DIR.match(child.name)
            if match and (child / STATE_FILE).is_file():
                found.append((int(match.group(1)), child))
    return sorted(found)


_STAGING_DIR = re.compile(r"^\.(step-\d+)\.[a-z0-9_]{8}(\.tmp|\.old)?$")  # atomic_dir's hidden names


def clean_staging(run_dir: Path) -> None:
    """Tidy ``checkpoints/`` after a run that was killed while saving (call it holding the run's lock).

    A previous copy moved aside by a swap that never finished (``.step-N.XXXXXXXX.old`` with no
    ``step-N``) is put back; every other hidden staging folder of solo's is deleted. Nothing whose
    name is not solo's own staging pattern is touched.
    """
    root = RunFolder(run_dir).checkpoints
    if not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        match = _STAGING_DIR.match(child.name)
        if not match or not child.is_dir() or child.is_symlink():
            continue
        final = root / match.group(1)
        if match.group(2) == ASIDE_SUFFIX and not final.exists() and (child / STATE_FILE).is_file():
            child.rename(final)
        else:
            shutil.rmtree(child, ignore_errors=True)


def prune_checkpoints(run_dir: Path, keep: int | None) -> None:
    """Keep only the newest ``keep`` checkpoints (None or 0: keep all)."""
    if not keep:
        return
    for _, path in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def find_checkpoint(run_dir: Path, resume: str) -> Path:
    """``--resume auto``: the newest checkpoint of the run; ``--resume PATH``: that checkpoint folder."""
    resume_flag = param("resume")
    if resume == "auto":
        found = list_checkpoints(run_dir)
        if not found:
            if RunFolder(run_dir).config.is_file():  # a run that stopped before its first save
                raise UsageError(
                    f"{resume_flag} auto: {run_dir} has no checkpoint to resume from yet (the run stopped before its "
                    f"first save); start it over with the same command and {param('overwrite')} instead of {resume_flag} auto"
                )
            raise UsageError(f"{resume_flag} auto: {run_dir} has no checkpoint to resume from; train without {resume_flag}")
        return found[-1][1]
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise UsageError(f"{resume_flag} {path}: not a checkpoint folder (no {STATE_FILE}); pass checkpoints/step-N or auto")
    return path


def _read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """trainer_state.json and optimizer.safetensors of a checkpoint."""
    try:
        payload = json.loads((folder / STATE_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(folder / OPTIMIZER_FILE))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, SafetensorError) as exc:
        raise UsageError(f"{param('resume')} {folder}: the checkpoint is damaged ({exc}); resume from an earlier one") from None
    return payload, tensors


def _check_adapter(
    folder: Path, saved: SoloAdapter, info: AdapterInfo, adapter: SoloAdapter, fingerprint: Fingerprint | None
) -> None:
    """Refuse a checkpoint whose base model or adapter shape is not this run's, listing every difference."""
    if fingerprint is not None and info.fingerprint != fingerprint:
        raise UsageError(
            f"{param('resume')} {folder}: the checkpoint was trained on {info.base_model} ({info.fingerprint.describe()}) "
            f"but {param('model')} is {fingerprint.describe()}; resume with the run's {param('model')}"
        )
    old, new = saved.config, adapter.config
    differences = [
        f"{param(name)} {a} -> {b}"
        for name, a, b in (
            ("connections", format_connections(old.connections), format_connections(new.connections)),
            ("rank", old.rank, new.rank),
            ("gate", old.gate, new.gate),
            ("source_norm", old.source_norm, new.source_norm),
            ("homotopy_steps", old.homotopy_steps, new.homotopy_steps),
        )
        if a != b
    ]
    if differences:
        raise UsageError(
            f"{param('resume')} {folder}: the checkpoint's adapter differs from this run's flags: {', '.join(differences)}; "
            "resume with the run's flags (those it was started with)"
        )


def _restore_optimizer(trainer: Trainer, payload: dict, tensors: dict[str, torch.Tensor]) -> None:
    """AdamW's per-parameter state (matched by parameter name), its groups, and the schedule's counters."""
    params = dict(trainer.adapter.named_parameters())
    state = {}
    for index, name in enumerate(payload["param_order"]):
        slots = {k.rsplit(".", 1)[1]: v for k, v in tensors.items() if k.rsplit(".", 1)[0] == name}
        slots |= {
            k.rsplit(".", 1)[1]: torch.tensor(v) for k, v in payload["optimizer_scalars"].items() if k.rsplit(".", 1)[0] == name
        }
        if slots:
            state[index] = {k: v.to(params[name].device) if k != "step" else v for k, v in slots.items()}
    groups, start = [], 0
    for group, saved_group in zip(trainer.optimizer.param_groups, payload["optimizer_groups"]):
        groups.append(saved_group | {"params": list(range(start, start + len(group["params"])))})
        start += len(group["params"])
    trainer.optimizer.load_state_dict({"state": state, "param_groups": groups})
    # lr_lambdas are code (closures), rebuilt by make_optimizer; only the counters are restored.
    trainer.scheduler.load_state_dict(payload["scheduler"] | {"lr_lambdas": [None] * len(trainer.optimizer.param_groups)})


def load_checkpoint(folder: Path, trainer: Trainer, fingerprint: Fingerprint | None = None) -> TrainState:
    """Restore adapter, optimizer, scheduler and RNG from ``folder``; return the state to continue from.

    The checkpoint's adapter must have been trained on a base of ``fingerprint`` (when given) with
    this run's connections, rank, gate, source norm and homotopy steps; otherwise one line lists
    the differences and nothing is changed.
    """
    folder = Path(folder)
    payload, tensors = _read(folder)
    saved, info = load_adapter(folder / ADAPTER_FILENAME)
    _check_adapter(folder, saved, info, trainer.adapter, fingerprint)
    with torch.no_grad():
        for name, value in saved.state_dict().items():
            trainer.adapter.state_dict()[name].copy_(value)
    _restore_optimizer(trainer, payload, tensors)
    set_rng_state(tensors)
    if payload.get("grad_scaler") and trainer.scaler.is_enabled():
        trainer.scaler.load_state_dict(payload["grad_scaler"])
    return TrainState(
        step=payload["step"],
        micro_batches=payload["micro_batches"],
        best_valid_loss=payload["best_valid_loss"],
        last_loss=payload["last_loss"],
        tokens=payload["tokens"],
    )
