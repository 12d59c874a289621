"""Training checkpoints: everything needed to resume a run exactly, with no pickles.

``checkpoints/step-N/`` holds ``adapter.safetensors`` (a normal adapter file),
``optimizer.safetensors`` (AdamW's moment tensors and the CPU and CUDA RNG states) and
``trainer_state.json`` (step, position in the data order, best validation loss, seconds trained, the scheduler's,
optimizer's and float16 grad scaler's scalar state, and ``config``: the run's resolved settings,
shape and base as its config.json has them, so that a checkpoint alone says which run it
continues). The folder is written under a temporary name and renamed, so a crash never leaves a
half-written checkpoint. A damaged ``trainer_state.json`` is refused naming the file.

The data position is counted in optimizer steps (``data_steps``, always ``step``). Checkpoints
from before solo counted micro-batches (``micro_batches``) are converted where the two orders
provably agree (:func:`_legacy_position`) and refused otherwise.
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
from ..engine.fingerprint import ArchFingerprint
from ..engine.topology import format_connections
from ..errors import RuntimeFailure, UsageError, param
from ..files.atomic import ASIDE_SUFFIX, atomic_dir, write_error
from .run_folder import RunFolder
from .shape import RunShape
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


def save_checkpoint(folder: Path, trainer: Trainer, state: TrainState, info: AdapterInfo, config: dict | None = None) -> Path:
    """Write a resumable checkpoint of ``trainer`` at ``state`` into ``folder`` atomically.

    ``config`` is the run's resolved config (what config.json holds), recorded in the checkpoint
    so that a resume compares against it even when config.json is gone.

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
                "data_steps": state.step,  # the position in the data order, in optimizer steps
                "best_valid_loss": state.best_valid_loss,
                "last_loss": state.last_loss,
                "tokens": state.tokens,
                "elapsed": state.elapsed,  # so that a resumed run's time counts the whole run
                "scheduler": {k: v for k, v in trainer.scheduler.state_dict().items() if k != "lr_lambdas"},
                "optimizer_groups": groups,
                "optimizer_scalars": scalars,
                "param_order": [index_to_name[i] for i in range(len(index_to_name))],
                "grad_scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
                "config": config,
            }
            (staging / STATE_FILE).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    except (OSError, SafetensorError) as exc:  # a full disk (safetensors says "os error 28"): staging removed, older kept
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
    """``--resume auto``: the newest checkpoint of the run; ``--resume PATH``: that checkpoint folder.

    Its ``trainer_state.json`` is read and checked here, so a damaged one is refused (naming it)
    before anything is loaded or written.
    """
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
        path = found[-1][1]
    else:
        path = Path(resume)
        if not (path / STATE_FILE).is_file():
            raise UsageError(f"{resume_flag} {path}: not a checkpoint folder (no {STATE_FILE}); pass checkpoints/step-N or auto")
    read_state(path, resume)
    return path


_NUMBER = (int, float)
# trainer_state.json: each key, the types its value may have, and whether it may be missing (older checkpoints)
_STATE_KEYS = {
    "step": ((int,), False),
    "data_steps": ((int,), True),
    "micro_batches": ((int,), True),
    "best_valid_loss": ((*_NUMBER, type(None)), False),
    "last_loss": ((*_NUMBER, type(None)), False),
    "tokens": ((int,), False),
    "elapsed": (_NUMBER, True),
    "scheduler": ((dict,), False),
    "optimizer_groups": ((list,), False),
    "optimizer_scalars": ((dict,), False),
    "param_order": ((list,), False),
    "grad_scaler": ((dict, type(None)), True),
    "config": ((dict, type(None)), True),
}


def _state_problems(payload) -> list[str]:
    if not isinstance(payload, dict):
        return [f"holds {type(payload).__name__}, not an object"]
    problems = []
    for key, (types, optional) in _STATE_KEYS.items():
        if key not in payload:
            if not optional:
                problems.append(f"has no {key}")
        elif isinstance(payload[key], bool) or not isinstance(payload[key], types):
            problems.append(f"{key} is {type(payload[key]).__name__}")
    if not problems and ("data_steps" not in payload) == ("micro_batches" not in payload):
        problems.append("has neither data_steps nor micro_batches" if "data_steps" not in payload else "has both positions")
    if not problems and (payload["step"] < 0 or not all(isinstance(n, str) for n in payload["param_order"])):
        problems.append("holds a negative step or a parameter name that is not a string")
    if not problems and not 0 <= payload.get("elapsed", 0) < math.inf:
        problems.append("elapsed is not a number of seconds")
    return problems


