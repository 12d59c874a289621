"""The one exception type the engine raises for problems a user can fix."""

from __future__ import annotations

_MARK = "\x1f"  # around a parameter's name inside an error's text (a control character no message contains)


def param(name: str) -> str:
    """How an engine error names one of its parameters: ``param("max_seq_length")``.

    The library shows it as the parameter (``max_seq_length``); the CLI, through
    :meth:`SoloError.as_flags`, as the flag that sets it (``--max-seq-length``).
    """
    return f"{_MARK}{name}{_MARK}"


def _render(text: str, show) -> str:
    parts = text.split(_MARK)
    return "".join(show(part) if i % 2 else part for i, part in enumerate(parts))


def first_line(exc: BaseException, empty: str | None = None) -> str:
    """The first line of ``exc``'s message, for a one-line error to quote; ``empty`` (default: the exception's type
    name) when the message is blank."""
    lines = str(exc).strip().splitlines()
    if lines:
        return lines[0]
    return type(exc).__name__ if empty is None else empty


class SoloError(Exception):
    """A problem with the user's input or environment, phrased as one line that says what to do.

    ``exit_code`` follows the CLI convention: 2 for a usage error (bad flag, bad file),
    1 for a runtime failure. Parameters are named with :func:`param`: ``message`` shows them
    as parameter names, :meth:`as_flags` as command-line flags.
    """

    def __init__(self, message: str, exit_code: int = 2) -> None:
        self.text = message  # with the parameter marks: wrap it as f"...{exc.text}" to keep them
        self.message = _render(message, lambda name: name)
        super().__init__(self.message)
        self.exit_code = exit_code

    def as_flags(self, flags: dict[str, str] | None = None) -> str:
        """The message with every parameter shown as its flag (``flags`` names those not spelt ``--the-name``)."""
        flags = flags or {}
        return _render(self.text, lambda name: flags.get(name, "--" + name.replace("_", "-")))


class UsageError(SoloError):
    """Bad flags, files or values: exit code 2."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=2)


class RuntimeFailure(SoloError):
    """Something failed while running (out of memory, NaN loss, disk): exit code 1."""

    def __init__(self, message: str) -> None:
        super().__init__(message, exit_code=1)


# Signals. SIGTERM (sent by `kill`, schedulers and containers) is treated exactly like Ctrl+C: it
# raises KeyboardInterrupt, which every command turns into one line, "error: interrupted", and exit
# code 130 (training first writes a checkpoint and says how to resume).


class SignalInterrupt(KeyboardInterrupt):
    """What SIGINT and SIGTERM raise: caught as KeyboardInterrupt everywhere.

    A subclass, not KeyboardInterrupt itself: CPython marks the process as "killed by Ctrl+C" when
    a plain KeyboardInterrupt passes out of code run by exec() (dataclasses and namedtuples are
    built that way while modules import), even if it is caught later, and then ends the process
    with SIGINT instead of exit code 130.
    """


_unwinding = [False]  # an interrupt was raised and is on its way up


def interrupt_on_signals() -> None:
    """SIGINT and SIGTERM raise :class:`SignalInterrupt`; repeats are ignored while it unwinds.

    A signal handler's exception lands wherever Python happens to be. In a ``__del__`` or a
    weakref callback Python prints "Exception ignored" and carries on, so the interrupt would be
    lost: the unraisable hook catches that case and, from another thread a moment later (so that
    it lands outside the code that swallowed it), raises it again.
    """
    import _thread
    import signal
    import sys
    import threading

    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        return

    def interrupt(signum, frame):
        if _unwinding[0]:
            return
        _unwinding[0] = True
        raise SignalInterrupt

    previous_hook = sys.unraisablehook

    def unraisable(info):
        if isinstance(info.exc_value, KeyboardInterrupt):  # swallowed: deliver it again
            _unwinding[0] = False
            again = threading.Timer(0.01, _thread.interrupt_main, (signal.SIGINT,))
            again.daemon = True
            again.start()
            return
        previous_hook(info)

    sys.unraisablehook = unraisable
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupt)


def caused_by_interrupt(exc: BaseException | None) -> bool:
    """Whether ``exc`` is an interrupt or was raised because of one.

    Python 3.11 wraps an exception raised while a class is built (``__set_name__``) in a
    RuntimeError, so an interrupt during an import can arrive dressed as one.
    """
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def exit_on_signals() -> None:
    """Before the command line is imported (`python -m solo_cli`): a signal prints the line and exits 130.

    Nothing has been written yet, so the process ends at once (``os._exit``): an exception raised
    here could be swallowed by the import machinery or wrapped into another.
    """
    import os
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return

    def leave(signum, frame):
        os.write(2, b"error: interrupted\n")
        os._exit(130)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, leave)
