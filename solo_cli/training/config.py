"""Training configuration: one dataclass holds every option of `solo train`, its default, help and checks.

Each field is one option, declared once with :func:`option`: its name is the YAML key (dashes or
underscores) and, as ``--the-name``, the flag; its metadata carries the ``--help`` line, the valid
values and the flag's spelling where it is not ``--the-name`` (``--output/-o``). Adding a field is
all it takes for a new `solo train` flag and YAML key: the command line builds its options from
these fields (``solo_cli/cli/flags.py``), :func:`load_yaml` checks types and choices from them, and
:meth:`TrainConfig.validate` checks the choices. A ``bool`` field is a switch (``--overwrite``)
unless its spelling says ``--x/--no-x``.

Precedence: dataclass defaults < ``--config FILE.yaml`` < flags given on the command line.
"""

from __future__ import annotations

import dataclasses
import math
import re
import reprlib
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

# adapter_config, not adapter: the command line builds its options from this module while it
# starts, and must not import torch to show --help (tests/cli/test_train_options.py checks).
from ..data.spec import DataSpec
from ..engine.adapter_config import SOURCE_NORMS, TRAINABLE_GATES
from ..engine.choices import DTYPE_CHOICES, PARALLEL_MODES  # torch-free, as this module must be
from ..engine.quantization import QUANTIZE_CHOICES  # torch-free, as this module must be
from ..errors import UsageError, first_line, param
from ..inference.generation_settings import SEED_MAX  # torch-free, as this module must be
from .objective_options import OBJECTIVES, objective_problems, resolved_beta, resolved_gamma
from .trackers import REPORT_TO, check_report_to

LR_SCHEDULES = ("linear", "cosine", "constant")
COMPILE_CHOICES = ("off", "on", "auto")  # auto: solo_cli/training/compiled.py
# AdamW moves every weight of A and B by about lr per step: above 1 a run only diverges or saturates
# (--lr 1e6 ended "successfully" at the untrained loss). The default is 2e-2.
MAX_LR = 1.0


@dataclass(frozen=True)
class Option:
    """What a TrainConfig field says about itself as an option (``field.metadata["option"]``)."""

    help: str
    choices: tuple[str, ...] = ()  # the valid values; empty: any value of the field's type
    flags: tuple[str, ...] = ()  # the flag's spelling where it is not --the-name: ("--output", "-o")
    retired: tuple[tuple[str, str], ...] = ()  # (value, why it is refused): no longer a choice, explained
    legacy: tuple[tuple[object, str], ...] = ()  # (old value, the choice it means now): still read, from YAML and config.json

    def current(self, value):
        """``value`` as the option takes it now: a legacy value becomes its choice (``True`` -> ``"on"``)."""
        return next((new for old, new in self.legacy if type(old) is type(value) and old == value), value)


def option(default, help: str, *, choices=(), flags=(), retired=(), legacy=()):
    """A TrainConfig field: its default, its ``--help`` line, its valid values and its flag spelling."""
    spec = Option(help, tuple(choices), tuple(flags), tuple(retired), tuple(legacy))
    return dataclasses.field(default=default, metadata={"option": spec})


def option_of(f: dataclasses.Field) -> Option:
    """The :class:`Option` a TrainConfig field was declared with."""
    return f.metadata["option"]


RETIRED_LEARNED_GATE = "the learned gate was retired in solo 0.2 (it stayed near 0 and slowed A and B); use schedule or zero-init"


