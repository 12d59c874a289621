"""The `solo` Typer app and how every command ends: one line on stderr and an exit code.

The command modules (train, generate, inspect, evaluate, merge) register themselves on ``app``;
``solo_cli.cli`` imports them all.
"""

from __future__ import annotations

import functools
import sys
from typing import Annotated

import typer
from typer.core import TyperGroup

from .. import __version__
from ..errors import SoloError, caused_by_interrupt
from . import display, third_party

try:  # typer >= 0.22 ships its own copy of click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - older typer uses click itself
    from click import exceptions as click_errors


def _usage_line(exc) -> str:
    """A click usage error (missing option, bad value, unknown option or command) as one line."""
    message = " ".join(exc.format_message().split()).rstrip(".")
    message = message[:1].lower() + message[1:]
    where = exc.ctx.command_path if exc.ctx is not None else "solo"
    return f"{message} (see {where} --help)"


class SoloGroup(TyperGroup):
    """Every way a command ends: an exit code, and for a problem one line on stderr.

    Replaces typer's own ending, which draws usage errors as boxes and ends an interrupt
    silently: usage errors (missing option, bad value) are one line and exit 2, engine errors
    their own line and code, an interrupt (Ctrl+C, SIGTERM) "interrupted" and exit 130.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        extra.pop("windows_expand_args", None)
        code = self._run(sys.argv[1:] if args is None else list(args), prog_name or "solo", extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(self, args: list[str], prog_name: str, extra: dict) -> int:
        try:
            with self.make_context(prog_name, args, **extra) as ctx:
                self.invoke(ctx)
            return 0
        except typer.Exit as exc:
            return exc.exit_code
        except getattr(click_errors, "NoArgsIsHelpError", ()) as exc:  # bare `solo`: the help
            display.err.print(exc.format_message(), soft_wrap=True)
            return 2
        except click_errors.UsageError as exc:
            display.error(_usage_line(exc))
            return 2
        except click_errors.ClickException as exc:
            display.error(exc.format_message())
            return exc.exit_code
        except SoloError as exc:
            display.error(exc.as_flags())
            return exc.exit_code
        except (KeyboardInterrupt, typer.Abort):
            return interrupted()
        except Exception as exc:
            if caused_by_interrupt(exc):
                return interrupted()
            raise


def interrupted() -> int:
    display.error("interrupted")
    return 130


app = typer.Typer(
    name="solo",
    cls=SoloGroup,
    help="Parameter-efficient fine-tuning of causal LMs with Solo Connection (low-rank long skip connections).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,  # plain help: readable at 80 columns, and [brackets] in it are printed as written
)


def handle_errors(command):
    """Turn engine errors into one red line and an exit code: usage 2, runtime 1, interrupt 130.

    While the command runs, other packages' warnings and log records go to :mod:`.third_party`'s sink, not
    to stderr; a command's ``--verbose`` option (:data:`.options.Verbose`) is taken here, to show them too.
    """

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        verbose = bool(kwargs.pop("verbose", False))
        with third_party.captured(verbose):
            return _ended(command, args, kwargs)

    return wrapper


def _ended(command, args, kwargs):
    """``command(*args, **kwargs)``, its SoloError one line and its exit code, an interrupt exit 130."""
    try:
        return command(*args, **kwargs)
    except SoloError as exc:
        display.error(exc.as_flags())
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(interrupted()) from None
    except Exception as exc:
        if caused_by_interrupt(exc):  # an interrupt wrapped into another error
            raise typer.Exit(interrupted()) from None
        raise


def _version(value: bool) -> None:
    if value:
        display.out.print(f"solo {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """solo: Solo Connection adapters for any Hugging Face causal LM."""
