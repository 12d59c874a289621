"""Where training rows come from and which columns hold them: one dataclass, validated once.

A :class:`DataSpec` is what ``--data`` and its companion flags resolve to; :func:`solo_cli.data.sources.load_source`
turns it into Arrow datasets. Every field has the name of the parameter (and so of the flag,
``--text-column`` for ``text_column``) that sets it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import UsageError, param

COLUMN_PARAMS = ("text_column", "prompt_column", "completion_column", "messages_column", "chosen_column", "rejected_column")


@dataclass(frozen=True)
class DataSpec:
    """A data source and how to read it.

    ``data``: a JSONL, JSON, CSV/TSV or Parquet file; a folder of them with train/valid/test
    splits (``train.parquet``, ``valid.csv``, ...); a ``datasets`` ``save_to_disk`` folder; or a
    Hub dataset id (``owner/name``). ``data_config`` picks a Hub config, ``data_split`` the
    training split (default ``train``), ``valid_split`` the validation split (default
    ``validation`` or ``valid`` when there is one). The ``*_column`` parameters name the source
    columns that hold solo's row fields (``text``; ``prompt`` + ``completion``; ``messages``;
    ``prompt`` + ``chosen`` + ``rejected``).
    """

    data: str | Path
    data_config: str | None = None
    data_split: str | None = None
    valid_split: str | None = None
    text_column: str | None = None
    prompt_column: str | None = None
    completion_column: str | None = None
    messages_column: str | None = None
    chosen_column: str | None = None
    rejected_column: str | None = None

    @classmethod
    def of(cls, settings, data: str | Path | None = None) -> DataSpec:
        """The spec held by ``settings`` (a TrainConfig, an EvalConfig, ...): its ``data`` (or the ``data``
        given) and whichever of the split, config and column fields it has."""
        names = [f.name for f in fields(cls) if f.name != "data" and hasattr(settings, f.name)]
        return cls(settings.data if data is None else data, **{name: getattr(settings, name) for name in names})

    def __post_init__(self) -> None:
        if not str(self.data).strip():
            raise UsageError(f"{param('data')} is required: a data file, a folder of splits, or a Hub dataset id")
        for name in ("data_config", "data_split", "valid_split", *COLUMN_PARAMS):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise UsageError(f"{param(name)} {value!r}: must be a non-empty name; leave it out for the default")
        if self.data_split is not None and self.data_split == self.valid_split:
            raise UsageError(
                f"{param('valid_split')} {self.valid_split}: the same split as {param('data_split')}; "
                "validate on another split, or leave it out"
            )

    @property
    def columns(self) -> dict[str, str]:
        """Row field -> source column, for the fields this spec maps (``{"prompt": "question"}``)."""
        return {name.removesuffix("_column"): getattr(self, name) for name in COLUMN_PARAMS if getattr(self, name) is not None}
