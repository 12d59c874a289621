"""The adapters a server runs: names, their files, and their slots in the engine's :class:`MixedAdapters`.

An adapter is read and checked (every tensor, and its base fingerprint against the served model)
before it gets a name; an adapter trained on another base is refused, as ``solo generate`` refuses
it. Names are reserved while a load is under way, so two loads of one name cannot both succeed.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..engine.adapter import SoloAdapter
from ..engine.adapter_file import load_adapter, read_info
from ..engine.fingerprint import ArchFingerprint
from ..errors import UsageError


@dataclass
class ServedAdapter:
    name: str
    path: str
    slot: int
    created: int


def read_checked(path: str, base: ArchFingerprint, base_id: str) -> SoloAdapter:
    """The adapter at ``path``, refused (UsageError) if it was trained on another architecture than ``base``."""
    info = read_info(path)
    if info.fingerprint != base:
        raise UsageError(
            f"adapter {path} was trained on {info.base_model} ({info.fingerprint.describe()}), "
            f"but this server runs {base_id} ({base.describe()}); serve it with the model it was trained on"
        )
    adapter, _ = load_adapter(path)
    return adapter


class AdapterRegistry:
    """Name -> :class:`ServedAdapter`, safe to use from the HTTP handlers and the decode loop at once."""

    def __init__(self, base_id: str) -> None:
        self.base_id = base_id
        self._by_name: dict[str, ServedAdapter] = {}
        self._reserved: set[str] = set()
        self._lock = threading.Lock()

    def reserve(self, name: str) -> None:
        """Claim ``name`` for a load under way; a name in use (or the base's) is refused with ValueError."""
        with self._lock:
            if name == self.base_id:
                raise ValueError(f"{name!r} is the base model's id; give the adapter another name")
            if name in self._by_name or name in self._reserved:
                raise ValueError(f"an adapter named {name!r} is already loaded; unload it first or pick another name")
            self._reserved.add(name)

    def release(self, name: str) -> None:
        """Give up a reservation (the load failed)."""
        with self._lock:
            self._reserved.discard(name)

    def put(self, name: str, path: str, slot: int) -> ServedAdapter:
        with self._lock:
            self._reserved.discard(name)
            served = self._by_name[name] = ServedAdapter(name, path, slot, int(time.time()))
        return served

    def pop(self, name: str) -> ServedAdapter | None:
        with self._lock:
            return self._by_name.pop(name, None)

    def get(self, name: str) -> ServedAdapter | None:
        with self._lock:
            return self._by_name.get(name)

    def all(self) -> list[ServedAdapter]:
        with self._lock:
            return sorted(self._by_name.values(), key=lambda a: a.name)
