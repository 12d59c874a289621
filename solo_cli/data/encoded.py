"""Tokenizing a split through ``datasets.Dataset.map``: batched, in ``num_proc`` processes, cached.

The encoding is exactly :func:`solo_cli.data.encode.encode_rows`' (the same rendering, offsets-
based masks, EOS, truncation and skipped rows); only the loop differs. The result is written to
an Arrow file in the ``datasets`` cache (``HF_DATASETS_CACHE/solo-encoded/``) named by its
:func:`cache_key` (the rows' digest, the tokenizer and every setting), so a second run or a resume reads it
back instead of tokenizing again. Stats come from Arrow compute, not from Python lists.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .columns import RowSet
from .encode import EncodedData, masked, render, summarize, token_limit, uses_chat_template
from .examples import ExampleView
from .formats import FORMATS, strip_nulls
from .quiet import quiet_datasets

ENCODING_VERSION = 2  # bump when the encoding changes, so that old cache files are not read back


def _row(batch: dict, fields: tuple[str, ...], n: int) -> dict:
    return strip_nulls({name: batch[name][n] for name in fields})  # a table's messages are structs with null fields


def _encode_batch(batch: dict, *, fmt: str, tokenizer, use_chat: bool, train_on_prompt: bool, limit: int) -> dict:
    fields = FORMATS[fmt].required
    rendered = [
        render(_row(batch, fields, n), fmt, tokenizer, use_chat, train_on_prompt=train_on_prompt)
        for n in range(len(batch[fields[0]]))
    ]
    enc = tokenizer([text for text, _, _ in rendered], add_special_tokens=not use_chat, return_offsets_mapping=True)
    out = {"input_ids": [], "labels": [], "truncated": []}
    for (_, spans, add_eos), ids, offsets in zip(rendered, enc["input_ids"], enc["offset_mapping"], strict=True):
        eos = tokenizer.eos_token_id if add_eos else None
        example = masked(ids, offsets, spans, eos, train_on_prompt=train_on_prompt, max_len=limit)
        if example is not None:  # a row whose prompt fills the limit is skipped (counted in the stats)
            out["input_ids"].append(example.input_ids)
            out["labels"].append(example.labels)
            out["truncated"].append(example.truncated)
    return out


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


def _features():
    from datasets import Features, List, Value

    return Features({"input_ids": List(Value("int32")), "labels": List(Value("int32")), "truncated": Value("bool")})


def _stats(rows: int, encoded) -> dict:
    import pyarrow.compute as pc

    table = encoded.with_format("arrow")[:]
    lengths = pc.list_value_length(table.column("input_ids"))
    # encode.loss_tokens over the column: position 0's label is never scored, so each list from 1.
    scored = pc.list_flatten(pc.list_slice(table.column("labels"), 1))
    trained = pc.sum(pc.not_equal(scored, -100)).as_py() or 0
    longest = pc.max(lengths).as_py() or 0
    return summarize(
        rows, encoded.num_rows, pc.sum(table.column("truncated")).as_py() or 0, pc.sum(lengths).as_py() or 0, trained, longest
    )


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
    """Tokenize ``rows`` as :func:`solo_cli.data.encode.encode_rows` would, through ``Dataset.map``.

    ``examples`` of the result is an :class:`ExampleView` over the cached Arrow file. ``num_proc``
    processes tokenize (a cached result is read back whatever ``num_proc`` wrote it).
    """
    use_chat = uses_chat_template(rows.fmt, tokenizer, chat_template)
    limit = token_limit(max_len, context, tokenizer)
    settings = {"fmt": rows.fmt, "use_chat": use_chat, "train_on_prompt": train_on_prompt, "limit": limit}
    key = cache_key(rows, tokenizer, settings)
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    with quiet_datasets():
        encoded = rows.dataset.map(
            _encode_batch,
            batched=True,
            remove_columns=rows.dataset.column_names,
            fn_kwargs={"tokenizer": tokenizer, **{k: v for k, v in settings.items()}},
            features=_features(),
            num_proc=num_proc if num_proc and num_proc > 1 else None,
            cache_file_name=str(folder / f"{key}.arrow"),
            load_from_cache_file=True,
            new_fingerprint=key,
        )
    stats = _stats(len(rows), encoded)
    return EncodedData(
        ExampleView(encoded), rows.fmt, use_chat, stats["skipped_prompt_too_long"], stats["truncated"], stats, limit
    )
