"""Whether a run may be resumed with the settings given: those of the run it continues, and its data."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from ..data.rows import resolve_data
from ..errors import UsageError, param
from .config import TrainConfig
from .run_folder import RunFolder

# Flags that may differ when a run is resumed: they change what is logged, kept or where it runs,
# never the arithmetic of the run (every other TrainConfig field must be the run's).
RESUME_MAY_CHANGE = frozenset(
    {
        "output",
        "resume",
        "overwrite",
        "eval_every",
        "save_every",
        "keep_checkpoints",
        "log_every",
        "device",
        "grad_checkpoint",
        "trust_remote_code",
    }
)


_COMPARED_RESOLVED = ("connections", "homotopy_steps")  # compared once resolved on the model, by load_checkpoint


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_fingerprint(data: str) -> dict[str, str | None]:
    """sha256 of the training (and validation) file's bytes, recorded in config.json at the start of a run."""
    files = resolve_data(data)
    return {"train": _sha256(files.train), "valid": _sha256(files.valid) if files.valid else None}


def _shown(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same_path(a, b) -> bool:
    return a == b or (isinstance(a, str) and isinstance(b, str) and Path(a).resolve() == Path(b).resolve())


def _run_config(out: Path, checkpoint: Path) -> dict | None:
    """config.json of the run ``checkpoint`` belongs to (that of ``out`` if it is not in a run's checkpoints/)."""
    owner = RunFolder.of_checkpoint(checkpoint)
    recorded = owner.read_config() if owner else None
    return recorded if recorded is not None else RunFolder(out, writes=False).read_config()


def _setting_differences(cfg: TrainConfig, recorded: dict) -> list[str]:
    differences = []
    for f in dataclasses.fields(TrainConfig):
        if f.name in RESUME_MAY_CHANGE or f.name in _COMPARED_RESOLVED or f.name not in recorded:
            continue
        old, new = recorded[f.name], getattr(cfg, f.name)
        same = _same_path(old, new) if f.name in ("model", "data") else old == new
        if not same:
            differences.append(f"{param(f.name)} {_shown(old)} -> {_shown(new)}")
    return differences


def _data_differences(cfg: TrainConfig, recorded: dict) -> list[str]:
    sha = recorded.get("data_sha256")
    if not isinstance(sha, dict) or not cfg.data:
        return []
    differences = []
    files, now = resolve_data(cfg.data), data_fingerprint(cfg.data)
    for part, path in (("train", files.train), ("valid", files.valid)):
        if sha.get(part) != now[part]:
            old, new = (str(v)[:12] if v else "none" for v in (sha.get(part), now[part]))
            differences.append(f"{param('data')} {path or part} contents sha256 {old} -> {new}")
    return differences


def check_resume(cfg: TrainConfig, out: Path, checkpoint: Path) -> None:
    """Refuse to resume with settings other than the run's (its config.json), listing each difference.

    Compared: every TrainConfig field but those in :data:`RESUME_MAY_CHANGE`, and the sha256 of
    the data files. The model's fingerprint and the adapter's shape (connections and homotopy
    steps as resolved on the model, so ``chain`` and its spelled-out plan are the same) are
    compared with the checkpoint itself when it is loaded (:func:`solo_cli.training.checkpoint.load_checkpoint`).
    """
    recorded = _run_config(out, checkpoint)
    if recorded is None:
        return
    differences = _setting_differences(cfg, recorded) + _data_differences(cfg, recorded)
    if differences:
        raise UsageError(
            f"{param('resume')} {cfg.resume}: {checkpoint} belongs to a run started with other settings: "
            f"{', '.join(differences)}; resume with the run's flags (its config.json), or start a new run in another "
            f"{param('output')}"
        )