@dataclass
class TrainConfig:
    """Every knob of `solo train`. Field names are the flags' names with dashes as underscores."""

    model: str = option("smollm2-135m", "Built-in name (smollm2-135m), model folder or hub id.", flags=("--model", "-m"))
    revision: str | None = option(None, "Hub revision (branch, tag or commit) of --model.")
    trust_remote_code: bool = option(False, "Run code shipped with a hub model (off unless asked).")
    data: str | None = option(
        None,
        "JSONL file, or a folder with train.jsonl [valid.jsonl test.jsonl]; also JSON, CSV and Parquet files "
        "(and folders of them), save_to_disk folders and Hub dataset ids.",
    )
    data_config: str | None = option(None, "Config (subset) of a Hub --data dataset.")
    data_split: str | None = option(None, "Split of --data to train on (default train).")
    valid_split: str | None = option(None, "Split of --data to validate on (default validation or valid, if there is one).")
    text_column: str | None = option(None, "Column of --data holding the text of text rows (default text).")
    prompt_column: str | None = option(None, "Column of --data holding the prompts (default prompt).")
    completion_column: str | None = option(None, "Column of --data holding the completions (default completion).")
    messages_column: str | None = option(None, "Column of --data holding chat messages (default messages).")
    chosen_column: str | None = option(None, "Column of --data holding the preferred replies (default chosen).")
    rejected_column: str | None = option(None, "Column of --data holding the rejected replies (default rejected).")
    num_proc: int | None = option(None, "Processes that read and tokenize --data (default 1).")
    output: str = option("runs/solo", "Run folder (default runs/solo).", flags=("--output", "-o"))
    # adapter
    # Defaults: plan, gate, source norm and lr from the CPU proxy (bench/results/e2e-proxy.md); rank from the
    # full protocol on a GPU (bench/results/e2e-full.md).
    connections: str = option(
        "chain", "top:N[:S], mirror[:N], chain:K or '3->9,5->11' (emb = -1); + joins plans: chain:1+chain:5."
    )
    rank: int = option(3, "Rank of every connection.")
    gate: str = option(
        "schedule",
        "Homotopy gate: schedule (t ramps 0->1) or zero-init (B = 0).",
        choices=TRAINABLE_GATES,
        retired=[("learned", RETIRED_LEARNED_GATE)],
    )
    source_norm: str = option("rms", "Normalise each source h_i before A: rms (default) or none.", choices=SOURCE_NORMS)
    homotopy_steps: int | None = option(None, "Steps of the 0->1 ramp for --gate schedule.")  # None: 10% of the steps
    homotopy_fraction: float | None = option(  # None: 0.1, or --homotopy-steps when that is given
        None, "Share of the run's steps the --gate schedule ramp takes, in (0, 1] (default 0.1); or give --homotopy-steps."
    )
    # data
    max_seq_length: int = option(256, "Tokens per example (longer ones are cut).")
    train_on_prompt: bool = option(False, "Take loss on prompt tokens too.")
    chat_template: bool | None = option(  # None: use the tokenizer's template for prompt/completion rows
        None,
        "Use the tokenizer's chat template for prompt/completion rows (default: when it has one).",
        flags=("--chat-template/--no-chat-template",),
    )
    max_eval_rows: int = option(256, "Validation rows used at most (0: all of them).")
    # optimisation
    max_steps: int | None = option(None, "Optimizer steps (overrides --epochs).")  # None: run --epochs epochs
    epochs: float = option(1.0, "Passes over the training data.")
    batch_size: int = option(8, "Examples per micro-batch.")
    group_by_length: bool = option(
        True,
        "Batch examples of similar length (less padding); shuffled windows keep the order random.",
        flags=("--group-by-length/--no-group-by-length",),
    )
    grad_accum: int = option(1, "Micro-batches per optimizer step.")
    lr: float = option(2e-2, "Peak learning rate.")
    lr_b_ratio: float = option(1.0, "B's learning rate is --lr times this (A's is --lr); above 1 trains B faster, as LoRA+ does.")
    warmup: int = option(0, "Linear warm-up steps.")
    schedule: str = option("linear", "Learning-rate schedule: linear, cosine or constant.", choices=LR_SCHEDULES)
    weight_decay: float = option(0.0, "AdamW weight decay on A and B.")
    label_smoothing: float = option(0.0, "Label smoothing of the loss.")
    max_grad_norm: float = option(1.0, "Clip the gradient norm of A and B to this.")
    # bookkeeping
    eval_every: int | None = option(None, "Validate every N steps (default: 5 times per run).")
    save_every: int | None = option(None, "Checkpoint every N steps (default: --eval-every).")
    log_every: int = option(1, "Log the loss every N steps.")
    report_to: str = option(
        "none", "Also log loss, lr, gate, tokens/s and validation loss to tensorboard or wandb.", choices=REPORT_TO
    )
    seed: int = option(0, "Random seed (init and data order), 0 to 2**32 - 1.")
    dtype: str = option(
        "auto",
        "auto (bfloat16 where this hardware runs it faster, else float32), float32, bfloat16 or float16.",
        choices=DTYPE_CHOICES,
    )
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps.")
    grad_checkpoint: bool = option(False, "Recompute activations to save memory.")
    compile: str = option(
        "off",
        "torch.compile the base model's blocks: off, on, or auto (only when the run is long enough to repay the "
        "compile). Faster steps after a one-off compile; batch widths are padded up to a few buckets.",
        choices=COMPILE_CHOICES,
        legacy=[(True, "on"), (False, "off")],  # it was a switch; YAML reads on/off as true/false
    )
    overwrite: bool = option(False, "Replace a run already in --output.")
    resume: str | None = option(None, "Continue from 'auto' (the newest checkpoint in --output) or a checkpoint folder.")
    keep_checkpoints: int | None = option(None, "Keep only the newest N checkpoints.")  # None: keep every checkpoint
    quantize: str = option(
        "none",
        "Load the base's linear weights quantized: nf4 or fp4 (4-bit), int8 (bitsandbytes), torchao-int8; "
        "the adapter stays float32. Needs pip install 'solo-cli[quantize]' (torchao-int8: 'solo-cli[torchao]').",
        choices=QUANTIZE_CHOICES,
    )
    parallel: str = option(
        "ddp",
        "Under torchrun: ddp (every process holds the whole base) or fsdp (the base sharded block by block across "
        "the processes, FSDP2; not with --quantize int8 or torchao-int8).",
        choices=PARALLEL_MODES,
    )
    fsdp_offload: bool = option(
        False, "With --parallel fsdp on GPUs: keep the base's shards in CPU memory (for bases larger than the GPUs)."
    )
    packing: bool = option(
        False,
        "Pack several examples into each row of --max-seq-length tokens, with no padding and no attention "
        "between them; --batch-size then counts rows (and --group-by-length has nothing to do). Refused for models "
        "that cannot keep examples apart.",
        flags=("--packing/--no-packing",),
    )
    # preference tuning (docs/preference.md)
    objective: str = option(
        "sft",
        "sft (next-token loss on the completions), or on prompt/chosen/rejected rows dpo, orpo or simpo (preference tuning).",
        choices=OBJECTIVES,
    )
    beta: float | None = option(  # None: DEFAULT_BETA of the objective
        None, "DPO's and SimPO's beta, ORPO's lambda (default 0.1 for dpo and orpo, 2.0 for simpo)."
    )
    simpo_gamma: float | None = option(  # None: SIMPO_GAMMA_BETA_RATIO x beta
        None, "SimPO's target reward margin gamma (default --beta x 0.5, the SimPO paper's gamma/beta ratio)."
    )
    init_adapter: str | None = option(
        None,
        "Start from this trained adapter (adapter.safetensors or its run folder), its connections, rank and gate, "
        "instead of a fresh one; with --objective dpo it is also the reference.",
    )

    def __post_init__(self) -> None:
        for f in fields(self):  # legacy values (compile=True from an older config) as the option takes them now
            if option_of(f).legacy:
                setattr(self, f.name, option_of(f).current(getattr(self, f.name)))

    def validate(self) -> TrainConfig:
        """Raise one error naming every bad value (each parameter marked with :func:`param`)."""
        problems = []

        def bad(name: str, message: str) -> None:
            problems.append(f"{param(name)} {getattr(self, name)!r}: {message}")

        for f in fields(self):
            spec, value = option_of(f), getattr(self, f.name)
            if spec.choices and value not in spec.choices:
                why = next((why for old, why in spec.retired if old == value), None)
                bad(f.name, why or f"use one of {', '.join(spec.choices)}")
        try:  # a tracker whose package is missing is refused before anything loads
            check_report_to(self.report_to)
        except UsageError as exc:
            problems.append(exc.text)
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            bad("device", "use auto, cpu, cuda, cuda:N or mps")
        for name in ("rank", "batch_size", "grad_accum", "log_every"):
            if getattr(self, name) < 1:
                bad(name, "must be at least 1")
        if self.max_seq_length < 2:  # the loss scores each token from its predecessors: one token trains nothing
            bad("max_seq_length", "must be at least 2 (the loss scores each token after the first); e.g. 256")
        if not 0 <= self.seed <= SEED_MAX:
            bad("seed", f"must be between 0 and {SEED_MAX} (2**32 - 1); pick a seed in that range")
        if math.isfinite(self.lr) and self.lr > MAX_LR:
            bad("lr", f"above {MAX_LR:g}, every update moves A and B by about that much and the run diverges; use e.g. 2e-2")
        for name in ("max_steps", "eval_every", "save_every", "homotopy_steps", "keep_checkpoints", "num_proc"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                bad(name, "must be at least 1")
        for name in ("epochs", "lr", "lr_b_ratio", "max_grad_norm"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                bad(name, "must be a positive number")
        for name in ("warmup", "max_eval_rows"):
            if getattr(self, name) < 0:
                bad(name, "must be 0 or more")
        if self.homotopy_fraction is not None and not (0 < self.homotopy_fraction <= 1):
            bad("homotopy_fraction", "must be in (0, 1], e.g. 0.3 for a ramp over the first 30% of the steps")
        if self.homotopy_fraction is not None and self.homotopy_steps is not None:
            problems.append(f"{param('homotopy_fraction')} and {param('homotopy_steps')} both set the ramp's length; give one")
        if not (0 <= self.label_smoothing < 1):
            bad("label_smoothing", "must be in [0, 1)")
        if not (self.weight_decay >= 0 and math.isfinite(self.weight_decay)):
            bad("weight_decay", "must be 0 or more")
        if not str(self.output).strip():  # "" would write the run into the current folder
            bad("output", "is empty; name the run folder, e.g. runs/solo")
        if self.fsdp_offload and self.parallel != "fsdp":
            problems.append(f"{param('fsdp_offload')} offloads the sharded base: it needs {param('parallel')} fsdp")
        if self.parallel == "fsdp" and self.quantize in ("int8", "torchao-int8"):  # measured: FSDP2 breaks their weights
            bad("quantize", f"FSDP cannot shard {self.quantize} weights; with {param('parallel')} fsdp use nf4 or fp4")
        if self.resume == "auto" and self.overwrite:  # --resume PATH --overwrite: see run.check_output
            problems.append(
                f"{param('resume')} and {param('overwrite')} contradict each other: "
                "resume continues the run, overwrite replaces it"
            )
        problems += objective_problems(self)
        if problems:
            raise UsageError("; ".join(problems))
        return self

    def resolved_beta(self) -> float | None:
        """``--beta``, else the objective's default (None for sft, which has none)."""
        return resolved_beta(self)

    def resolved_gamma(self) -> float | None:
        """SimPO's margin: ``--simpo-gamma``, else ``--beta`` x 0.5 (None for the other objectives)."""
        return resolved_gamma(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def ramp_steps(self, steps: int) -> int:
        """The schedule gate's 0->1 ramp, in optimizer steps, for a run of ``steps``: --homotopy-steps, else
        --homotopy-fraction (default 0.1) of the run, rounded down, at least 1."""
        if self.homotopy_steps is not None:
            return self.homotopy_steps
        fraction = 0.1 if self.homotopy_fraction is None else self.homotopy_fraction
        return max(1, math.floor(steps * fraction + 1e-9))  # 1e-9: 90 x 0.7 is 62.99999... in floating point

    def intervals(self, steps: int) -> tuple[int, int]:
        """``(eval_every, save_every)`` in a run of ``steps``: --eval-every, else 5 times per run; --save-every, else
        --eval-every."""
        eval_every = self.eval_every or max(1, steps // 5)
        return eval_every, self.save_every or eval_every

    def data_spec(self) -> DataSpec:
        """``data`` with its split, config and column fields, as the data layer reads it (checked there)."""
        return DataSpec.of(self)


_shown = reprlib.Repr()  # a YAML value in a message: nested or long values shortened with ...
_shown.maxlevel, _shown.maxlist, _shown.maxdict, _shown.maxstring, _shown.maxother = 2, 4, 4, 60, 60


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
    return None, f"{name} must be {' or '.join(base)}, got {_shown.repr(value)}"


def _check(f: dataclasses.Field, value):
    """A YAML value as the field takes it, and the problem with it (None if none): type, then choices."""
    spec = option_of(f)
    value, problem = _coerce(f.name, spec.current(value), str(f.type))
    retired = [old for old, _ in spec.retired]  # left to validate(), which says why
    if problem is None and spec.choices and value is not None and value not in (*spec.choices, *retired):
        problem = f"{f.name} must be one of {', '.join(spec.choices)}, got {_shown.repr(value)}"
    return value, problem


_YAML_DEPTH = 8  # a config is option: value pairs (depth 1); deeper nesting is refused before it is built


class _ConfigLoader(yaml.SafeLoader):
    """safe_load without aliases (``*name``: a billion-laughs file expands to gigabytes) or deep nesting
    (which recurses past Python's limit): both are refused at the node, before anything is built."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(
                None, None, f"line {mark.line + 1}: aliases (*name) are not allowed; write the value out", None
            )
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > _YAML_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(
                    None, None, f"line {mark.line + 1}: nested more than {_YAML_DEPTH} levels deep", None
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def load_yaml(path: str | Path) -> dict:
    """Read a YAML config and check it: unknown keys, wrong types and bad choices are listed in one error."""
    path = Path(path)
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_ConfigLoader)  # noqa: S506 (a SafeLoader)
    except OSError as exc:
        raise UsageError(f"{param('config')} {path}: cannot read it ({exc.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError, RecursionError) as exc:
        raise UsageError(f"{param('config')} {path}: not valid YAML ({first_line(exc, 'nested too deeply')})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise UsageError(f"{param('config')} {path}: expected a mapping of option: value at the top level")
    known = {f.name: f for f in fields(TrainConfig)}
    normalized = {str(k).replace("-", "_"): v for k, v in raw.items()}
    unknown = sorted(k for k in normalized if k not in known)
    if unknown:
        raise UsageError(
            f"{param('config')} {path}: unknown keys {', '.join(unknown)}; valid keys are the `solo train` flag names"
        )
    values, problems = {}, []
    for key, value in normalized.items():
        values[key], problem = _check(known[key], value)
        if problem:
            problems.append(problem)
    if problems:
        raise UsageError(f"{param('config')} {path}: {'; '.join(problems)}; fix the values in the file")
    return values


def build_config(yaml_path: str | Path | None, overrides: dict) -> TrainConfig:
    """Defaults, then the YAML file, then the flags that were given (``None`` means not given)."""
    values = load_yaml(yaml_path) if yaml_path else {}
    if values:  # the file's values pass the checks the flags pass, and a bad one is blamed on the file
        try:
            TrainConfig(**values).validate()
        except UsageError as exc:
            raise UsageError(f"{param('config')} {yaml_path}: {exc.text}; fix the values in the file") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    return TrainConfig(**values).validate()
