"""``data`` from anywhere: files, folders of splits, ``save_to_disk`` folders and Hub ids, loaded by ``datasets``.

:func:`load_source` is the one entry point: a :class:`DataSpec` in, the checked train / valid /
test :class:`RowSet` out. What each kind of source becomes:

- a ``.jsonl`` file (or any file that is not ``.json``, ``.csv``, ``.tsv`` or ``.parquet``, as
  today): read line by line with ``file:line`` errors (:mod:`solo_cli.data.jsonl`);
- ``.json`` (a JSON array, or JSON lines), ``.csv``/``.tsv`` (every cell read as text) and
  ``.parquet`` files: ``datasets``' packaged builders;
- a folder: ``dataset_dict.json`` or ``state.json`` make it a ``save_to_disk`` folder
  (``datasets.load_from_disk``), else its files named for splits (``train.parquet``,
  ``valid.jsonl``, ``validation.csv``, ``test.json``);
- ``owner/name`` that is no path here: a Hub dataset (``datasets.load_dataset``, with
  ``data_config``). With ``HF_HUB_OFFLINE=1`` it is read from the ``datasets`` cache a
  connected run filled, as on a plane.

Everything is cached by ``datasets`` (``HF_DATASETS_CACHE``), so a second run reads Arrow files.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SoloError, UsageError, param
from .checks import check_rows
from .columns import RowSet, map_columns
from .jsonl import load_jsonl
from .quiet import cause_of, quiet_datasets
from .spec import DataSpec

BUILDERS = {".json": "json", ".csv": "csv", ".tsv": "csv", ".parquet": "parquet"}
SPLIT_FILES = {"train": "train", "valid": "valid", "validation": "valid", "test": "test"}
VALID_SPLITS = ("validation", "valid")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class SourceData:
    """The rows of a source: training rows, and validation and test rows when it has them."""

    train: RowSet
    valid: RowSet | None = None
    test: RowSet | None = None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_jsonl(path: Path, columns: dict) -> bool:
    """Read with solo's own JSONL reader (file:line errors) unless datasets must read it."""
    suffix = path.suffix.lower()
    if suffix == ".json":  # a JSON array goes to datasets; JSON lines in a .json file stay ours
        with open(path, "rb") as handle:
            head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        return not head.startswith(b"[") and not columns
    return suffix not in BUILDERS and not columns


def _csv_features(path: Path, sep: str):
    """Every CSV column as a string: a number-looking prompt stays text, an empty cell is ""."""
    from datasets import Features, Value

    with open(path, newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle, delimiter=sep), [])
    return Features({name: Value("string") for name in header})


def _load_file(path: Path, num_proc: int | None):
    from datasets import load_dataset

    builder = BUILDERS.get(path.suffix.lower(), "json")
    kwargs = {}
    if builder == "csv":
        sep = "\t" if path.suffix.lower() == ".tsv" else ","
        kwargs = {"sep": sep, "features": _csv_features(path, sep), "keep_default_na": False}
    try:
        with quiet_datasets():
            return load_dataset(builder, data_files={"train": str(path)}, split="train", num_proc=num_proc, **kwargs)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read it as {builder} ({cause_of(exc)}); check the file") from None
    except Exception as exc:  # datasets wraps a reader's failure in DatasetGenerationError
        if type(exc).__name__ != "DatasetGenerationError":
            raise
        raise UsageError(f"{path}: cannot read it as {builder} ({cause_of(exc)}); check the file") from None


def _file_split(path: Path, spec: DataSpec, num_proc: int | None) -> RowSet:
    columns = spec.columns
    if _is_jsonl(path, columns):
        dataset, fmt = load_jsonl(path)
        origin = {name: name for name in dataset.column_names}
        return RowSet(dataset, fmt, str(path), origin, _sha256(path))
    return map_columns(_load_file(path, num_proc), str(path), columns, _sha256(path))


def _folder_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        split = SPLIT_FILES.get(path.stem)
        if split is None or not path.is_file() or path.suffix.lower() not in (*BUILDERS, ".jsonl"):
            continue
        if split in found:
            raise UsageError(
                f"{param('data')} {folder}: {found[split].name} and {path.name} are both the {split} split; keep one"
            )
        found[split] = path
    return found


def _from_files(folder: Path, spec: DataSpec, num_proc: int | None) -> SourceData:
    if spec.data_split or spec.valid_split or spec.data_config:
        given = next(p for p in ("data_split", "valid_split", "data_config") if getattr(spec, p))
        raise UsageError(
            f"{param(given)}: {folder} is a folder of files, whose splits are their names (train, valid, test); "
            "rename the files, or leave it out"
        )
    files = _folder_files(folder)
    if "train" not in files:
        raise UsageError(f"{param('data')} {folder}: the folder has no train.jsonl; add one or pass a .jsonl file")
    rows = {split: _file_split(path, spec, num_proc) for split, path in files.items()}
    return SourceData(rows["train"], rows.get("valid"), rows.get("test"))


