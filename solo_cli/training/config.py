"""Training configuration: one dataclass holds every default, and validates what it is given.

Precedence: dataclass defaults < ``--config FILE.yaml`` < flags given on the command line.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from ..engine.adapter import SOURCE_NORMS, TRAINABLE_GATES
from ..errors import UsageError

LR_SCHEDULES = ("linear", "cosine", "constant")
DTYPE_NAMES = ("float32", "bfloat16", "float16")


@dataclass
class TrainConfig:
    """Every knob of `solo train`. Field names are the flags' names with dashes as underscores."""

    model: str = "smollm2-135m"
    revision: str | None = None
    trust_remote_code: bool = False
    data: str | None = None
    output: str = "runs/solo"
    # adapter
    # Defaults chosen by bench/e2e.py --protocol proxy (bench/results/e2e-proxy.md).
    connections: str = "chain"
    rank: int = 2
    gate: str = "schedule"
    source_norm: str = "rms"
    homotopy_steps: int | None = None  # schedule-gate ramp; None: 10% of the training steps
    # data
    max_seq_length: int = 256
    train_on_prompt: bool = False
    chat_template: bool | None = None  # None: use the tokenizer's template for prompt/completion rows
    max_eval_rows: int = 256
    # optimisation
    max_steps: int | None = None  # None: run --epochs epochs
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-2
    warmup: int = 0
    schedule: str = "linear"
    weight_decay: float = 0.0
    label_smoothing: float = 0.0
    max_grad_norm: float = 1.0
    # bookkeeping
    eval_every: int | None = None  # None: five evaluations over the run
    save_every: int | None = None  # None: same as eval_every
    log_every: int = 1
    seed: int = 0
    dtype: str = "float32"
    device: str = "auto"
    grad_checkpoint: bool = False
    overwrite: bool = False
    resume: str | None = None  # "auto" (newest checkpoint in --output) or a checkpoint folder
    keep_checkpoints: int | None = None  # None: keep every checkpoint

    def validate(self) -> TrainConfig:
        """Raise one error naming every bad value (as its flag)."""
        problems = []

        def bad(name: str, message: str) -> None:
            problems.append(f"--{name.replace('_', '-')} {getattr(self, name)!r}: {message}")

        if self.gate == "learned":
            bad(
                "gate",
                "the learned gate was retired in solo 0.2 (it stayed near 0 and slowed A and B); use schedule or zero-init",
            )
        elif self.gate not in TRAINABLE_GATES:
            bad("gate", f"use one of {', '.join(TRAINABLE_GATES)}")
        if self.source_norm not in SOURCE_NORMS:
            bad("source_norm", f"use one of {', '.join(SOURCE_NORMS)}")
        if self.schedule not in LR_SCHEDULES:
            bad("schedule", f"use one of {', '.join(LR_SCHEDULES)}")
        if self.dtype not in DTYPE_NAMES:
            bad("dtype", f"use one of {', '.join(DTYPE_NAMES)}")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            bad("device", "use auto, cpu, cuda, cuda:N or mps")
        for name in ("rank", "batch_size", "grad_accum", "max_seq_length", "log_every"):
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        for name in ("max_steps", "eval_every", "save_every", "homotopy_steps", "keep_checkpoints"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                bad(name, "must be at least 1")
        for name in ("epochs", "lr", "max_grad_norm"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                bad(name, "must be a positive number")
        for name in ("warmup", "max_eval_rows"):
            if getattr(self, name) < 0:
                bad(name, "must be 0 or more")
        if not (0 <= self.label_smoothing < 1):
            bad("label_smoothing", "must be in [0, 1)")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            bad("weight_decay", "must be 0 or more")
        if not str(self.output).strip():  # "" would write the run into the current folder
            bad("output", "is empty; name the run folder, e.g. runs/solo")
        if self.resume is not None and self.overwrite:
            problems.append("--resume and --overwrite contradict each other: resume continues the run, overwrite replaces it")
        if problems:
            raise UsageError("; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _coerce(name: str, value, annotation: str):
    """Check a YAML value against a field's declared type; return (value, problem or None)."""
    allowed = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
    base = [t.strip() for t in annotation.split("|")]
    if value is None and "None" in base:
        return None, None
    for t in base:
        types = allowed.get(t)
        if types and isinstance(value, types) and not (t in ("int", "float") and isinstance(value, bool)):
            return (float(value) if t == "float" else value), None
        if t == "float" and isinstance(value, str):
            try:  # PyYAML reads 1e-3 (no dot) as a string
                return float(value), None
            except ValueError:
                pass
    return None, f"{name} must be {' or '.join(base)}, got {value!r}"


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config and check it: unknown keys and wrong types are listed in one error."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"--config {path}: cannot read it ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"--config {path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UsageError(f"--config {path}: expected a mapping of option: value at the top level")
    known = {f.name: f for f in fields(TrainConfig)}
    normalized = {str(k).replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(k for k in normalized if k not in known)
    if unknown:
        raise UsageError(f"--config {path}: unknown keys {', '.join(unknown)}; valid keys are the `solo train` flag names")
    values, problems = {}, []
    for key, value in normalized.items():
        values[key], problem = _coerce(key, value, str(known[key].type))
        if problem:
            problems.append(problem)
    if problems:
        raise UsageError(f"--config {path}: {'; '.join(problems)}; fix the values in the file")
    return values


def build_config(yaml_path: str | Path | None, overrides: dict) -> TrainConfig:
    """Defaults, then the YAML file, then the flags that were given (``None`` means not given)."""
    values = load_yaml(yaml_path) if yaml_path else {}
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values).validate()
