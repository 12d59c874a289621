"""Where the benchmarks find the E2E NLG data: ``$SOLO_E2E_DATA`` (a GPU machine, which gets the
checkout but not ../shared), else ../shared/data/e2e beside the checkout."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
E2E = Path(os.environ.get("SOLO_E2E_DATA") or ROOT.parent / "shared" / "data" / "e2e")


def with_root(env: dict) -> dict:
    """``env`` with the checkout first on PYTHONPATH (for ``python -m solo_cli`` subprocesses), keeping what was there."""
    return env | {"PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))}
