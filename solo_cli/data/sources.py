"""``data`` from anywhere: files, folders of splits, ``save_to_disk`` folders and Hub ids, loaded by ``datasets``.

:func:`load_source` is the one entry point: a :class:`DataSpec` in, the checked train / valid /
test :class:`RowSet` out. What each kind of source becomes:

- a ``.jsonl`` file (or any file that is not ``.json``, ``.csv``, ``.tsv`` or ``.parquet``):
  read line by line with ``file:line`` errors; a ``.json`` file holding one JSON array, or JSON
  lines (:mod:`solo_cli.data.jsonl`);
- ``.csv``/``.tsv`` files, every cell read as text (:mod:`solo_cli.data.delimited`);
- ``.parquet`` files: ``datasets``' Parquet builder;
- a folder: ``dataset_dict.json`` or ``state.json`` make it a ``save_to_disk`` folder
  (``datasets.load_from_disk``), else its files named for splits (``train.parquet``,
  ``valid.jsonl``, ``validation.csv``, ``test.json``);
- ``owner/name`` that is no path here: a Hub dataset (``datasets.load_dataset``, with
  ``data_config``). With ``HF_HUB_OFFLINE=1`` it is read from the ``datasets`` cache a
  connected run filled, as on a plane.

Everything is cached by ``datasets`` (``HF_DATASETS_CACHE``), so a second run reads Arrow files.
A file's Arrow copy is keyed on its sha256 (computed once, also recorded as ``data_sha256``), so
an edited file is read again even when its size and modification time are those of the old one.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SoloError, UsageError, param
from .checks import check_rows
from .columns import RowSet, map_columns
from .delimited import load_csv
from .jsonl import load_json_array, load_jsonl
from .quiet import cause_of, quiet_datasets
from .spec import DataSpec

SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")  # the files solo reads rows from
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
    """The file's sha256: what names its rows (``rows_digest``, config.json's ``data_sha256``) and keys its caches."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror}); check the file and its permissions") from None
    return digest.hexdigest()


def _is_array(path: Path) -> bool:
    """Whether a ``.json`` file holds one JSON array (else JSON lines)."""
    with open(path, "rb") as handle:
        head = handle.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def files_cache(sha256: str) -> Path:
    """Where ``datasets`` keeps the Arrow copy of a file read by its builders: a folder named by the file's content."""
    from datasets import config

    return Path(config.HF_DATASETS_CACHE) / "solo-files" / sha256[:40]


def _load_parquet(path: Path, sha256: str, num_proc: int | None):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import load_dataset

    try:
        count = pq.ParquetFile(path).metadata.num_rows
    except (OSError, pa.ArrowException) as exc:
        raise UsageError(f"{path}: cannot read it as parquet ({exc}); check the file") from None
    if count == 0:
        raise UsageError(f"{path}: the file has no rows; add rows, or pass another file")
    try:
        with quiet_datasets():
            return load_dataset(
                "parquet", data_files={"train": str(path)}, split="train", num_proc=num_proc, cache_dir=str(files_cache(sha256))
            )
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read it as parquet ({cause_of(exc)}); check the file") from None
    except Exception as exc:  # datasets wraps a reader's failure in DatasetGenerationError
        if type(exc).__name__ != "DatasetGenerationError":
            raise
        raise UsageError(f"{path}: cannot read it as parquet ({cause_of(exc)}); check the file") from None


def _file_split(path: Path, spec: DataSpec, num_proc: int | None) -> RowSet:
    """The rows of one file, read by the reader its suffix names, their digest the file's sha256."""
    sha256, suffix = _sha256(path), path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        dataset = load_csv(path, "\t" if suffix == ".tsv" else ",", sha256)
        return map_columns(dataset, str(path), spec.columns, sha256)
    if suffix == ".parquet":
        return map_columns(_load_parquet(path, sha256, num_proc), str(path), spec.columns, sha256)
    if suffix == ".json" and _is_array(path):
        return load_json_array(path, sha256, spec.columns)
    return load_jsonl(path, sha256, spec.columns)


def _folder_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        split = SPLIT_FILES.get(path.stem)
        if split is None or not path.is_file() or path.suffix.lower() not in SUFFIXES:
            continue
        if split in found:
            raise UsageError(
                f"{param('data')} {folder}: {found[split].name} and {path.name} are both the {split} split; keep one"
            )
        found[split] = path
    return found


def _no_split_flags(spec: DataSpec, why: str, flags=("data_split", "valid_split", "data_config")) -> None:
    given = next((p for p in flags if getattr(spec, p)), None)
    if given:
        raise UsageError(f"{param(given)}: {why}")


def _train_files(folder: Path, spec: DataSpec) -> dict[str, Path]:
    files = _folder_files(folder)
    if spec.data_split is None and "train" not in files:
        raise UsageError(f"{param('data')} {folder}: the folder has no train.jsonl; add one or pass a .jsonl file")
    return files