def read_state(folder: Path, resume: str | None = None) -> dict:
    """A checkpoint's trainer_state.json, checked; a damaged one is refused in one line naming it."""
    path = Path(folder) / STATE_FILE
    how = f"{param('resume')} {resume or folder}"
    advice = "delete that checkpoint folder to resume from an earlier one, or start over with --overwrite"
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not JSON"
        raise UsageError(f"{how}: {path} is damaged ({reason}); {advice}") from None
    problems = _state_problems(payload)
    if problems:
        raise UsageError(f"{how}: {path} is damaged ({'; '.join(problems)}); {advice}")
    return payload


def _read(folder: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """trainer_state.json and optimizer.safetensors of a checkpoint."""
    payload = read_state(folder)
    try:
        tensors = load_file(str(folder / OPTIMIZER_FILE))
    except (OSError, SafetensorError) as exc:
        raise UsageError(
            f"{param('resume')} {folder}: {folder / OPTIMIZER_FILE} is damaged ({exc}); resume from an earlier checkpoint"
        ) from None
    return payload, tensors


def _check_adapter(
    folder: Path, saved: SoloAdapter, info: AdapterInfo, adapter: SoloAdapter, arch: ArchFingerprint | None
) -> None:
    """Refuse a checkpoint whose base model or adapter shape is not this run's, listing every difference."""
    if arch is not None and info.fingerprint != arch:
        raise UsageError(
            f"{param('resume')} {folder}: the checkpoint was trained on {info.base_model} ({info.fingerprint.describe()}) "
            f"but {param('model')} is {arch.describe()}; resume with the run's {param('model')}"
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


def _legacy_position(folder: Path, payload: dict, shape: RunShape | None) -> None:
    """Accept a checkpoint that counted micro-batches only where its data order is the one steps give.

    Before, a step took the next ``grad_accum`` micro-batches of an endless stream, so a step could
    borrow from the next epoch. The two orders agree for every step so far when a step is one
    micro-batch, when an epoch's micro-batches divide into whole steps, or when no step yet
    reached an epoch's end.
    """
    step, micro = payload["step"], payload["micro_batches"]
    if shape is None:
        return
    accum = shape.grad_accum
    per_epoch = -(-shape.examples // (shape.batch_size * shape.world_size))  # micro-batches an epoch, as counted then
    if micro == step * accum and (accum == 1 or per_epoch % accum == 0 or step <= per_epoch // accum):
        return
    raise UsageError(
        f"{param('resume')} {folder}: the checkpoint is from a solo that let {param('grad_accum')} steps run past an "
        f"epoch's end, and its data order differs from this one's after step {per_epoch // accum}; start the run over "
        f"with {param('overwrite')}"
    )


def load_checkpoint(
    folder: Path, trainer: Trainer, arch: ArchFingerprint | None = None, shape: RunShape | None = None
) -> TrainState:
    """Restore adapter, optimizer, scheduler and RNG from ``folder``; return the state to continue from.

    The checkpoint's adapter must have been trained on a base of architecture ``arch`` (when given) with
    this run's connections, rank, gate, source norm and homotopy steps; otherwise one line lists
    the differences and nothing is changed. ``shape`` (this run's) decides whether a checkpoint
    that counted micro-batches can continue (:func:`_legacy_position`).
    """
    folder = Path(folder)
    payload, tensors = _read(folder)
    if "data_steps" in payload and payload["data_steps"] != payload["step"]:
        raise UsageError(f"{param('resume')} {folder}: {folder / STATE_FILE} is damaged (data_steps is not step)")
    if "micro_batches" in payload:
        _legacy_position(folder, payload, shape)
    saved, info = load_adapter(folder / ADAPTER_FILENAME)
    _check_adapter(folder, saved, info, trainer.adapter, arch)
    with torch.no_grad():
        for name, value in saved.state_dict().items():
            trainer.adapter.state_dict()[name].copy_(value)
    _restore_optimizer(trainer, payload, tensors)
    set_rng_state(tensors)
    if payload.get("grad_scaler") and trainer.scaler.is_enabled():
        trainer.scaler.load_state_dict(payload["grad_scaler"])
    return TrainState(
        step=payload["step"],
        best_valid_loss=payload["best_valid_loss"],
        last_loss=payload["last_loss"],
        tokens=payload["tokens"],
        elapsed=float(payload.get("elapsed", 0.0)),
    )
