"""`solo eval`: loss, perplexity and generation metrics."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer

from . import display
from .base import app, handle_errors
from .options import (
    AdapterRevision,
    ChosenColumn,
    CompletionColumn,
    DataConfig,
    DataSplit,
    Device,
    Dtype,
    MessagesColumn,
    Model,
    PromptColumn,
    Quantize,
    RejectedColumn,
    Revision,
    TextColumn,
    TrustCode,
    Verbose,
    adapter_path,
    check_like_train,
    load_target,
    quiet_transformers,
)


@app.command("eval")
@handle_errors
def eval_command(
    data: Annotated[
        str,
        typer.Option(
            help="Rows with a completion, references or messages: JSONL, JSON, CSV or Parquet file, folder "
            "(its test split), save_to_disk folder or Hub dataset id."
        ),
    ],
    data_config: DataConfig = None,
    data_split: DataSplit = None,
    text_column: TextColumn = None,
    prompt_column: PromptColumn = None,
    completion_column: CompletionColumn = None,
    messages_column: MessagesColumn = None,
    chosen_column: ChosenColumn = None,
    rejected_column: RejectedColumn = None,
    model: Model = None,
    adapter: Annotated[
        Optional[str], typer.Option(help="adapter.safetensors, its run folder, or a Hub repo id (user/name).")
    ] = None,
    adapter_revision: AdapterRevision = None,
    predictions: Annotated[
        Optional[Path], typer.Option(help='Score this file (JSONL with "prediction", or one per line); loads no model.')
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            help="Write the generated predictions here (JSONL), metrics beside it; needs generation, so not with "
            "--no-generate, --predictions or text rows.",
        ),
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate at most.")] = 64,
    num_beams: Annotated[int, typer.Option(help="Beam search width, 1 to 64 (1 = greedy).")] = 1,
    length_penalty: Annotated[float, typer.Option(help="Beam length penalty (LoRA's E2E protocol: 0.8-0.9).")] = 1.0,
    no_repeat_ngram_size: Annotated[int, typer.Option(help="Forbid repeating n-grams of this size (0 = off).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Rows per batch.")] = 16,
    limit: Annotated[
        Optional[int], typer.Option(help="Only the first N prompts: their rows, for the loss too (text rows: the first N).")
    ] = None,
    max_seq_length: Annotated[int, typer.Option(help="Token limit for the loss.")] = 256,
    chat: Annotated[
        Optional[bool], typer.Option("--chat/--no-chat", help="Chat template (default: as the adapter was trained).")
    ] = None,
    generate_text: Annotated[
        bool, typer.Option("--generate/--no-generate", help="Generate and score (default), or loss only.")
    ] = True,
    revision: Revision = None,
    dtype: Dtype = "auto",
    quantize: Quantize = "none",
    device: Device = "auto",
    trust_remote_code: TrustCode = False,
    force: Annotated[bool, typer.Option("--force", help="Attach an adapter whose base fingerprint differs.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: Verbose = False,
) -> None:
    """Loss and perplexity, and generation scored with BLEU, NIST, METEOR, ROUGE-L, CIDEr and chrF.

    The loss cuts examples to min(--max-seq-length, the model's context); generation refuses a
    prompt that does not fit the context with --max-new-tokens, naming its file:line.
    """
    from ..evaluation.config import EvalConfig
    from ..evaluation.evaluate import evaluate
    from ..inference.generation_settings import GenerationSettings

    settings = GenerationSettings(
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        length_penalty=length_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
    )
    config = EvalConfig(
        data=data,
        predictions=predictions,
        output=output,
        settings=settings,
        batch_size=batch_size,
        limit=limit,
        max_seq_length=max_seq_length,
        chat=chat,
        generate=generate_text,
        data_config=data_config,
        data_split=data_split,
        text_column=text_column,
        prompt_column=prompt_column,
        completion_column=completion_column,
        messages_column=messages_column,
        chosen_column=chosen_column,
        rejected_column=rejected_column,
    ).validate()  # every flag's value, before anything is read, fetched or imported
    check_like_train(dtype=dtype, device=device, quantize=quantize)
    adapter = adapter_path(adapter, adapter_revision)  # a Hub repo id: its cached download
    load = None  # scoring a predictions file loads no model (and imports no torch)
    if predictions is None or model or adapter:
        load = functools.partial(_load, model, adapter, revision, dtype, device, trust_remote_code, force, quantize)
    result = evaluate(config, load, counter=functools.partial(display.counter, enabled=not json_out)).to_dict()
    display.emit_json(result) if json_out else display.show_eval(result, _title(result))


def _title(result: dict) -> str:
    """What was scored, on which split: ``eval: e2e/test.jsonl (8 of 50 rows, 8 prompts)``."""
    rows, every = result["rows"], result["rows_in_split"]
    scored = f"{rows} rows" if rows == every else f"{rows} of {every} rows"
    return f"eval: {result['split']} ({scored}" + (f", {result['prompts']} prompts)" if "prompts" in result else ")")


def _load(*args):
    """The model to evaluate, once every flag and row is checked (torch and transformers are imported here)."""
    quiet_transformers()
    return load_target(*args)
