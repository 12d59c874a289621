"""Keeping ``datasets``' progress bars and log lines out of the engine's output: the engine never prints."""

from __future__ import annotations

import contextlib

from ..errors import SoloError, first_line


@contextlib.contextmanager
def quiet_datasets():
    """Within the block, ``datasets`` shows no progress bar and logs only errors; both are restored after."""
    from datasets.utils import logging
    from datasets.utils.tqdm import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    bars_were_off, verbosity = are_progress_bars_disabled(), logging.get_verbosity()
    disable_progress_bars()
    logging.set_verbosity(logging.ERROR)
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if not bars_were_off:
            enable_progress_bars()


def cause_of(exc: BaseException) -> str:
    """The innermost cause of a ``datasets`` error, as one short line (what the user can act on)."""
    seen = set()
    while exc.__cause__ is not None and id(exc) not in seen:
        seen.add(id(exc))
        exc = exc.__cause__
    line = first_line(exc, "")
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def solo_cause(exc: BaseException) -> SoloError | None:
    """The :class:`SoloError` a ``datasets`` error wraps (a row check raised inside a generator), if any."""
    cause = exc.__cause__
    while cause is not None and not isinstance(cause, SoloError):
        cause = cause.__cause__
    return cause
