"""Whether a run may be resumed with the settings given: those of the run it continues, its data, shape and base.

What the run was is read from the checkpoint itself (``trainer_state.json`` records the run's
resolved config), else, for a checkpoint from before that, from the run's ``config.json``; a
checkpoint with neither is refused, since nothing would say what it continues.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ..data.sources import load_source
from ..engine.adapter_header import read_info
from ..errors import SoloError, UsageError, param
from .checkpoint import read_state
from .config import TrainConfig
from .run_folder import RunFolder
from .shape import RunShape, run_differences
from .train_data import source_digests

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
        "compile",
        "trust_remote_code",
        "report_to",
        "num_proc",
        "parallel",  # ddp and fsdp train the same replicated adapter with the same arithmetic (training/sharding.py)
        "fsdp_offload",
    }
)


_COMPARED_RESOLVED = ("connections", "homotopy_steps")  # compared once resolved on the model, by load_checkpoint
# What a run's config.json meant by a setting it does not record: the run predates the option.
_BEFORE_RECORDED = {"group_by_length": False, "packing": False, "objective": "sft"}


def data_sha256(cfg: TrainConfig) -> dict[str, str | None]:
    """What identifies the training (and validation) rows, recorded in config.json at the start of a run.

    A file's sha256 (as solo has always recorded), or the ``datasets`` fingerprint of a
    ``save_to_disk`` folder's or a Hub dataset's split.
    """
    return source_digests(load_source(cfg.data_spec(), cfg.num_proc))


def _shown(value) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _same_path(a, b) -> bool:
    return a == b or (isinstance(a, str) and isinstance(b, str) and Path(a).resolve() == Path(b).resolve())


def recorded_config(out: Path, checkpoint: Path) -> dict:
    """The resolved config of the run ``checkpoint`` continues: the checkpoint's own record, else the config.json of
    the run it belongs to (that of ``out`` if it is not in a run's checkpoints/); refused when there is neither."""
    recorded = read_state(checkpoint).get("config")
    if isinstance(recorded, dict):
        return recorded
    owner = RunFolder.of_checkpoint(checkpoint)
    recorded = owner.read_config() if owner else None
    recorded = recorded if recorded is not None else RunFolder(out, writes=False).read_config()
    if recorded is None:
        where = (owner or RunFolder(out)).config
        raise UsageError(
            f"{param('resume')} {checkpoint}: nothing records the settings of the run it continues (the checkpoint is "
            f"from an older solo and {where} is missing or damaged); restore that config.json, or start a new run"
        )
    return recorded


def _setting_differences(cfg: TrainConfig, recorded: dict, dtype: str | None = None) -> list[str]:
    """``--flag old -> new`` for each setting that differs; ``dtype`` is what ``--dtype`` resolves to here."""
    differences = []
    for f in dataclasses.fields(TrainConfig):
        unrecorded = f.name not in recorded and f.name not in _BEFORE_RECORDED
        if f.name in RESUME_MAY_CHANGE or f.name in _COMPARED_RESOLVED or unrecorded:
            continue
        old, new = recorded.get(f.name, _BEFORE_RECORDED.get(f.name)), getattr(cfg, f.name)
        if f.name == "dtype":  # what the run computed in, whatever was asked: auto is resolved on this hardware
            old = recorded.get("dtype_resolved", old) if old == "auto" else old
            new = dtype or new
        same = _same_path(old, new) if f.name in ("model", "data", "init_adapter") else old == new
        if not same:
            differences.append(f"{param(f.name)} {_shown(old)} -> {_shown(new)}")
    return differences


def _data_differences(cfg: TrainConfig, recorded: dict) -> list[str]:
    sha = recorded.get("data_sha256")
    if not isinstance(sha, dict) or not cfg.data:
        return []
    differences = []
    source = load_source(cfg.data_spec(), cfg.num_proc)
    now = source_digests(source)
    for part, path in (("train", source.train.name), ("valid", source.valid.name if source.valid else None)):
        if sha.get(part) != now[part]:
            old, new = (str(v)[:12] if v else "none" for v in (sha.get(part), now[part]))
            differences.append(f"{param('data')} {path or part} contents sha256 {old} -> {new}")
    return differences


def check_resume(cfg: TrainConfig, out: Path, checkpoint: Path, dtype: str | None = None) -> None:
    """Refuse to resume with settings other than the run's (its config.json), listing each difference.

    Compared: every TrainConfig field but those in :data:`RESUME_MAY_CHANGE`, and the sha256 of
    the data files; ``dtype`` is what ``--dtype`` (``auto``) resolves to on this hardware. The
    model's architecture fingerprint and the adapter's shape (connections and homotopy steps as
    resolved on the model, so ``chain`` and its spelled-out plan are the same) are compared with
    the checkpoint itself when it is loaded (:func:`solo_cli.training.checkpoint.load_checkpoint`),
    and the run's shape and base weights by :func:`check_run`.
    """
    _refuse_other_settings(cfg, recorded_config(out, checkpoint), checkpoint, dtype)


def _refuse_other_settings(cfg: TrainConfig, recorded: dict, what: Path, dtype: str | None) -> None:
    found = _setting_differences(cfg, recorded, dtype) + _data_differences(cfg, recorded)
    if found:
        raise UsageError(
            f"{param('resume')} {cfg.resume}: {what} belongs to a run started with other settings: "
            f"{', '.join(found)}; resume with the run's flags (its config.json), or start a new run in another "
            f"{param('output')}"
        )


class RunComplete(SoloError):
    """``--resume auto`` of a run that has finished: nothing to resume, nothing touched (exit 0)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=0)


def refuse_finished(cfg: TrainConfig, out: Path, dtype: str | None = None) -> None:
    """Raise :class:`RunComplete` when the run in ``out`` has finished and ``cfg`` is its settings (``--resume auto``).

    A run has finished once it wrote its final adapter, whose header counts the steps its config.json
    says the run has (an interrupted run has only checkpoints): resuming would train its last steps
    again. Settings other than the run's are refused as :func:`check_resume` refuses them. Only reads.
    """
    folder = RunFolder(out, writes=False)
    recorded = folder.read_config()
    if recorded is None or not folder.adapter.is_file():
        return
    try:
        steps = read_info(folder.adapter).training.get("steps")
    except SoloError:  # a damaged final adapter: not a finished run to keep
        return
    total = recorded.get("total_steps")
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (steps, total)) or steps < total:
        return
    _refuse_other_settings(cfg, recorded, folder.config, dtype)
    raise RunComplete(
        f"{out}: the run is complete ({steps} of {steps} steps, adapter {folder.adapter}); nothing to resume and "
        f"nothing was changed (to train it again, pass {param('overwrite')} instead of {param('resume')} auto)"
    )


def check_run(checkpoint: Path, out: Path, shape: RunShape, base: dict, model: str) -> None:
    """Refuse to resume a run of another shape (processes, global batch, steps, ramp) or on other base weights.

    Run once the model and data are loaded (the shape needs the number of examples), on every
    process; one line lists every difference. Parts the run did not record are not compared.
    """
    found = run_differences(recorded_config(out, checkpoint), shape, base, model)
    if found:
        raise UsageError(
            f"{param('resume')} {checkpoint}: this run would not continue the one it resumes: {', '.join(found)}; "
            f"resume it as it was started (the same processes, {param('batch_size')} and {param('grad_accum')}, and "
            f"weights), or start a new run in another {param('output')}"
        )
