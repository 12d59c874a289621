"""Tokenizing a split through ``datasets.Dataset.map``: batched, in ``num_proc`` processes, cached.

This is the one encoder of rows: each row is rendered and masked by the rules of
:mod:`solo_cli.data.row_encoding` (offsets-based masks, EOS, truncation, rows whose prompt fills the
limit skipped; preference pairs by :func:`solo_cli.data.pairs.render_pair`), a batch of rows per
tokenizer call. The result is written to an Arrow file in the ``datasets`` cache
(``HF_DATASETS_CACHE/solo-encoded/``) named by its :func:`cache_key` (the rows' digest, the
tokenizer and every setting), so a second run or a resume reads it back instead of tokenizing again. Stats come from Arrow compute, not from Python lists.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from .chat_template import TemplateRefused
from .columns import RowSet
from .examples import ExampleView, PairView
from .formats import FORMATS, strip_nulls
from .pairs import render_pair
from .quiet import quiet_datasets
from .row_encoding import EncodedData, masked, render, summarize, token_limit, uses_chat_template

ENCODING_VERSION = 2  # bump when the encoding changes, so that old cache files are not read back


def _row(batch: dict, fields: tuple[str, ...], n: int) -> dict:
    return strip_nulls({name: batch[name][n] for name in fields})  # a table's messages are structs with null fields


def _masked_all(rendered: list, tokenizer, use_chat: bool, train_on_prompt: bool, limit: int) -> list:
    """The :func:`masked` example of each ``(text, spans, add_eos)`` (None where its prompt fills ``limit``), one
    tokenizer call for them all."""
    enc = tokenizer([text for text, _, _ in rendered], add_special_tokens=not use_chat, return_offsets_mapping=True)
    examples = []
    for (_, spans, add_eos), ids, offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"], strict=True):
        eos = tokenizer.eos_token_id if add_eos else None
        examples.append(masked(ids, offsets, spans, eos, train_on_prompt=train_on_prompt, max_len=limit))
    return examples


def _render_each(rows: list[dict], indices: list[int], render_one) -> list:
    """``render_one(row)`` of every row; a chat template's refusal carries the row's index (encode_rowset names it)."""
    rendered = []
    for row, index in zip(rows, indices, strict=True):
        try:
            rendered.append(render_one(row))
        except TemplateRefused as exc:
            raise exc.at_index(index) from None
    return rendered


def _encode_batch(
    batch: dict, indices: list[int], *, fmt: str, tokenizer, use_chat: bool, train_on_prompt: bool, limit: int
) -> dict:
    fields = FORMATS[fmt].required
    rows = [_row(batch, fields, n) for n in range(len(batch[fields[0]]))]
    if FORMATS[fmt].pairs:
        return _encode_pairs(rows, indices, fmt, tokenizer, use_chat, limit)
    rendered = _render_each(rows, indices, lambda row: render(row, fmt, tokenizer, use_chat, train_on_prompt=train_on_prompt))
    out = {"input_ids": [], "labels": [], "truncated": []}
    for example in _masked_all(rendered, tokenizer, use_chat, train_on_prompt, limit):
        if example is not None:  # a row whose prompt fills the limit is skipped (counted in the stats)
            out["input_ids"].append(example.input_ids)
            out["labels"].append(example.labels)
            out["truncated"].append(example.truncated)
    return out


def _encode_pairs(rows: list[dict], indices: list[int], fmt: str, tokenizer, use_chat: bool, limit: int) -> dict:
    """:func:`_encode_batch` of pair rows: chosen and rejected sides, a pair skipped when either side's prompt fills ``limit``."""
    pairs = _render_each(rows, indices, lambda row: render_pair(row, fmt, tokenizer, use_chat))
    rendered = [side for sides in pairs for side in sides]
    examples = _masked_all(rendered, tokenizer, use_chat, False, limit)
    out = {name: [] for name in _PAIR_COLUMNS}
    for chosen, rejected in zip(examples[0::2], examples[1::2], strict=True):
        if chosen is None or rejected is None:
            continue
        for side, example in (("chosen", chosen), ("rejected", rejected)):
            out[f"{side}_input_ids"].append(example.input_ids)
            out[f"{side}_labels"].append(example.labels)
        out["truncated"].append(chosen.truncated or rejected.truncated)
    return out


_PAIR_COLUMNS = ("chosen_input_ids", "chosen_labels", "rejected_input_ids", "rejected_labels", "truncated")


