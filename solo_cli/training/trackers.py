"""Experiment tracking (``--report-to``): TensorBoard event files in the run folder, or Weights & Biases.

Both are optional: TensorBoard needs the ``tensorboard`` package (``pip install solo-cli[tensorboard]``),
wandb the ``wandb`` package; asking for one that is not installed is refused before anything
loads. Only the first process of a distributed run reports.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from ..errors import UsageError, param

REPORT_TO = ("none", "tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
_PACKAGES = {"tensorboard": ("tensorboard", "solo-cli[tensorboard]"), "wandb": ("wandb", "wandb")}


def check_report_to(kind: str) -> None:
    """Refuse a tracker whose package is missing, in one line that says what to install."""
    if kind in _PACKAGES:
        module, pip = _PACKAGES[kind]
        if importlib.util.find_spec(module) is None:
            raise UsageError(f"{param('report_to')} {kind}: the {module} package is not installed; pip install {pip}")


class NoTracker:
    """``--report-to none``: every call does nothing."""

    def log(self, values: dict[str, float], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class TensorBoardTracker:
    """Scalars into ``RUN/tensorboard/`` (``tensorboard --logdir RUN``), flushed at every validation and at the end."""

    def __init__(self, run_dir: Path, config: dict, start_step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run redoes the steps after its checkpoint: hide what the first attempt logged for them
        purge = start_step + 1 if start_step else None
        folder = Path(run_dir) / TENSORBOARD_DIR
        try:
            self.writer = SummaryWriter(log_dir=str(folder), purge_step=purge)
        except OSError as exc:  # a read-only tensorboard/ (check_output probes it first; this is the fallback)
            raise UsageError(
                f"{param('report_to')} tensorboard: cannot write in {folder} ({exc.strerror or exc}); "
                f"make it writable, or choose another {param('output')}"
            ) from None
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in config.items()))

    def log(self, values: dict[str, float], step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(name, value, step)
        if any(name.startswith("eval/") for name in values):
            self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbTracker:
    """A wandb run named after the run folder (project: ``WANDB_PROJECT``, default ``solo``)."""

    def __init__(self, run_dir: Path, config: dict, start_step: int = 0) -> None:
        import wandb

        self.wandb = wandb
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "solo"), name=Path(run_dir).name, dir=str(run_dir), config=config
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def open_tracker(kind: str, run_dir: Path, config: dict, enabled: bool = True, start_step: int = 0):
    """The tracker ``--report-to`` names (a no-op one on processes other than the first, or for none).

    ``start_step``: the step a resumed run continues from (TensorBoard drops the later steps it logged before).
    """
    if not enabled or kind == "none":
        return NoTracker()
    check_report_to(kind)
    return (TensorBoardTracker if kind == "tensorboard" else WandbTracker)(run_dir, config, start_step)


_NAMES = {
    "loss": "train/loss",
    "lr": "train/lr",
    "gate": "train/gate",
    "tokens_per_s": "train/tokens_per_s",
    "valid_loss": "eval/loss",
}


_PREFERENCE = ("rewards/", "logps/")  # a preference objective's metrics, TRL's names (training/objective.py)


def _tracked_name(key: str) -> str | None:
    if key in _NAMES:
        return _NAMES[key]
    if key.startswith(_PREFERENCE):
        return f"train/{key}"
    if key.startswith("valid_") and key.removeprefix("valid_").startswith(_PREFERENCE):
        return f"eval/{key.removeprefix('valid_')}"
    return None


def tracked_values(record: dict) -> dict[str, float]:
    """A metrics.jsonl record as tracker scalars: train/loss, train/lr, train/gate, train/tokens_per_s, eval/loss, and
    a preference objective's train/rewards/chosen ... eval/logps/rejected."""
    named = ((_tracked_name(k), v) for k, v in record.items() if isinstance(v, (int, float)))
    return {name: float(v) for name, v in named if name is not None}
