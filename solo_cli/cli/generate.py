"""`solo generate`: text from a base model, with or without an adapter."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from . import display
from .base import app, handle_errors
from .flags import flag_block
from .options import (
    MaxNewTokens,
    SamplingFlags,
    SourceFlags,
    TargetFlags,
    Verbose,
    adapter_path,
    load_target,
    quiet_transformers,
)


def _read_prompt(prompt: str | None) -> str:
    if prompt == "-":
        text = sys.stdin.read().rstrip("\n")
        if not text:
            raise UsageError("the prompt is empty (stdin held no text); pipe in the prompt, or give it as an argument")
        return text
    if prompt is None:
        raise UsageError("give a prompt (or - to read stdin), or --input rows.jsonl --output preds.jsonl")
    if not prompt:
        raise UsageError('the prompt is empty (""); give the text to continue, or - to read it from stdin')
    return prompt


def _input_file(path: Path, flag: str) -> Path:
    """A file to read rows from: refuse a folder, FIFO or device (reading a FIFO would wait forever)."""
    if path.is_dir():
        raise UsageError(f"{flag} {path}: is a folder, not a regular file; pass a .jsonl file")
    if path.exists() and not path.is_file():
        raise UsageError(f"{flag} {path}: not a regular file (a FIFO, socket or device); pass a .jsonl file")
    return path


def _input_rows(input: Path, source: SourceFlags) -> tuple[list[dict], list[str]]:
    """--input's rows (each with a prompt or messages) and how messages name them (``rows.jsonl:7``)."""
    from ..data.sources import is_source_folder
    from ..data.spec import DataSpec
    from ..inference.inputs import read_inputs

    if input.exists() and not is_source_folder(input):
        _input_file(input, "--input")  # a folder of no splits, a FIFO or a device: refused as ever
    rows, where, note = read_inputs(DataSpec(input, **asdict(source)))
    if note:  # keys or columns no field uses, said once
        display.line(note, display.err)
    return rows, where


@app.command()
@handle_errors
@flag_block("source", SourceFlags)
@flag_block("sampling", SamplingFlags)
@flag_block("flags", TargetFlags)
def generate(
    prompt: Annotated[Optional[str], typer.Argument(help="The prompt, or - to read it from stdin.")] = None,
    *,
    flags: TargetFlags,
    input: Annotated[
        Optional[Path],
        typer.Option(
            "--input",
            help='Rows with "prompt" or "messages": JSONL, JSON, CSV or Parquet file, folder of splits, '
            "save_to_disk folder or Hub dataset id.",
        ),
    ] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where --input's predictions go (JSONL).")] = None,
    max_new_tokens: MaxNewTokens = 128,
    sampling: SamplingFlags,
    num_beams: Annotated[int, typer.Option(help="Beam search width, 1 to 64 (1 = off).")] = 1,
    chat: Annotated[
        Optional[bool],
        typer.Option(
            "--chat/--no-chat",
            help="Wrap the prompt in the chat template (default: as the adapter was trained; plain for a bare model).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call with --input.")] = 8,
    source: SourceFlags,
    verbose: Verbose = False,
) -> None:
    """Generate text from a base model, with or without an adapter.

    A prompt whose tokens plus --max-new-tokens exceed the model's context is refused, naming it
    (``rows.jsonl:7``, or the prompt), before anything is generated; it is never cut silently.
    """
    flags.check()
    if (input is None) != (output is None):
        raise UsageError("--input and --output go together: rows in, predictions out")
    settings = sampling.settings(max_new_tokens, num_beams=num_beams)
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be at least 1")
    rows, where, text = None, None, None
    if input:
        rows, where = _input_rows(input, source)
    else:
        text = _prompt_text(prompt)
    if output is not None:
        _check_output(output, input)
    adapter = adapter_path(flags.adapter, flags.adapter_revision)  # a Hub repo id: its cached download
    quiet_transformers()
    target = load_target(flags, adapter)
    use_chat = chat if chat is not None else bool(target.info and target.info.chat_template)
    if rows is None:
        _stream_one(target, text, settings, use_chat)
    else:
        _write_predictions(target, rows, where, settings, use_chat, batch_size, output)


def _prompt_text(prompt: str | None) -> str:
    """The prompt argument (or stdin's text), refused when it is no UTF-8 text."""
    from ..data.rows import lone_surrogate

    try:
        text = _read_prompt(prompt)
    except UnicodeDecodeError as exc:
        raise UsageError(f"stdin: not UTF-8 (byte {exc.start}); pipe in UTF-8 text") from None
    bad = lone_surrogate(text)
    if bad is not None:
        raise UsageError(f"the prompt is not valid UTF-8 text (it holds \\u{ord(bad):04x}, an undecodable byte); pass UTF-8 text")
    return text


def _check_output(output: Path, input: Path | None) -> None:
    """Refuse an --output that cannot take predictions, before the model loads."""
    from ..files.atomic import check_writable
    from ..files.outputs import check_predictions_target, refuse_input_as_output

    if output.exists() and output.is_dir():
        raise UsageError(f"--output {output}: is a folder; give a file path for the predictions")
    refuse_input_as_output(output, input, "--input")
    check_predictions_target(output)  # solo replaces only predictions it wrote
    check_writable(output, "--output")


def _stream_one(target, text: str, settings, use_chat: bool) -> None:
    """One prompt's continuation on stdout, streamed as it is written where stdout is a terminal."""
    from ..inference.generation import generate as run_generate

    stream = display.out.is_terminal and settings.num_beams == 1
    on_text = display.stream if stream else None
    lm, tokenizer = target.loaded.model, target.loaded.tokenizer
    result = run_generate(lm, tokenizer, [text], settings, chat=use_chat, on_text=on_text, where=["prompt"])[0]
    display.show_text("" if stream else result)


def _write_predictions(target, rows, where, settings, use_chat: bool, batch_size: int, output: Path) -> None:
    """--input's rows, each with its ``prediction``, written to --output as JSONL."""
    from ..files.atomic import write_texts
    from ..inference.generation import generate as run_generate
    from ..inference.inputs import prompt_of

    lm, tokenizer = target.loaded.model, target.loaded.tokenizer
    prompts = [prompt_of(r) for r in rows]
    predictions = run_generate(lm, tokenizer, prompts, settings, chat=use_chat, batch_size=batch_size, where=where)
    lines = "".join(json.dumps(r | {"prediction": p}, ensure_ascii=False) + "\n" for r, p in zip(rows, predictions))
    write_texts({output: lines}, flag="--output")  # a full disk: one line, the old file kept
    display.line(f"wrote {len(predictions)} predictions to {output}")
