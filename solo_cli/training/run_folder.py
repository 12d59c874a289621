"""The run folder (``--output``): the names of a run's files and the writing of each.

``adapter.safetensors`` (the final adapter), ``best/adapter.safetensors`` (the best on the
validation data), ``checkpoints/step-N/`` (see checkpoint.py), ``metrics.jsonl`` (one line per
logged step or evaluation), ``config.json`` (the resolved settings), ``loss.png``, ``README.md`` (the
final adapter's model card, written when the run finishes, unless a README.md solo did not write is
there by then: solo never replaces a card it did not write), ``third_party.log`` (what other packages warned
or logged during the run, kept off solo's terminal) and, with ``--report-to tensorboard``, ``tensorboard/``
(event files; see trackers.py).

Under a distributed launcher every process knows the paths but only rank 0 writes: a folder made
with ``writes=False`` writes nothing. A write that fails (a full disk, a folder made read-only) raises
one line naming the file (:func:`~solo_cli.files.atomic.write_error`, exit 1).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..engine.adapter import SoloAdapter
from ..engine.adapter_file import ADAPTER_FILENAME, AdapterInfo, save_adapter
from ..engine.model_card import render_card
from ..errors import UsageError
from ..files.atomic import write_error, write_json, write_text
from ..files.outputs import is_solo_card
from .plot import plot_losses

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
PLOT_FILE = "loss.png"
CARD_FILE = "README.md"
THIRD_PARTY_LOG = "third_party.log"  # other packages' warnings and log lines (solo_cli/cli/third_party.py)
BEST_DIR = "best"
CHECKPOINTS_DIR = "checkpoints"


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """An OSError while writing ``path`` (a full disk) becomes one line naming it and --output."""
    try:
        yield
    except OSError as exc:
        raise write_error(exc, path) from None


def _record_step(line: str) -> int | None:
    """The step of one metrics.jsonl line, or None when the line is not a whole record."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    step = record.get("step") if isinstance(record, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


def _in_run(*names: str) -> property:
    """A path in the run folder: ``root / names``."""
    return property(lambda folder: folder.root.joinpath(*names))


@dataclass(frozen=True)
class RunFolder:
    root: Path
    writes: bool = True  # False on every rank but 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    adapter = _in_run(ADAPTER_FILENAME)
    best = _in_run(BEST_DIR, ADAPTER_FILENAME)
    checkpoints = _in_run(CHECKPOINTS_DIR)
    config = _in_run(CONFIG_FILE)
    metrics = _in_run(METRICS_FILE)
    plot = _in_run(PLOT_FILE)
    card = _in_run(CARD_FILE)
    third_party_log = _in_run(THIRD_PARTY_LOG)

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / f"step-{step}"

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
            with _writing(self.config):
                write_json(self.config, values)

    def log(self, line: dict) -> None:
        """Append one record to metrics.jsonl."""
        if self.writes:
            with _writing(self.metrics), self.metrics.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")

    def append_third_party(self, text: str) -> bool:
        """Append other packages' warnings and log lines to third_party.log (a resumed run adds to it); whether
        they were taken. Not before the run has begun (config.json is written): a run refused before then leaves
        no file behind."""
        if not self.writes:
            return True  # rank 0 keeps the log
        if not self.config.is_file():
            return False
        with _writing(self.third_party_log), self.third_party_log.open("a", encoding="utf-8") as handle:
            handle.write(text)
        return True

    def truncate_metrics(self, step: int) -> None:
        """Drop metric lines logged after ``step`` (on resume: they belong to the part of the run being redone).

        A last line that is not a whole record was torn by a crash while it was written, and is
        dropped; any other line that is not a record is refused, naming it (nothing is rewritten).
        """
        if not (self.writes and self.metrics.is_file()):
            return
        lines = [line for line in self.metrics.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
        steps = [_record_step(line) for line in lines]
        if steps and steps[-1] is None:
            lines, steps = lines[:-1], steps[:-1]  # torn by a crash mid-write
        bad = next((n for n, s in enumerate(steps) if s is None), None)
        if bad is not None:
            raise UsageError(
                f"{self.metrics}: line {bad + 1} is not a metrics record; fix or delete that line, then resume again"
            )
        write_text(self.metrics, "".join(line + "\n" for line, s in zip(lines, steps) if s <= step))

    def save_adapter(self, adapter: SoloAdapter, info: AdapterInfo) -> None:
        """The final adapter."""
        if self.writes:
            save_adapter(self.adapter, adapter, info)

    def save_best(self, adapter: SoloAdapter, info: AdapterInfo) -> None:
        """The adapter with the lowest validation loss so far."""
        if self.writes:
            save_adapter(self.best, adapter, info)

    def write_card(self, info: AdapterInfo) -> bool:
        """README.md: the model card of the final adapter (``info``: its header), unless a README.md solo
        did not write appeared in the folder while the run trained (that one is kept). Whether it was written."""
        exists = self.card.exists() or self.card.is_symlink()
        if not self.writes or (exists and not is_solo_card(self.card)):
            return False
        with _writing(self.card):
            write_text(self.card, render_card(info))
        return True

    def plot_losses(self) -> None:
        """loss.png from metrics.jsonl."""
        if self.writes:
            with _writing(self.plot):
                plot_losses(self.metrics, self.plot)