def _from_files(folder: Path, spec: DataSpec, num_proc: int | None) -> SourceData:
    files = _train_files(folder, spec)
    train, valid, test = _pick(files, spec, str(folder))
    rows = {split: _file_split(path, spec, num_proc) for split, path in files.items() if split in (train, valid, test)}
    return SourceData(rows[train], rows.get(valid), rows.get(test))


def _split_named(splits: dict, name: str, flag: str, where: str) -> str:
    """The split called ``name`` in ``splits`` (a folder's ``valid`` file is also ``validation``), or an error naming
    ``flag`` and listing the splits there are."""
    for key in (name, SPLIT_FILES.get(name)):
        if key in splits:
            return key
    raise UsageError(f"{param(flag)} {name}: {where} has no such split; its splits are {list(splits)}")


def _pick(splits: dict, spec: DataSpec, where: str) -> tuple[str, str | None, str | None]:
    """Names of the train, valid and test splits in ``splits`` to train on, or an error listing those there are."""
    train = _split_named(splits, spec.data_split or "train", "data_split", where)
    if spec.valid_split:
        valid = _split_named(splits, spec.valid_split, "valid_split", where)
        if valid == train:  # valid and validation: one file of a folder
            raise UsageError(f"{param('valid_split')} {spec.valid_split}: the same split as {param('data_split')}; leave it out")
    else:
        valid = next((n for n in VALID_SPLITS if n in splits and n != train), None)
    test = "test" if "test" in splits and "test" not in (train, valid) else None
    return train, valid, test


def _from_dict(splits: dict, spec: DataSpec, where: str) -> SourceData:
    train, valid, test = _pick(splits, spec, where)

    def rows(split):
        if split is None:
            return None
        return map_columns(splits[split], f"{where}[{split}]", spec.columns, _datasets_digest(splits[split]))

    return SourceData(rows(train), rows(valid), rows(test))


def _datasets_digest(dataset) -> str:
    return dataset._fingerprint  # datasets' own id of the rows (no public accessor); its caches are keyed by it


def _load_saved(folder: Path):
    """One ``save_to_disk`` Dataset folder; an empty one (no Arrow file, where ``load_from_disk`` fails) as no rows."""
    from datasets import Dataset, DatasetInfo, load_from_disk

    try:
        empty = json.loads((folder / "state.json").read_text()).get("_data_files") == []
    except (OSError, ValueError, AttributeError):
        empty = False
    if not empty:
        return load_from_disk(str(folder))
    features = DatasetInfo.from_directory(str(folder)).features
    return Dataset.from_dict({name: [] for name in features}, features=features)


def _open_disk(folder: Path, spec: DataSpec):
    """A ``save_to_disk`` folder's ``Dataset``, or its ``DatasetDict`` as a dict of splits."""
    if spec.data_config:
        raise UsageError(f"{param('data_config')}: {folder} is a save_to_disk folder, which has no configs; leave it out")
    try:
        with quiet_datasets():
            if not (folder / "dataset_dict.json").is_file():
                return _load_saved(folder)
            splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
            return {split: _load_saved(folder / split) for split in splits}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UsageError(f"{param('data')} {folder}: cannot load the save_to_disk folder ({cause_of(exc)})") from None


def _from_disk(folder: Path, spec: DataSpec) -> SourceData:
    saved = _open_disk(folder, spec)
    if not isinstance(saved, dict):
        if spec.data_split not in (None, "train") or spec.valid_split:
            given = "data_split" if spec.data_split not in (None, "train") else "valid_split"
            raise UsageError(f"{param(given)}: {folder} holds one Dataset, not a DatasetDict of splits; leave it out")
        return SourceData(map_columns(saved, str(folder), spec.columns, _datasets_digest(saved)))
    return _from_dict(saved, spec, str(folder))


def _open_hub(repo_id: str, spec: DataSpec, num_proc: int | None) -> dict:
    """A Hub dataset's splits (``datasets.load_dataset``; offline, from the ``datasets`` cache)."""
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
    return dict(splits)


def _from_hub(repo_id: str, spec: DataSpec, num_proc: int | None) -> SourceData:
    return _from_dict(_open_hub(repo_id, spec, num_proc), spec, repo_id)