def _pick(splits: dict, spec: DataSpec, where: str) -> tuple[str, str | None, str | None]:
    """Names of the train, valid and test splits in ``splits``, or an error listing those there are."""
    names = list(splits)
    train = spec.data_split or "train"
    for p, name in (("data_split", train), ("valid_split", spec.valid_split)):
        if name is not None and name not in splits:
            raise UsageError(f"{param(p)} {name}: {where} has no such split; its splits are {names}")
    valid = spec.valid_split or next((n for n in VALID_SPLITS if n in splits and n != train), None)
    test = "test" if "test" in splits and "test" not in (train, valid) else None
    return train, valid, test


def _from_dict(splits: dict, spec: DataSpec, where: str, fingerprint_of) -> SourceData:
    train, valid, test = _pick(splits, spec, where)

    def rows(split):
        if split is None:
            return None
        return map_columns(splits[split], f"{where}[{split}]", spec.columns, fingerprint_of(splits[split]))

    return SourceData(rows(train), rows(valid), rows(test))


def _datasets_fingerprint(dataset) -> str:
    return dataset._fingerprint  # datasets' own id of the rows (no public accessor); its caches are keyed by it


def _from_disk(folder: Path, spec: DataSpec) -> SourceData:
    from datasets import Dataset, load_from_disk

    if spec.data_config:
        raise UsageError(f"{param('data_config')}: {folder} is a save_to_disk folder, which has no configs; leave it out")
    try:
        with quiet_datasets():
            saved = load_from_disk(str(folder))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{param('data')} {folder}: cannot load the save_to_disk folder ({cause_of(exc)})") from None
    if isinstance(saved, Dataset):
        if spec.data_split not in (None, "train") or spec.valid_split:
            given = "data_split" if spec.data_split not in (None, "train") else "valid_split"
            raise UsageError(f"{param(given)}: {folder} holds one Dataset, not a DatasetDict of splits; leave it out")
        return SourceData(map_columns(saved, str(folder), spec.columns, _datasets_fingerprint(saved)))
    return _from_dict(dict(saved), spec, str(folder), _datasets_fingerprint)


def _from_hub(repo_id: str, spec: DataSpec, num_proc: int | None) -> SourceData:
    from datasets import load_dataset

    try:
        with quiet_datasets():
            splits = load_dataset(repo_id, spec.data_config, num_proc=num_proc)
    except ConnectionError as exc:
        raise UsageError(
            f"{param('data')} {repo_id}: no such file or folder, nor a Hub dataset in the datasets cache, and the Hub "
            f"cannot be reached ({cause_of(exc)}); connect once to download it, or pass a local file"
        ) from None
    except SoloError:
        raise
    except Exception as exc:  # DatasetNotFoundError, an unknown config (ValueError), a gated repo, ...
        hint = f"check {param('data_config')}" if "config" in str(exc).lower() else "check the dataset id"
        raise UsageError(
            f"{param('data')} {repo_id}: no such file or folder, and the Hub dataset cannot be loaded ({cause_of(exc)}); {hint}"
        ) from None
    return _from_dict(dict(splits), spec, repo_id, _datasets_fingerprint)


def _resolve(spec: DataSpec, num_proc: int | None) -> SourceData:
    path = Path(spec.data)
    if path.is_dir():
        if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
            return _from_disk(path, spec)
        return _from_files(path, spec, num_proc)
    if path.is_file():
        if spec.data_split or spec.valid_split or spec.data_config:
            given = next(p for p in ("data_split", "valid_split", "data_config") if getattr(spec, p))
            raise UsageError(f"{param(given)}: {path} is one file, the training split; leave it out")
        return SourceData(_file_split(path, spec, num_proc))
    if path.exists():  # a FIFO would be read forever
        raise UsageError(f"{param('data')} {path}: not a regular file (a FIFO, socket or device); pass a .jsonl file or a folder")
    if _HUB_ID.match(str(spec.data)) and path.suffix.lower() not in (*BUILDERS, ".jsonl"):
        return _from_hub(str(spec.data), spec, num_proc)
    raise UsageError(f"{param('data')} {path}: no such file or folder; pass a .jsonl file or a folder with train.jsonl")


def load_source(spec: DataSpec, num_proc: int | None = None) -> SourceData:
    """Load and check every split of ``spec``'s source; the first bad row raises, naming it.

    ``num_proc`` processes read multi-file sources (``datasets``' ``num_proc``). Nothing is
    tokenized here: :func:`solo_cli.data.encoded.encode_rowset` does that, split by split.
    """
    source = _resolve(spec, num_proc)
    for rows in (source.train, source.valid, source.test):
        if rows is not None:
            check_rows(rows)
    if source.valid is not None and source.valid.fmt != source.train.fmt:
        raise UsageError(
            f"{source.valid.name}: its rows are {source.valid.fmt!r} but the training rows are {source.train.fmt!r}; use one format"
        )
    return source
