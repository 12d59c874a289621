"""What `solo eval` is asked to do: one dataclass, checked before anything is read or loaded."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..data.spec import DataSpec
from ..errors import UsageError, param
from ..inference.generation_settings import GenerationSettings


def check_max_seq_length(max_seq_length: int) -> None:
    if max_seq_length < 1:
        raise UsageError(f"{param('max_seq_length')} {max_seq_length}: must be at least 1 (tokens per example for the loss)")


@dataclass
class EvalConfig:
    """An evaluation: ``data`` scored from a model's generations, or from an existing ``predictions`` file.

    ``data`` is any source :class:`~solo_cli.data.spec.DataSpec` takes (a JSONL, JSON, CSV or Parquet
    file; a folder of splits or a ``save_to_disk`` folder, whose test split is read, else its
    validation split, or ``data_split``; a Hub dataset id). ``generate=False`` gives
    the loss only; ``chat=None`` uses the chat template if the adapter was trained with one. ``limit``
    keeps the rows of the first N prompts (of text rows, the first N rows) for the loss and generation alike.
    ``output`` receives the predictions (JSONL) and, beside it, the metrics; it needs generation, so it
    is refused with ``predictions``, with ``generate=False`` and on text rows (they have no prompts).
    """

    data: str | Path
    predictions: str | Path | None = None
    output: str | Path | None = None
    settings: GenerationSettings = field(default_factory=lambda: GenerationSettings(max_new_tokens=64))
    batch_size: int = 16
    limit: int | None = None
    max_seq_length: int = 256
    chat: bool | None = None
    generate: bool = True
    data_config: str | None = None  # the source's split, config and columns, as for training (DataSpec)
    data_split: str | None = None  # default: test, else validation
    text_column: str | None = None
    prompt_column: str | None = None
    completion_column: str | None = None
    messages_column: str | None = None
    chosen_column: str | None = None  # preference pairs: scored for pair accuracy, nothing generated
    rejected_column: str | None = None

    def data_spec(self) -> DataSpec:
        """``data`` with its split, config and column fields, as the data layer reads it."""
        return DataSpec.of(self)

    def validate(self) -> EvalConfig:
        """Refuse bad values in one line naming the parameter, before any file is read or model loaded."""
        self.settings.validate()
        check_max_seq_length(self.max_seq_length)
        if self.output is not None and self.predictions is not None:
            raise UsageError(
                f"{param('output')} writes the predictions a model generates; {param('predictions')} scores a file "
                f"that exists, so nothing would be written: drop {param('output')}"
            )
        if self.output is not None and not self.generate:
            raise UsageError(
                f"{param('output')} writes generated predictions and their metrics; with --no-generate nothing is "
                f"generated, so nothing would be written: drop {param('output')} (or --no-generate)"
            )
        for name in ("batch_size", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise UsageError(f"{param(name)} {value}: must be at least 1")
        return self