def _is_saved(folder: Path) -> bool:
    return (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file()


def is_hub_id(data: str | Path) -> bool:
    """Whether ``data``, no path here, reads as a Hub dataset id (``owner/name``, no file suffix)."""
    path = Path(data)
    return not path.exists() and bool(_HUB_ID.match(str(data))) and path.suffix.lower() not in SUFFIXES


def _kind(spec: DataSpec) -> str:
    """What ``spec.data`` is (``disk``, ``files``, ``file`` or ``hub``), refusing, reading nothing, what no source is."""
    path = Path(spec.data)
    if path.is_dir():
        if _is_saved(path):
            return "disk"
        _no_split_flags(spec, f"{path} is a folder of files, which has no configs; leave it out", ("data_config",))
        return "files"
    if path.is_file():
        _no_split_flags(spec, f"{path} is one file, the training split; leave it out")
        return "file"
    if path.exists():  # a FIFO would be read forever
        raise UsageError(f"{param('data')} {path}: not a regular file (a FIFO, socket or device); pass a .jsonl file or a folder")
    if is_hub_id(spec.data):
        return "hub"
    raise UsageError(f"{param('data')} {path}: no such file or folder; pass a .jsonl file or a folder with train.jsonl")


def check_location(spec: DataSpec) -> None:
    """Refuse a ``data`` that is no source (a missing path, a folder without train, a FIFO) without reading rows.

    The cheap check a command makes before it writes anything; :func:`load_source` makes it too.
    """
    if _kind(spec) == "files":
        _pick(_train_files(Path(spec.data), spec), spec, spec.data)  # the splits asked for are there


def _resolve(spec: DataSpec, num_proc: int | None) -> SourceData:
    kind, path = _kind(spec), Path(spec.data)
    if kind == "disk":
        return _from_disk(path, spec)
    if kind == "files":
        return _from_files(path, spec, num_proc)
    if kind == "file":
        return SourceData(_file_split(path, spec, num_proc))
    return _from_hub(str(spec.data), spec, num_proc)


def load_source(spec: DataSpec, num_proc: int | None = None) -> SourceData:
    """Load and check every split of ``spec``'s source; the first bad row raises, naming it.

    ``num_proc`` processes read multi-file sources (``datasets``' ``num_proc``). Nothing is
    tokenized here: :func:`solo_cli.data.split_encoding.encode_rowset` does that, split by split.
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


def _choose(splits: dict, spec: DataSpec, prefer: tuple[str, ...], where: str) -> str | None:
    """The split to read rows from: ``spec.data_split`` (:func:`_split_named`), else the first of ``prefer`` in
    ``splits`` (``valid``: also ``validation``)."""
    if spec.data_split:
        return _split_named(splits, spec.data_split, "data_split", where)
    for want in prefer:
        for name in (want, "validation") if want == "valid" else (want,):
            if name in splits:
                return name
    return None


def _split_file(spec: DataSpec, prefer: tuple[str, ...], name: str) -> Path | None:
    """The file that holds the split to read when ``spec.data`` is a file or a folder of files; else None."""
    path = Path(spec.data)
    if path.is_dir() and not _is_saved(path):
        _no_split_flags(spec, f"{path} is a folder of files, which has no configs; leave it out", ("data_config",))
        files = _folder_files(path)
        split = _choose(files, spec, prefer, str(path))
        if split is None:
            wanted = " or ".join(f"{p}.jsonl" for p in prefer)
            raise UsageError(f"{param(name)} {path}: the folder has no {wanted}; pass a .jsonl file")
        return files[split]
    if path.is_file():
        _no_split_flags(spec, f"{path} is one file, a single split; leave it out", ("data_split", "data_config"))
        return path
    if path.exists() and not path.is_dir():  # a FIFO would be read forever
        raise UsageError(f"{param(name)} {path}: not a regular file (a FIFO, socket or device); pass a .jsonl file or a folder")
    if not path.exists() and not is_hub_id(spec.data):
        raise UsageError(f"{param(name)} {path}: no such file or folder")
    return None


def _one_split(spec: DataSpec, prefer: tuple[str, ...], num_proc: int | None, name: str) -> RowSet:
    path = Path(spec.data)
    file = _split_file(spec, prefer, name)
    if file is not None:
        return _file_split(file, spec, num_proc)
    opened = _open_disk(path, spec) if path.is_dir() else _open_hub(str(spec.data), spec, num_proc)
    if not isinstance(opened, dict):
        _no_split_flags(spec, f"{path} holds one Dataset, not a DatasetDict of splits; leave it out", ("data_split",))
        return map_columns(opened, str(path), spec.columns, _datasets_digest(opened))
    split = _choose(opened, spec, prefer, str(spec.data))
    if split is None:
        raise UsageError(
            f"{param(name)} {spec.data}: no {' or '.join(prefer)} split (its splits are {list(opened)}); "
            f"name the split to read with {param('data_split')}"
        )
    return map_columns(opened[split], f"{spec.data}[{split}]", spec.columns, _datasets_digest(opened[split]))


def load_split(
    spec: DataSpec, prefer: tuple[str, ...] = ("test", "valid"), num_proc: int | None = None, name: str = "data"
) -> RowSet:
    """One checked split of ``spec``'s source, to read rows from (`solo eval`, `solo generate --input`).

    A file is its own rows; of a folder of files, a ``save_to_disk`` folder or a Hub dataset, the
    split ``spec.data_split``, else the first of ``prefer`` it has (``valid`` is also
    ``validation``). ``name`` is the parameter that gave ``spec.data``, as messages name it.
    """
    rows = _one_split(spec, prefer, num_proc, name)
    check_rows(rows)
    return rows


def is_source_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder rows can be read from: ``save_to_disk``, or files named for splits."""
    path = Path(path)
    return path.is_dir() and (_is_saved(path) or bool(_folder_files(path)))
