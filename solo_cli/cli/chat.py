"""`solo chat`: talk to a model and its adapter in the terminal, or script it through stdin."""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from ..errors import SoloError, UsageError
from . import display
from .base import app, handle_errors
from .flags import flag_block
from .options import MaxNewTokens, SamplingFlags, TargetFlags, Verbose, adapter_path, load_target, quiet_transformers

COMMAND_FLAGS = {"adapter": "/adapter"}  # an error of a chat command names the command, not the flag


@app.command()
@handle_errors
@flag_block("sampling", SamplingFlags)
@flag_block("flags", TargetFlags)
def chat(
    *,
    flags: TargetFlags,
    system: Annotated[Optional[str], typer.Option(help="The system prompt (/system changes it).")] = None,
    max_new_tokens: MaxNewTokens = 256,
    sampling: SamplingFlags,
    verbose: Verbose = False,
) -> None:
    """Chat with a model and its adapter, the reply streamed as it is written.

    The conversation is kept as long as it fits the model's context (the oldest turns are dropped,
    with a note). Commands: /reset, /system TEXT, /adapter PATH|off, /scale X, /help, /exit.
    With stdin not a terminal, every line is one message (or command) and every reply one line on
    stdout (newlines in it written as \\n), notes and errors on stderr:
    printf 'hi\\nwhat?\\n' | solo chat --adapter runs/x
    """
    flags.check()
    settings = sampling.settings(max_new_tokens)
    adapter = adapter_path(flags.adapter, flags.adapter_revision)
    quiet_transformers()
    from ..inference.chat import ChatSession

    target = load_target(flags, adapter)
    session = ChatSession(target, settings, adapter=adapter, system=system, force=flags.force)
    for note in session.notes:
        display.line(note, display.err)
    code = _converse(session) if sys.stdin.isatty() else _scripted(session)
    if code:
        raise typer.Exit(code)


def _step(session, text: str, on_text=None):
    """One line through the session: ``(outcome, 0)``, or ``(None, exit code)`` once its error is shown (the chat goes on)."""
    try:
        outcome = session.handle(text, on_text)
    except SoloError as exc:
        display.error(exc.as_flags(COMMAND_FLAGS))
        return None, exc.exit_code
    for message in outcome.warnings:
        display.warning(message)
    for note in outcome.notes:
        display.line(note, display.err)
    return outcome, 0


def _scripted(session) -> int:
    """Each line of stdin a message or a command, each reply one line on stdout; the first error's exit code, or 0."""
    code = 0
    lines = iter(sys.stdin)
    while True:
        try:
            text = next(lines, None)
        except UnicodeDecodeError as exc:
            raise UsageError(f"stdin: not UTF-8 (byte {exc.start}); pipe in UTF-8 text") from None
        if text is None:
            return code
        text = text.rstrip("\r\n")
        if not text.strip():  # a blank line is no message
            continue
        outcome, failed = _step(session, text)
        code = code or failed
        if outcome is None:
            continue
        if outcome.reply is not None:
            display.line(outcome.reply)  # one line: a newline in the reply is written \n
        if outcome.done:
            return code


def _converse(session) -> int:
    """The terminal chat: a prompt, the reply streamed, until /exit or Ctrl+D (Ctrl+C ends it as every command)."""
    try:
        import readline  # noqa: F401  (line editing and history for input(), where the platform has it)
    except ImportError:  # pragma: no cover - Windows
        pass
    name = session.target.loaded.name
    display.line(f"chat with {name}, {session.describe_adapter()}; /help for the commands, /exit or Ctrl+D to leave", display.err)
    streaming = display.out.is_terminal
    while True:
        try:
            text = display.out.input("> ")
        except EOFError:
            display.out.print()
            return 0
        if not text.strip():
            continue
        outcome, _ = _step(session, text, display.stream if streaming else None)
        if outcome is None:
            continue
        if outcome.reply is not None:
            display.show_text("" if streaming else outcome.reply)
        if outcome.done:
            return 0