def tokenizer_digest(tokenizer) -> str:
    """What decides how ``tokenizer`` encodes: its full ``tokenizer.json``, chat template and special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    parts = [
        type(tokenizer).__name__,
        backend.to_str() if backend is not None else repr(tokenizer),
        str(getattr(tokenizer, "chat_template", None)),
        str(tokenizer.eos_token_id),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def cache_key(rows: RowSet, tokenizer, settings: dict) -> str:
    """The name of an encoded split in the cache: the rows (their source's digest and columns), the tokenizer, the settings."""
    digest = rows.rows_digest or rows.dataset._fingerprint  # a RowSet made in code: datasets' id of its rows
    key = [ENCODING_VERSION, digest, rows.fmt, rows.origin, tokenizer_digest(tokenizer), settings]
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:40]


def _features(pairs: bool = False):
    from datasets import Features, List, Value

    ids = List(Value("int32"))
    if pairs:
        return Features({name: Value("bool") if name == "truncated" else ids for name in _PAIR_COLUMNS})
    return Features({"input_ids": ids, "labels": ids, "truncated": Value("bool")})


def _stats(rows: int, encoded) -> dict:
    """The encoding's stats from its Arrow columns; a pair counts as one example with both sides' tokens."""
    import pyarrow as pa
    import pyarrow.compute as pc

    table = encoded.with_format("arrow")[:]
    prefixes = ("chosen_", "rejected_") if "chosen_input_ids" in table.column_names else ("",)
    chunks = [c for p in prefixes for c in pc.list_value_length(table.column(f"{p}input_ids")).chunks]
    lengths = pa.chunked_array(chunks, type=pa.int32())
    # row_encoding.loss_tokens over the column: position 0's label is never scored, so each list from 1.
    trained = sum(
        pc.sum(pc.not_equal(pc.list_flatten(pc.list_slice(table.column(f"{p}labels"), 1)), -100)).as_py() or 0 for p in prefixes
    )
    longest = pc.max(lengths).as_py() or 0
    return summarize(
        rows, encoded.num_rows, pc.sum(table.column("truncated")).as_py() or 0, pc.sum(lengths).as_py() or 0, trained, longest
    )


@contextlib.contextmanager
def _naming_rows(rows: RowSet):
    """A chat template's refusal inside the block names its row (``train.jsonl:7``), as every row error does."""
    try:
        yield
    except TemplateRefused as exc:
        if exc.index is None:
            raise
        raise exc.at(rows.where(exc.index)) from None


def cache_dir() -> Path:
    """Where encoded splits are kept: ``solo-encoded/`` in the ``datasets`` cache (``HF_DATASETS_CACHE``)."""
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / "solo-encoded"


def encode_rowset(
    rows: RowSet,
    tokenizer,
    *,
    chat_template: bool | None,
    train_on_prompt: bool,
    max_len: int,
    context: int | None = None,
    num_proc: int | None = None,
) -> EncodedData:
    """Tokenize ``rows`` (cut to ``min(max_len, context)`` tokens) through ``Dataset.map``, or read them back from the cache.

    ``context`` is the model's context length (:func:`solo_cli.data.row_encoding.context_length`): a
    model fed more positions than it has fails inside torch. Without it, the limit the tokenizer
    declares is used, if any. Rows whose prompt alone reaches the limit are skipped and counted.
    ``examples`` of the result is an :class:`ExampleView` over the cached Arrow file. ``num_proc``
    processes tokenize (a cached result is read back whatever ``num_proc`` wrote it).
    """
    use_chat = uses_chat_template(rows.fmt, tokenizer, chat_template)
    limit = token_limit(max_len, context, tokenizer)
    pairs = FORMATS[rows.fmt].pairs
    train_on_prompt = train_on_prompt and not pairs  # a pair is scored on its replies alone
    settings = {"fmt": rows.fmt, "use_chat": use_chat, "train_on_prompt": train_on_prompt, "limit": limit}
    key = cache_key(rows, tokenizer, settings)
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_datasets(), _naming_rows(rows):
        encoded = rows.dataset.map(
            _encode_batch,
            batched=True,
            with_indices=True,
            remove_columns=rows.dataset.column_names,
            fn_kwargs={"tokenizer": tokenizer, **{k: v for k, v in settings.items()}},
            features=_features(pairs),
            num_proc=num_proc if num_proc and num_proc > 1 else None,
            cache_file_name=str(folder / f"{key}.arrow"),
            load_from_cache_file=True,
            new_fingerprint=key,
        )
    stats = _stats(len(rows), encoded)
    view = PairView(encoded) if pairs else ExampleView(encoded)
    return EncodedData(view, rows.fmt, use_chat, stats["skipped_prompt_too_long"], stats["truncated"], stats, limit, key)
