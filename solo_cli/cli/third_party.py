"""Other packages' warnings and log records: off solo's stderr, into the run folder's log, on stderr with --verbose.

solo's stderr carries solo's lines. What transformers, torch, bitsandbytes, datasets, huggingface_hub
(and what they import) say through python's ``warnings`` and ``logging`` while a command runs goes to
one :class:`ThirdParty` sink instead (:func:`captured`, which :func:`~solo_cli.cli.base.handle_errors`
opens around every command). The sink holds those lines until `solo train` starts writing its run
folder, then appends them to its ``third_party.log`` (:func:`write_to`); under ``--verbose`` it also
shows each on stderr. A record of level ERROR or above is shown on stderr in any case: nothing that
explains a failure is lost.

Several packages print through handlers of their own (transformers, torch, datasets and huggingface_hub
attach a stderr handler to their loggers when they are imported): :func:`route` sets those handlers
aside, for the length of the command, so that their records reach the sink too. It runs when the
command starts and again once the heavy packages are imported (:func:`solo_cli.cli.options.quiet_transformers`).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import deque
from collections.abc import Callable, Iterator

from ..errors import SoloError
from . import display

LOG_FORMAT = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
OWN = "solo_cli"  # solo's own loggers are not third-party
HELD = 10_000  # lines held for a log that may never come (eval, generate): the newest are kept


class ThirdParty(logging.Handler):
    """The sink of one command: other packages' log records (a handler on the root logger) and warnings."""

    def __init__(self, verbose: bool = False) -> None:
        super().__init__(logging.WARNING)
        self.setFormatter(LOG_FORMAT)
        self.verbose = verbose
        self.pending: deque[str] = deque(maxlen=HELD)  # lines kept until write_to gives them a file
        self.writer: Callable[[str], bool] | None = None
        self.set_aside: list[tuple[logging.Logger, logging.Handler, int]] = []  # (logger, console handler, its place)
        self.propagating: list[logging.Logger] = []  # loggers that did not propagate before route()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == OWN or record.name.startswith(OWN + "."):
            return
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is shown as logging would
            self.handleError(record)
            return
        shown = self.verbose or record.levelno >= logging.ERROR  # an error is never only in a file
        self.keep(text, f"{record.name}: {record.getMessage()}" if shown else None)

    def showwarning(self, message, category, filename, lineno, file=None, line=None) -> None:
        """``warnings.showwarning`` while the command runs: a warning is a line of the log."""
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip("\n")
        self.keep(text, f"{category.__name__}: {message} ({filename}:{lineno})" if self.verbose else None)

    def keep(self, text: str, shown: str | None) -> None:
        """``text`` into the log (held until there is one); ``shown`` (if any) on stderr."""
        self.pending.append(text + "\n")
        self.flush()
        if shown is not None:
            display.third_party(shown)

    def write_to(self, writer: Callable[[str], bool]) -> None:
        """From now on lines go to ``writer``, the lines held so far first. ``writer(text)`` appends ``text`` to the
        log, or returns False while there is none yet (the lines are then held and offered again)."""
        self.writer = writer
        self.flush()

    def flush(self) -> None:
        if self.writer is not None and self.pending and self.writer("".join(self.pending)):
            self.pending.clear()

    def route(self) -> None:
        """Set aside the console handlers other packages attached to their loggers, so their records reach the root."""
        for logger in list(logging.Logger.manager.loggerDict.values()):
            if not isinstance(logger, logging.Logger) or logger.name == OWN or logger.name.startswith(OWN + "."):
                continue
            console = [(n, h) for n, h in enumerate(logger.handlers) if _is_console(h)]
            for index, handler in reversed(console):
                logger.removeHandler(handler)
                self.set_aside.append((logger, handler, index))
            if console and not logger.propagate:
                logger.propagate = True
                self.propagating.append(logger)

    def restore(self) -> None:
        """Put back what :meth:`route` set aside, each handler where it was."""
        for logger, handler, index in reversed(self.set_aside):
            logger.handlers.insert(index, handler)
        for logger in self.propagating:
            logger.propagate = False
        self.set_aside.clear()
        self.propagating.clear()


def _is_console(handler: logging.Handler) -> bool:
    """A handler that prints (to stderr or stdout), as opposed to one writing a file or feeding a test's capture."""
    return type(handler) is logging.StreamHandler


_current: list[ThirdParty] = []  # the sink of the command running (a stack: commands do not nest, tests may)


@contextlib.contextmanager
def captured(verbose: bool = False) -> Iterator[ThirdParty]:
    """Within the block, other packages' warnings and log records go to one :class:`ThirdParty` sink."""
    sink = ThirdParty(verbose)
    root = logging.getLogger()
    root.addHandler(sink)
    shown = warnings.showwarning
    warnings.showwarning = sink.showwarning
    _current.append(sink)
    sink.route()
    try:
        yield sink
    finally:
        with contextlib.suppress(SoloError):  # a full disk at the very end: the command's own outcome stands
            sink.flush()  # what was held until the log existed (a run's load-time warnings)
        _current.remove(sink)
        warnings.showwarning = shown
        root.removeHandler(sink)
        sink.restore()


def route() -> None:
    """Set aside the console handlers of packages imported since the command started (see :meth:`ThirdParty.route`)."""
    if _current:
        _current[-1].route()


def write_to(writer: Callable[[str], bool]) -> None:
    """Send the running command's third-party lines to ``writer`` from now on (`solo train`: the run folder's log)."""
    if _current:
        _current[-1].write_to(writer)
