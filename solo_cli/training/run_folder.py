"""The run folder (``--output``): the names of a run's files and the writing of each.

``adapter.safetensors`` (the final adapter), ``best/adapter.safetensors`` (the best on the
validation data), ``checkpoints/step-N/`` (see checkpoint.py), ``metrics.jsonl`` (one line per
logged step or evaluation), ``config.json`` (the resolved settings), ``loss.png``, ``README.md`` (the
final adapter's model card, written when the run finishes) and, with ``--report-to tensorboard``,
``tensorboard/`` (event files; see trackers.py).

Under a distributed launcher every process knows the paths but only rank 0 writes: a folder made
with ``writes=False`` writes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..engine.adapter import SoloAdapter
from ..engine.adapter_file import ADAPTER_FILENAME, AdapterInfo, save_adapter
from ..engine.model_card import render_card
from ..files.atomic import write_json, write_text
from .plot import plot_losses

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
CARD_FILE = "README.md"
BEST_DIR = "best"
CHECKPOINTS_DIR = "checkpoints"


@dataclass(frozen=True)
class RunFolder:
    root: Path
    writes: bool = True  # False on every rank but 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def adapter(self) -> Path:
        return self.root / ADAPTER_FILENAME

    @property
    def best(self) -> Path:
        return self.root / BEST_DIR / ADAPTER_FILENAME

    @property
    def checkpoints(self) -> Path:
        return self.root / CHECKPOINTS_DIR

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step}"

    @property
    def config(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def metrics(self) -> Path:
        return self.root / METRICS_FILE

    @property
    def plot(self) -> Path:
        return self.root / PLOT_FILE

    @property
    def card(self) -> Path:
        return self.root / CARD_FILE

    @classmethod
    def of_checkpoint(cls, checkpoint: Path) -> RunFolder | None:
        """The run a checkpoint folder belongs to, if it sits in a run's ``checkpoints/``."""
        checkpoint = Path(checkpoint)
        return cls(checkpoint.parent.parent, writes=False) if checkpoint.parent.name == CHECKPOINTS_DIR else None

    def read_config(self) -> dict | None:
        """config.json as `solo train` wrote it (an object with ``solo_version``), or None if absent or another file."""
        try:
            recorded = json.loads(self.config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError):
            return None
        return recorded if isinstance(recorded, dict) and "solo_version" in recorded else None

    def write_config(self, values: dict) -> None:
        if self.writes:
            write_json(self.config, values)

    def log(self, line: dict) -> None:
        """Append one record to metrics.jsonl."""
        if self.writes:
            with self.metrics.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after ``step`` (on resume: they belong to the part of the run being redone)."""
        if self.writes and self.metrics.is_file():
            lines = self.metrics.read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if line.strip() and json.loads(line)["step"] <= step]
            write_text(self.metrics, "".join(line + "\n" for line in kept))

    def save_adapter(self, adapter: SoloAdapter, info: AdapterInfo) -> None:
        """The final adapter."""
        if self.writes:
            save_adapter(self.adapter, adapter, info)

    def save_best(self, adapter: SoloAdapter, info: AdapterInfo) -> None:
        """The adapter with the lowest validation loss so far."""
        if self.writes:
            save_adapter(self.best, adapter, info)

    def write_card(self, info: AdapterInfo) -> None:
        """README.md: the model card of the final adapter (``info``: its header)."""
        if self.writes:
            write_text(self.card, render_card(info))

    def plot_losses(self) -> None:
        """loss.png from metrics.jsonl."""
        if self.writes:
            plot_losses(self.metrics, self.plot)
