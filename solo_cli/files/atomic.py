"""Atomic file writes: write to a temporary file in the same folder, then rename over the target.

A crash or a full disk midway leaves the previous file untouched and no half-written file. What is
renamed into place has the permissions the umask gives a new file, as any other tool's output.
:func:`write_texts` and :func:`check_writable` also turn write errors into one-line errors.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import secrets
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import RuntimeFailure, UsageError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success rename it onto ``target``."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        follow_umask(tmp_path)  # after the writer: one may replace the file (safetensors writes a new 0600 one)
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask, read where Linux shows it: setting it to read it would, for a moment, apply to the files
    other threads create (a TensorBoard writer during a checkpoint)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii", errors="replace")
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Umask:")), 8)
    except (OSError, StopIteration, IndexError, ValueError):
        umask = os.umask(0o077)  # elsewhere: set and put back at once (0o077 is the safe value in between)
        os.umask(umask)
        return umask


def follow_umask(path: Path) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the permissions a new file gets under the umask.

    ``mkstemp``, ``mkdtemp`` and safetensors create owner-only files (0600, folders 0700), and a rename keeps
    them: an adapter would be unreadable to a teammate, a container running as another user or a server,
    while solo's JSON files beside it were 0644. Executable files keep their execute bits, as the umask allows.
    """
    umask = _umask()
    for item in [path, *(path.rglob("*") if path.is_dir() and not path.is_symlink() else ())]:
        if item.is_symlink():
            continue
        executable = item.is_dir() or item.stat().st_mode & 0o111
        os.chmod(item, (0o777 if executable else 0o666) & ~umask)


def write_atomic(target: str | os.PathLike, writer: Callable[[Path], None]) -> None:
    """Call ``writer(tmp_path)`` and move the result onto ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)


def write_text(target: str | os.PathLike, text: str) -> None:
    write_atomic(target, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(target: str | os.PathLike, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


# Hidden names beside a target of atomic_dir: ``.NAME.XXXXXXXX.tmp`` (the new copy being written) and
# ``.NAME.XXXXXXXX.old`` (the previous copy, during a swap); XXXXXXXX is 8 characters of [a-z0-9_].
STAGING_SUFFIX, ASIDE_SUFFIX = ".tmp", ".old"


@contextlib.contextmanager
def atomic_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; on success it replaces ``target`` as a whole.

    An existing ``target`` is renamed aside first, the new folder renamed in, and only then the
    old copy deleted, so a complete copy is on disk at every moment (under the aside name between
    the two renames, which :func:`solo_cli.checkpoint.clean_staging` restores after a crash there).
    A failure while renaming in puts the old copy back.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=STAGING_SUFFIX, dir=target.parent))
    try:
        yield staging
        follow_umask(staging)
        if not (target.exists() or target.is_symlink()):
            os.replace(staging, target)
            return
        aside = target.parent / f".{target.name}.{secrets.token_hex(4)}{ASIDE_SUFFIX}"
        os.replace(target, aside)
        try:
            os.replace(staging, target)
        except BaseException:
            os.replace(aside, target)
            raise
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def is_stream(path: str | os.PathLike) -> bool:
    """A character device (/dev/null, a terminal) or a FIFO: written into as a stream, never replaced."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


def write_error(exc: Exception, target: str | os.PathLike, flag: str = "--output") -> RuntimeFailure:
    """One line for an error met while writing ``target``: a full disk, or anything else.

    ``exc`` is an OSError, or a writer's own error that carries one in its text: safetensors reports a
    full disk as ``SafetensorError("... I/O error: No space left on device (os error 28)")``.
    """
    if isinstance(exc, OSError):
        code, reason = exc.errno, exc.strerror or exc
    else:
        found = re.search(r"\(os error (\d+)\)", str(exc))
        code = int(found.group(1)) if found else None
        reason = os.strerror(code) if found else exc
    if code in (errno.ENOSPC, errno.EDQUOT):
        return RuntimeFailure(f"no space left on device writing {target}; free space or choose another {flag}")
    return RuntimeFailure(f"cannot write {target} ({reason}); choose another {flag}")


def write_texts(files: dict[Path, str], flag: str = "--output") -> None:
    """Write several text files so that a failure changes none of them.

    Every file is written under a temporary name first and only then are they renamed into
    place, so a full disk leaves the old files intact and no temporary file behind. Errors are
    one line (:class:`RuntimeFailure`) naming the file and ``flag``.
    """
    current: Path | None = None
    streams = {Path(t): text for t, text in files.items() if is_stream(t)}
    files = {Path(t): text for t, text in files.items() if Path(t) not in streams}
    try:
        for current, text in streams.items():  # a device or FIFO: write into it, never rename over it
            with open(current, "w", encoding="utf-8") as handle:
                handle.write(text)
        current = None
        with contextlib.ExitStack() as stack:  # an error unwinds every atomic_path: temporary files removed
            staged = []
            for target, text in files.items():
                current = Path(target)
                staged.append((stack.enter_context(atomic_path(target)), text))
            for (tmp, text), target in zip(staged, files):
                current = Path(target)
                tmp.write_text(text, encoding="utf-8")
            current = None  # leaving the block renames them, last file first
    except OSError as exc:
        raise write_error(exc, current if current is not None else next(iter(files)), flag) from None


def check_writable(target: str | os.PathLike, flag: str = "--output") -> None:
    """Fail now (UsageError) if a file cannot be created at ``target``, before any slow work.

    Probes the nearest existing folder on the way to ``target`` with a temporary file, as the
    write will (a folder still to be made is made then); nothing is left behind.
    """
    target = Path(target)
    if is_stream(target):
        return  # written into as it is (see write_texts)
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise UsageError(f"{flag} {target}: {folder} is a file, not a folder; choose another path")
    try:
        fd, probe = tempfile.mkstemp(prefix=".solo-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{flag} {target}: cannot write there ({exc.strerror or exc}); choose a writable folder") from None
