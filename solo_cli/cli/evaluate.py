"""`solo eval`: loss, perplexity and generation metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from . import display
from .base import app, handle_errors
from .options import Device, Dtype, Model, Revision, TrustCode, load_target, quiet_transformers


@app.command("eval")
@handle_errors
def eval_command(
    data: Annotated[str, typer.Option(help="JSONL rows with a completion, references or messages (a folder: its test.jsonl).")],
    model: Model = None,
    adapter: Annotated[Optional[str], typer.Option(help="adapter.safetensors (or its run folder).")] = None,
    predictions: Annotated[
        Optional[Path], typer.Option(help='Score this file (JSONL with "prediction", or one per line); loads no model.')
    ] = None,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write predictions here (JSONL); metrics go beside it.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate at most.")] = 64,
    num_beams: Annotated[int, typer.Option(help="Beam search width (1 = greedy).")] = 1,
    length_penalty: Annotated[float, typer.Option(help="Beam length penalty (LoRA's E2E protocol: 0.8-0.9).")] = 1.0,
    no_repeat_ngram_size: Annotated[int, typer.Option(help="Forbid repeating n-grams of this size (0 = off).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Rows per batch.")] = 16,
    limit: Annotated[Optional[int], typer.Option(help="Only the first N prompts.")] = None,
    max_seq_length: Annotated[int, typer.Option(help="Token limit for the loss.")] = 256,
    chat: Annotated[
        Optional[bool], typer.Option("--chat/--no-chat", help="Chat template (default: as the adapter was trained).")
    ] = None,
    generate_text: Annotated[
        bool, typer.Option("--generate/--no-generate", help="Generate and score (default), or loss only.")
    ] = True,
    revision: Revision = None,
    dtype: Dtype = "float32",
    device: Device = "auto",
    trust_remote_code: TrustCode = False,
    force: Annotated[bool, typer.Option("--force", help="Attach an adapter whose base fingerprint differs.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Loss and perplexity, and generation scored with BLEU, NIST, METEOR, ROUGE-L, CIDEr and chrF.

    The loss cuts examples to min(--max-seq-length, the model's context); generation refuses a
    prompt that does not fit the context with --max-new-tokens, naming its file:line.
    """
    if predictions is None:
        quiet_transformers()
    from ..evaluation.evaluate import (
        check_max_seq_length,
        eval_set,
        load_numbered_eval_rows,
        loss_and_perplexity,
        metrics_path,
        predict,
        read_predictions,
        write_outputs,
    )
    from ..evaluation.metrics import score
    from ..files.atomic import check_writable
    from ..inference.generation import GenerationSettings
    from ..outputs import check_predictions_target, refuse_input_as_output

    settings = GenerationSettings(
        max_new_tokens=max_new_tokens,
        num_beams=num_beams,
        length_penalty=length_penalty,
        no_repeat_ngram_size=no_repeat_ngram_size,
    ).validate()  # before anything loads
    check_max_seq_length(max_seq_length)
    for flag, value in (("--batch-size", batch_size), ("--limit", limit)):
        if value is not None and value < 1:
            raise UsageError(f"{flag} {value}: must be at least 1")
    rows, fmt, where = load_numbered_eval_rows(data)
    result: dict = {"data": str(data)}
    if predictions is not None:
        if model or adapter:
            raise UsageError("--predictions scores an existing file; drop --model/--adapter (no model is loaded)")
        targets = eval_set(rows, fmt)
        if limit:
            targets.prompts, targets.references = targets.prompts[:limit], targets.references[:limit]
        preds = read_predictions(predictions, len(targets.prompts))
        result |= {"prompts": len(preds)} | score(preds, targets.references).to_dict()
        _show_eval(result, json_out)
        return
    if output is not None and output.is_dir():
        raise UsageError(f"--output {output}: is a folder; give a file path for the predictions")
    if output is not None and generate_text and fmt != "text":
        refuse_input_as_output(output, Path(data), "--data")
        check_predictions_target(output, metrics_path(output))  # solo replaces only predictions and metrics it wrote
        check_writable(output, "--output")  # predictions and metrics go there: fail before loading the model
    target = load_target(model, adapter, revision, dtype, device, trust_remote_code, force)
    lm, tokenizer = target.loaded.model, target.loaded.tokenizer
    use_chat = chat if chat is not None else bool(target.info and target.info.chat_template)
    losses = loss_and_perplexity(
        lm,
        tokenizer,
        rows,
        fmt,
        chat_template=use_chat,
        max_seq_length=max_seq_length,
        batch_size=batch_size,
        device=next(lm.parameters()).device,
    )
    result |= losses or {}
    if generate_text and fmt != "text":
        targets = eval_set(rows, fmt, where)
        if limit:
            targets.prompts, targets.references = targets.prompts[:limit], targets.references[:limit]
        with display.counter("generate", len(targets.prompts), enabled=not json_out) as advance:
            preds = predict(lm, tokenizer, targets, settings, chat=use_chat, batch_size=batch_size, on_batch=advance)
        result |= {"prompts": len(preds)} | score(preds, targets.references).to_dict()
        if output is not None:
            write_outputs(output, targets, preds, result)  # both or neither; a full disk is one line
            result["predictions"] = str(output)
    _show_eval(result, json_out)


def _show_eval(result: dict, json_out: bool) -> None:
    display.emit_json(result) if json_out else display.show_eval(result)
