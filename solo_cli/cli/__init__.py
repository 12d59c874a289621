"""The `solo` command line: a thin layer that parses flags, calls one engine function, and displays its result.

The only package that imports typer or prints. Importing it registers every command on ``app``.
"""

import os
import sys

from ..errors import caused_by_interrupt, exit_on_signals, interrupt_on_signals

# The `solo` script imports this package first: a signal while typer and rich import ends in one
# line and exit 130 (as in `python -m solo_cli`, whose __main__ does the same); main() takes over.
if os.path.basename(sys.argv[0]).removesuffix(".exe") == "solo":
    exit_on_signals()

from . import chat, evaluate, generate, inspect, merge, serve, train  # noqa: E402,F401  (each registers its command)
from .base import app, interrupted  # noqa: E402


def main() -> None:
    """The `solo` entry point: Ctrl+C or SIGTERM at any moment ends in "error: interrupted" and exit 130."""
    try:
        interrupt_on_signals()
        code = app(standalone_mode=False)
    except BaseException as exc:  # before or after a command runs (typer building the command line, say)
        if not caused_by_interrupt(exc):
            raise
        code = interrupted()
    sys.exit(code)
