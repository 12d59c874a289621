"""One run at a time per run folder: ``.solo.lock`` names the process that owns the folder.

The lock is a small JSON file, ``{"pid", "host", "started"}``, created with ``O_CREAT | O_EXCL``
(so of two runs started at once exactly one gets it) before anything else is written to the folder.
A lock left by a process that is gone (same host, pid not alive: a SIGKILL, a power cut) is taken
over; one held by a live process, or by another host, is refused in one line naming it. The owner
removes it when it ends, also on errors and interrupts (and, as a last resort, at interpreter exit).
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from pathlib import Path

from ..errors import UsageError

LOCK_NAME = ".solo.lock"
_held: dict[Path, tuple[Path, str]] = {}  # resolved folder -> (lock file, the exact text this process wrote)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # OverflowError: a pid no process can have (99999999999999999999)
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    return True


def _read(lock: Path) -> tuple[str, dict | None]:
    try:
        text = lock.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return "", None
    try:
        holder = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError):
        return text, None
    ok = isinstance(holder, dict) and isinstance(holder.get("pid"), int) and isinstance(holder.get("host"), str)
    return text, holder if ok else None


def _take_over(lock: Path, seen: str) -> None:
    """Move a stale lock out of the way, unless another process replaced it meanwhile."""
    aside = lock.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:  # another process took it over first; try again
        return
    try:
        if aside.read_text(encoding="utf-8") != seen:  # a fresh lock of another process: put it back
            try:
                os.link(aside, lock)
            except FileExistsError:
                pass
    finally:
        aside.unlink(missing_ok=True)


def acquire(folder: str | os.PathLike, flag: str = "--output") -> Path:
    """Take ``folder``'s lock (the folder must exist) or raise a one-line :class:`UsageError`.

    Taking it again from the process that holds it is a no-op.
    """
    folder = Path(folder)
    lock = folder / LOCK_NAME
    key = folder.resolve()
    if key in _held and _read(lock)[0] == _held[key][1]:
        return lock
    host = socket.gethostname()
    text = json.dumps({"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    for _ in range(5):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            seen, holder = _read(lock)
            if holder is None:
                raise UsageError(
                    f"{flag} {folder}: {lock} is there but is not a lock solo can read (another run may be starting); "
                    f"if no solo run is using this folder, delete {lock}"
                ) from None
            if holder["host"] == host and not _alive(holder["pid"]):
                _take_over(lock, seen)  # its process is gone (killed): the lock is stale
                continue
            raise UsageError(
                f"{flag} {folder}: another solo run is using this folder (pid {holder['pid']} on {holder['host']}, "
                f"since {holder.get('started', '?')}; {lock}); wait for it to end or choose another folder "
                f"(if that run is gone, delete {lock})"
            ) from None
        except OSError as exc:
            raise UsageError(f"{flag} {folder}: cannot write there ({exc.strerror or exc}); choose a writable folder") from None
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
        except OSError as exc:
            lock.unlink(missing_ok=True)
            raise UsageError(f"{flag} {folder}: cannot write there ({exc.strerror or exc}); choose a writable folder") from None
        _held[key] = (lock, text)
        return lock
    raise UsageError(f"{flag} {folder}: could not take {lock}: other runs keep taking it; try again or choose another folder")


def release(folder: str | os.PathLike) -> None:
    """Remove ``folder``'s lock if this process holds it (and it is still the one this process wrote)."""
    entry = _held.pop(Path(folder).resolve(), None)
    if entry is None:
        return
    lock, text = entry
    try:
        if lock.read_text(encoding="utf-8") == text:
            lock.unlink()
    except OSError:
        pass


@atexit.register
def _release_all() -> None:
    for folder in list(_held):
        release(folder)
