"""`solo generate`: text from a base model, with or without an adapter."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from . import display
from .base import app, handle_errors
from .options import (
    AdapterRevision,
    CompletionColumn,
    DataConfig,
    DataSplit,
    Device,
    Dtype,
    Force,
    MaxNewTokens,
    MessagesColumn,
    Model,
    PromptColumn,
    Quantize,
    Revision,
    Seed,
    Stop,
    Temperature,
    TextColumn,
    TopK,
    TopP,
    TrustCode,
    Verbose,
    adapter_path,
    check_like_train,
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


def _input_rows(spec) -> tuple[list[dict], list[str]]:
    """--input's rows (each with a prompt or messages) and how messages name them (``rows.jsonl:7``)."""
    from ..data.sources import is_source_folder
    from ..inference.inputs import read_inputs

    path = Path(spec.data)
    if path.exists() and not is_source_folder(path):
        _input_file(path, "--input")  # a folder of no splits, a FIFO or a device: refused as ever
    rows, where, note = read_inputs(spec)
    if note:  # keys or columns no field uses, said once
        display.line(note, display.err)
    return rows, where


@app.command()
@handle_errors
def generate(
    prompt: Annotated[Optional[str], typer.Argument(help="The prompt, or - to read it from stdin.")] = None,
    model: Model = None,
    adapter: Annotated[
        Optional[str], typer.Option(help="adapter.safetensors, its run folder, or a Hub repo id (user/name).")
    ] = None,
    adapter_revision: AdapterRevision = None,
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
    temperature: Temperature = 0.0,
    top_p: TopP = 1.0,
    top_k: TopK = 0,
    num_beams: Annotated[int, typer.Option(help="Beam search width, 1 to 64 (1 = off).")] = 1,
    seed: Seed = 0,
    stop: Stop = None,
    chat: Annotated[
        Optional[bool],
        typer.Option(
            "--chat/--no-chat",
            help="Wrap the prompt in the chat template (default: as the adapter was trained; plain for a bare model).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call with --input.")] = 8,
    revision: Revision = None,
    dtype: Dtype = "auto",
    quantize: Quantize = "none",
    device: Device = "auto",
    trust_remote_code: TrustCode = False,
    force: Force = False,
    data_config: DataConfig = None,
    data_split: DataSplit = None,
    text_column: TextColumn = None,
    prompt_column: PromptColumn = None,
    completion_column: CompletionColumn = None,
    messages_column: MessagesColumn = None,
    verbose: Verbose = False,
) -> None:
    """Generate text from a base model, with or without an adapter.

    A prompt whose tokens plus --max-new-tokens exceed the model's context is refused, naming it
    (``rows.jsonl:7``, or the prompt), before anything is generated; it is never cut silently.
    """
    from ..data.rows import lone_surrogate
    from ..data.spec import DataSpec
    from ..files.atomic import check_writable, write_texts
    from ..files.outputs import check_predictions_target, refuse_input_as_output
    from ..inference.generation_settings import GenerationSettings  # torch-free: the flags are checked first

    check_like_train(dtype=dtype, device=device, quantize=quantize)
    if (input is None) != (output is None):
        raise UsageError("--input and --output go together: rows in, predictions out")
    settings = GenerationSettings(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        num_beams=num_beams,
        seed=seed,
        stop=list(stop or []),
    ).validate()  # before anything loads
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size}: must be at least 1")
    rows, where, text = None, None, None
    if input:
        columns = (text_column, prompt_column, completion_column, messages_column)
        rows, where = _input_rows(DataSpec(input, data_config, data_split, None, *columns))
    else:
        try:
            text = _read_prompt(prompt)
        except UnicodeDecodeError as exc:
            raise UsageError(f"stdin: not UTF-8 (byte {exc.start}); pipe in UTF-8 text") from None
        bad = lone_surrogate(text)
        if bad is not None:
            raise UsageError(
                f"the prompt is not valid UTF-8 text (it holds \\u{ord(bad):04x}, an undecodable byte); pass UTF-8 text"
            )
    if output is not None:
        if output.exists() and output.is_dir():
            raise UsageError(f"--output {output}: is a folder; give a file path for the predictions")
        refuse_input_as_output(output, input, "--input")
        check_predictions_target(output)  # solo replaces only predictions it wrote
        check_writable(output, "--output")  # fail before loading the model
    adapter = adapter_path(adapter, adapter_revision)  # a Hub repo id: its cached download
    quiet_transformers()
    from ..inference.generation import generate as run_generate

    target = load_target(model, adapter, revision, dtype, device, trust_remote_code, force, quantize)
    use_chat = chat if chat is not None else bool(target.info and target.info.chat_template)
    tokenizer, lm = target.loaded.tokenizer, target.loaded.model
    if rows is None:
        stream = display.out.is_terminal and num_beams == 1
        on_text = display.stream if stream else None
        result = run_generate(lm, tokenizer, [text], settings, chat=use_chat, on_text=on_text, where=["prompt"])[0]
        display.show_text("" if stream else result)
        return
    from ..inference.inputs import prompt_of

    prompts = [prompt_of(r) for r in rows]
    predictions = run_generate(lm, tokenizer, prompts, settings, chat=use_chat, batch_size=batch_size, where=where)
    lines = "".join(json.dumps(r | {"prediction": p}, ensure_ascii=False) + "\n" for r, p in zip(rows, predictions))
    write_texts({output: lines}, flag="--output")  # a full disk: one line, the old file kept
    display.line(f"wrote {len(predictions)} predictions to {output}")
