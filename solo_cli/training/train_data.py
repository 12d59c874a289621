"""A run's data: the ``--data`` source loaded, tokenized through ``datasets`` (cached) and checked for training.

Each split is encoded by :func:`solo_cli.data.split_encoding.encode_rowset` into the ``datasets`` cache,
keyed by the rows, the tokenizer and the settings, so a resume (or a second run) reads the
tokens back instead of tokenizing again. Under torchrun rank 0 reads and tokenizes first while
the others wait at a barrier; they then read what it cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..data.columns import RowSet
from ..data.formats import FORMATS
from ..data.row_encoding import EncodedData
from ..data.sources import SourceData, load_source
from ..data.split_encoding import encode_rowset
from ..errors import UsageError, param
from .config import TrainConfig
from .distributed import DistContext


@dataclass
class RunData:
    """The training and validation examples of a run, and what identifies their rows (for ``--resume``)."""

    train: EncodedData
    valid: EncodedData | None
    data_sha256: dict[str, str | None]  # config.json's data_sha256: see source_digests
    notes: list[str] = field(default_factory=list)  # one line each, for the caller to show (keys the reader ignored)


def source_digests(source: SourceData) -> dict[str, str | None]:
    """What identifies the training and validation rows (config.json's ``data_sha256``): a file's sha256, else the
    ``datasets`` fingerprint of a split."""
    return {"train": source.train.rows_digest, "valid": source.valid.rows_digest if source.valid else None}


def _encode(rows: RowSet, tokenizer, cfg: TrainConfig, context: int | None) -> EncodedData:
    encoded = encode_rowset(
        rows,
        tokenizer,
        chat_template=cfg.chat_template,
        train_on_prompt=cfg.train_on_prompt,
        max_len=cfg.max_seq_length,
        context=context,
        num_proc=cfg.num_proc,
    )
    if not encoded.examples:
        raise UsageError(
            f"{rows.name}: every row's prompt is longer than the limit of {encoded.limit} tokens "
            f"({param('max_seq_length')} {cfg.max_seq_length}, or the model's context); shorten the prompts or raise "
            f"{param('max_seq_length')}"
        )
    return encoded


def check_objective(cfg: TrainConfig, rows: RowSet) -> None:
    """Refuse rows the objective cannot train on: pairs need a preference objective, and it needs pairs."""
    pairs, objective = FORMATS[rows.fmt].pairs, f"{param('objective')} {cfg.objective}"
    if pairs and cfg.objective == "sft":
        raise UsageError(
            f"{rows.name}: its rows are preference pairs (prompt, chosen, rejected); train them with "
            f"{param('objective')} dpo, orpo or simpo"
        )
    if not pairs and cfg.objective != "sft":
        raise UsageError(
            f'{rows.name}: {objective} trains on preference pairs, rows with "prompt", "chosen" and "rejected", '
            f"and these are {rows.fmt} rows; give pairs, or train them with {param('objective')} sft"
        )


def _load(cfg: TrainConfig, tokenizer, context: int | None, ctx: DistContext) -> RunData:
    source = load_source(cfg.data_spec(), cfg.num_proc)
    check_objective(cfg, source.train)
    train = _encode(source.train, tokenizer, cfg, context)
    if len(train.examples) < cfg.batch_size * ctx.world_size:
        raise UsageError(
            f"{param('data')} {source.train.name}: {len(train.examples)} usable examples, fewer than one batch "
            f"({param('batch_size')} {cfg.batch_size} x {ctx.world_size} processes); add rows or lower {param('batch_size')}"
        )
    valid = _encode(source.valid, tokenizer, cfg, context) if source.valid is not None else None
    notes = [rows.note for rows in (source.train, source.valid) if rows is not None and rows.note]
    return RunData(train, valid, source_digests(source), notes)


def load_run_data(cfg: TrainConfig, tokenizer, context: int | None, ctx: DistContext) -> RunData:
    """Read ``cfg.data_spec()`` and tokenize its train and validation splits, refusing data no batch can be made of.

    Under a distributed launcher rank 0 fills the caches first while the others wait at a barrier.
    """
    if ctx.is_main:
        data = _load(cfg, tokenizer, context, ctx)  # an error ends rank 0, and torchrun then stops the others
        ctx.barrier()
        return data
    ctx.barrier()
    return _load(cfg, tokenizer, context, ctx)
