"""What a base model's weights are, so that a resumed run can refuse other weights under the same ``--model``.

A hub model is named by the commit its snapshot resolved to (``base_commit``: transformers puts
it in ``config._commit_hash``). A local folder (the built-in model's converted copy included) is
named by ``weights_digest``: the sha256 over its ``*.safetensors`` files, each by name and
contents. Hashing a 7B model reads 14 GB, so the sha256 of each file of 64 MiB or more is cached
beside solo's other caches (``$SOLO_CACHE/weights/``), keyed on the file's path, size, inode, mtime *and ctime*: a
copy that restores the mtime (``cp -p``, ``rsync -a``, ``tar x``) still sets a new ctime, which
no ordinary tool can set back, so an edited file is always hashed again.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..files.atomic import write_json

CHUNK = 1 << 20
CACHED_FROM = 64 << 20  # smaller files are hashed every time (a fraction of a second): no cache entry for them


def _cache_dir() -> Path:
    from .models import cache_dir  # models imports torch and transformers; only needed here, lazily

    return cache_dir() / "weights"


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _cached_sha256(path: Path) -> str:
    """``path``'s sha256, from the cache when the file's size, inode, mtime and ctime are the ones hashed."""
    path = path.resolve()
    stat = path.stat()
    if stat.st_size < CACHED_FROM:
        return _file_sha256(path)
    key = [str(path), stat.st_size, stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns]
    entry = _cache_dir() / f"{hashlib.sha256(str(path).encode()).hexdigest()[:32]}.json"
    try:
        cached = json.loads(entry.read_text(encoding="utf-8"))
        if cached.get("key") == key and isinstance(cached.get("sha256"), str):
            return cached["sha256"]
    except (OSError, ValueError, AttributeError):
        pass
    sha = _file_sha256(path)
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        write_json(entry, {"key": key, "sha256": sha})
    except OSError:  # a read-only cache: hash again next time
        pass
    return sha


def weights_digest(folder: str | Path) -> str | None:
    """sha256 over the ``*.safetensors`` files of a model folder (names and contents), or None if it holds none."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}\0{_cached_sha256(file)}\n".encode())
    return digest.hexdigest()


def base_identity(model, path: str) -> dict[str, str | None]:
    """``base_commit`` (a hub model's resolved commit) and ``weights_digest`` (a local folder's weights) of a loaded base."""
    folder = Path(path)
    if folder.is_dir():
        return {"base_commit": None, "weights_digest": weights_digest(folder)}
    commit = getattr(getattr(model, "config", None), "_commit_hash", None)
    return {"base_commit": commit if isinstance(commit, str) else None, "weights_digest": None}
