"""`solo eval`: loss, perplexity and generation metrics."""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..inference.generation_settings import GenerationSettings  # torch-free
from . import display
from .base import app, handle_errors
from .flags import flag_block
from .options import MaxNewTokens, SourceFlags, TargetFlags, Verbose, adapter_path, load_target, quiet_transformers


@dataclass(frozen=True)
class EvalSourceFlags(SourceFlags):
    """A source's config, split and columns, and the columns of preference pairs (scored for pair accuracy)."""

    chosen_column: Annotated[Optional[str], typer.Option(help="Column holding the preferred replies (default chosen).")] = None
    rejected_column: Annotated[Optional[str], typer.Option(help="Column holding the rejected replies (default rejected).")] = None


@dataclass(frozen=True)
class EvalGenerationFlags:
    """How `solo eval` generates: GenerationSettings' fields of the same names (greedy, or beam search)."""

    max_new_tokens: MaxNewTokens = 64
    num_beams: Annotated[int, typer.Option(help="Beam search width, 1 to 64 (1 = greedy).")] = 1
    length_penalty: Annotated[float, typer.Option(help="Beam length penalty (LoRA's E2E protocol: 0.8-0.9).")] = 1.0
    no_repeat_ngram_size: Annotated[int, typer.Option(help="Forbid repeating n-grams of this size (0 = off).")] = 0

    def settings(self) -> GenerationSettings:
        return GenerationSettings(**asdict(self))  # checked with every other flag, by EvalConfig.validate


@app.command("eval")
@handle_errors
@flag_block("source", EvalSourceFlags)
@flag_block("generation", EvalGenerationFlags)
@flag_block("flags", TargetFlags)
def eval_command(
    *,
    data: Annotated[
        str,
        typer.Option(
            help="Rows with a completion, references or messages: JSONL, JSON, CSV or Parquet file, folder "
            "(its test split), save_to_disk folder or Hub dataset id."
        ),
    ],
    source: EvalSourceFlags,
    flags: TargetFlags,
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
    generation: EvalGenerationFlags,
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
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    verbose: Verbose = False,
) -> None:
    """Loss and perplexity, and generation scored with BLEU, NIST, METEOR, ROUGE-L, CIDEr and chrF.

    The loss cuts examples to min(--max-seq-length, the model's context); generation refuses a
    prompt that does not fit the context with --max-new-tokens, naming its file:line.
    """
    from ..evaluation.config import EvalConfig

    config = EvalConfig(
        data=data,
        predictions=predictions,
        output=output,
        settings=generation.settings(),
        batch_size=batch_size,
        limit=limit,
        max_seq_length=max_seq_length,
        chat=chat,
        generate=generate_text,
        **asdict(source),
    ).validate()  # every flag's value, before anything is read, fetched or imported
    result = _evaluate(config, flags, json_out)
    display.emit_json(result) if json_out else display.show_eval(result, _title(result))


def _evaluate(config, flags: TargetFlags, json_out: bool) -> dict:
    """The evaluation's report, the model loaded only once every flag and row is checked, and only where one is
    needed: scoring a predictions file loads none (and imports no torch) unless --model or --adapter asks for it."""
    from ..evaluation.evaluate import evaluate

    flags.check()
    adapter = adapter_path(flags.adapter, flags.adapter_revision)  # a Hub repo id: its cached download
    load = None
    if config.predictions is None or flags.model or adapter:
        load = functools.partial(_load, flags, adapter)
    return evaluate(config, load, counter=functools.partial(display.counter, enabled=not json_out)).to_dict()


def _title(result: dict) -> str:
    """What was scored, on which split: ``eval: e2e/test.jsonl (8 of 50 rows, 8 prompts)``."""
    rows, every = result["rows"], result["rows_in_split"]
    scored = f"{rows} rows" if rows == every else f"{rows} of {every} rows"
    return f"eval: {result['split']} ({scored}" + (f", {result['prompts']} prompts)" if "prompts" in result else ")")


def _load(*args):
    """The model to evaluate, once every flag and row is checked (torch and transformers are imported here)."""
    quiet_transformers()
    return load_target(*args)
