"""JSONL rows into an Arrow dataset, checked line by line as they stream in, cached by ``datasets``.

Each row keeps today's checks and ``file:line`` messages (:func:`solo_cli.data.rows.iter_rows`)
and carries its line number in a ``__line__`` column. The Arrow copy lives in the ``datasets``
cache under a fingerprint of the file's path, size and modification time, so a second run (or
a resume) reads it back without parsing the JSON again.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import SoloError
from .quiet import quiet_datasets
from .rows import iter_rows

LINE = "__line__"  # the row's line in the file: no JSONL row may have this key, so it cannot clash
_VERSION = "solo-jsonl-1"  # bump when the rows written change


def features_for(fmt: str):
    """The Arrow columns of a JSONL file of ``fmt`` rows (optional fields are null where absent)."""
    from datasets import Features, List, Value

    string = Value("string")
    columns = {
        "text": {"text": string},
        "completion": {"prompt": string, "completion": string, "references": List(string)},
        "chat": {"messages": List({"role": string, "content": string})},
        "prompt": {"prompt": string, "references": List(string)},
    }[fmt]
    return Features({**columns, LINE: Value("int64")})


def _rows(path: str, fmt: str):
    names = [name for name in features_for(fmt) if name != LINE]
    for lineno, row, _ in iter_rows(path):
        yield {**{name: row.get(name) for name in names}, LINE: lineno}


def _fingerprint(path: Path) -> str:
    stat = path.stat()
    key = f"{_VERSION}\0{path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}"
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def load_jsonl(path: str | Path):
    """A checked JSONL file as ``(datasets.Dataset, format)``; a bad line raises its ``file:line`` error."""
    from datasets import Dataset
    from datasets.exceptions import DatasetGenerationError

    path = Path(path)
    _, _, fmt = next(iter_rows(path))  # the format (or the first line's error) before anything is written
    features = features_for(fmt)
    try:  # gen_kwargs hold no lists: datasets would read a list as shards to split between workers
        with quiet_datasets():
            dataset = Dataset.from_generator(
                _rows, features=features, gen_kwargs={"path": str(path), "fmt": fmt}, fingerprint=_fingerprint(path)
            )
    except DatasetGenerationError as exc:  # a bad row further down: the check's own message
        cause = exc.__cause__
        while cause is not None and not isinstance(cause, SoloError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None
    return dataset, fmt
