"""The `solo` command line: parses flags, calls one engine function, hands the result to display.

The only module that imports typer. Errors become one line on stderr and an exit code here.
"""

from __future__ import annotations

import functools
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Annotated, Optional

from ..errors import SoloError, UsageError, caused_by_interrupt, exit_on_signals, interrupt_on_signals

# The `solo` script imports this module first: a signal while typer and rich import ends in one
# line and exit 130 (as in `python -m solo_cli`, whose __main__ does the same); main() takes over.
if os.path.basename(sys.argv[0]).removesuffix(".exe") == "solo":
    exit_on_signals()

import typer  # noqa: E402
from typer.core import TyperGroup  # noqa: E402

from .. import __version__  # noqa: E402
from . import display  # noqa: E402

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
            display.error(exc.message)
            return exc.exit_code
        except (KeyboardInterrupt, typer.Abort):
            return _interrupted()
        except Exception as exc:
            if caused_by_interrupt(exc):
                return _interrupted()
            raise


def _interrupted() -> int:
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
    """Turn engine errors into one red line and an exit code: usage 2, runtime 1, interrupt 130."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except SoloError as exc:
            display.error(exc.message)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            raise typer.Exit(_interrupted()) from None
        except Exception as exc:
            if caused_by_interrupt(exc):  # an interrupt wrapped into another error
                raise typer.Exit(_interrupted()) from None
            raise

    return wrapper


def _version(value: bool) -> None:
    if value:
        display.out.print(f"solo {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")] = False,
) -> None:
    """solo: Solo Connection adapters for any Hugging Face causal LM."""


def _quiet_transformers() -> None:
    """transformers' own progress bars and advice would drown the output of a CLI (imported only when needed)."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


Model = Annotated[Optional[str], typer.Option("--model", "-m", help="Built-in name (smollm2-135m), model folder or hub id.")]
Revision = Annotated[Optional[str], typer.Option(help="Hub revision (branch, tag or commit) of --model.")]
TrustCode = Annotated[
    Optional[bool], typer.Option("--trust-remote-code", help="Run code shipped with a hub model (off unless asked).")
]
Dtype = Annotated[Optional[str], typer.Option(help="float32, bfloat16 or float16.")]
Device = Annotated[Optional[str], typer.Option(help="auto, cpu, cuda, cuda:N or mps.")]


SEED_MAX = 2**32 - 1  # numpy's and transformers' set_seed accept no more


def _seed_in_range(value: int | None) -> int | None:
    """--seed out of 0..2**32-1: one error line and exit 2 while parsing, before anything loads.

    (typer's own ``min``/``max`` would print a multi-line usage box instead of solo's one line.)
    """
    if value is not None and not 0 <= value <= SEED_MAX:
        raise UsageError(f"--seed {value}: must be between 0 and {SEED_MAX} (2**32 - 1); pick a seed in that range")
    return value


def _rank_at_least_1(value: int | None) -> int | None:
    """--rank below 1: one error line and exit 2 while parsing (before any adapter is read)."""
    if value is not None and value < 1:
        raise UsageError(f"--rank {value}: must be at least 1 (the rank of every merged connection)")
    return value


@app.command()
@handle_errors
def train(
    data: Annotated[
        Optional[str], typer.Option(help="JSONL file, or a folder with train.jsonl [valid.jsonl test.jsonl].")
    ] = None,
    model: Model = None,
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="Run folder (default runs/solo).")] = None,
    connections: Annotated[Optional[str], typer.Option(help="top:N[:S], mirror[:N], chain:K or '3->9,5->11' (emb = -1).")] = None,
    rank: Annotated[Optional[int], typer.Option(help="Rank of every connection.")] = None,
    gate: Annotated[Optional[str], typer.Option(help="Homotopy gate: schedule (t ramps 0->1) or zero-init (B = 0).")] = None,
    source_norm: Annotated[Optional[str], typer.Option(help="Normalise each source h_i before A: rms (default) or none.")] = None,
    homotopy_steps: Annotated[Optional[int], typer.Option(help="Steps of the 0->1 ramp for --gate schedule.")] = None,
    max_steps: Annotated[Optional[int], typer.Option(help="Optimizer steps (overrides --epochs).")] = None,
    epochs: Annotated[Optional[float], typer.Option(help="Passes over the training data.")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Examples per micro-batch.")] = None,
    grad_accum: Annotated[Optional[int], typer.Option(help="Micro-batches per optimizer step.")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Peak learning rate.")] = None,
    warmup: Annotated[Optional[int], typer.Option(help="Linear warm-up steps.")] = None,
    schedule: Annotated[Optional[str], typer.Option(help="Learning-rate schedule: linear, cosine or constant.")] = None,
    weight_decay: Annotated[Optional[float], typer.Option(help="AdamW weight decay on A and B.")] = None,
    label_smoothing: Annotated[Optional[float], typer.Option(help="Label smoothing of the loss.")] = None,
    max_seq_length: Annotated[Optional[int], typer.Option(help="Tokens per example (longer ones are cut).")] = None,
    eval_every: Annotated[Optional[int], typer.Option(help="Validate every N steps (default: 5 times per run).")] = None,
    save_every: Annotated[Optional[int], typer.Option(help="Checkpoint every N steps (default: --eval-every).")] = None,
    seed: Annotated[
        Optional[int], typer.Option(help="Random seed (init and data order), 0 to 2**32 - 1.", callback=_seed_in_range)
    ] = None,
    dtype: Dtype = None,
    device: Device = None,
    grad_checkpoint: Annotated[
        Optional[bool], typer.Option("--grad-checkpoint", help="Recompute activations to save memory.")
    ] = None,
    train_on_prompt: Annotated[Optional[bool], typer.Option("--train-on-prompt", help="Take loss on prompt tokens too.")] = None,
    chat_template: Annotated[
        Optional[bool],
        typer.Option(
            "--chat-template/--no-chat-template",
            help="Use the tokenizer's chat template for prompt/completion rows (default: when it has one).",
        ),
    ] = None,
    revision: Revision = None,
    trust_remote_code: TrustCode = None,
    overwrite: Annotated[Optional[bool], typer.Option("--overwrite", help="Replace a run already in --output.")] = None,
    resume: Annotated[
        Optional[str], typer.Option(help="Continue from 'auto' (the newest checkpoint in --output) or a checkpoint folder.")
    ] = None,
    keep_checkpoints: Annotated[Optional[int], typer.Option(help="Keep only the newest N checkpoints.")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML file of options; flags override it.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show config, data statistics and the first example's mask, then exit.")
    ] = False,
) -> None:
    """Train a Solo adapter on a JSONL dataset."""
    flags = {k: v for k, v in locals().items() if k not in ("config", "dry_run")}  # first: only the options are locals here
    _quiet_transformers()
    from ..data.rows import resolve_data
    from ..files.lock import release
    from ..training import distributed
    from ..training.config import build_config
    from ..training.run import check_output, execute, param_summary, prepare
    from ..training.trainer import Interrupted

    cfg = build_config(config, flags)
    if not cfg.data:  # before check_output makes the run folder
        raise UsageError("--data is required: a .jsonl file or a folder with train.jsonl")
    resolve_data(cfg.data)  # a missing or unreadable --data is refused before anything is written
    if not dry_run:
        check_output(cfg)  # fail before loading anything; takes the folder's lock, which execute releases
    try:
        run = prepare(cfg)
    except BaseException:
        release(cfg.output)
        raise
    if run.train.skipped:
        display.warning(
            f"skipped {run.train.skipped} of {run.train.stats['rows']} training rows whose prompt "
            f"alone exceeds --max-seq-length {cfg.max_seq_length}"
        )
    if dry_run:
        _show_dry_run(run, param_summary(run.loaded.model, run.adapter))
        return
    try:
        execute(run, display.TrainDisplay())
    except Interrupted as exc:
        raise Interrupted(f"{exc.message}; resume with: {resume_command(sys.argv)}") from None
    except SoloError as exc:
        if run.ctx.enabled:  # say which process failed; torchrun then stops the others
            raise type(exc)(f"rank {run.ctx.rank}: {exc.message}") from None
        raise
    finally:
        distributed.shutdown()


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted run: the same flags, --resume auto, no --overwrite."""
    args, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        if arg == "--overwrite" or arg.startswith("--resume="):
            continue
        if arg == "--resume":
            skip = True
            continue
        args.append(shlex.quote(arg))
    return " ".join(["solo", *args, "--resume", "auto"])


def _show_dry_run(run, summary: dict) -> None:
    from ..engine.topology import format_connections

    tokenizer = run.loaded.tokenizer
    first = run.train.examples[0]
    from ..inference.generation import token_pieces  # characters split across tokens show whole, not as U+FFFD

    pieces = [(text, label != -100) for text, label in zip(token_pieces(tokenizer, first.input_ids), first.labels)]
    config = run.cfg.to_dict() | {
        "connections (resolved)": format_connections(run.adapter.config.connections),
        "total steps": run.steps,
        "data format": run.train.fmt,
        "chat template": run.train.chat_template,
    }
    stats = {"train": run.train.stats} | ({"valid": run.valid.stats} if run.valid else {})
    display.show_dry_run(config, stats, pieces, summary)


def _load_target(model, adapter, revision, dtype, device, trust_remote_code, force):
    """Base model (+ adapter) for generate and eval, with any --force warning shown."""
    from ..inference.load import load_for_inference
    from ..training.run import resolve_device

    target = load_for_inference(
        model,
        adapter,
        revision=revision,
        dtype=dtype,
        device=str(resolve_device(device)),
        trust_remote_code=bool(trust_remote_code),
        force=force,
    )
    for message in target.warnings:
        display.warning(message)
    return target


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


def _prompt_of(row: dict):
    if "messages" in row:
        messages = row["messages"]
        return messages[:-1] if messages[-1]["role"] == "assistant" else messages
    return row["prompt"]


@app.command()
@handle_errors
def generate(
    prompt: Annotated[Optional[str], typer.Argument(help="The prompt, or - to read it from stdin.")] = None,
    model: Model = None,
    adapter: Annotated[Optional[str], typer.Option(help="adapter.safetensors (or its run folder).")] = None,
    input: Annotated[Optional[Path], typer.Option("--input", help='JSONL rows with "prompt" or "messages".')] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where --input's predictions go (JSONL).")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate at most.")] = 128,
    temperature: Annotated[float, typer.Option(help="0 = greedy; > 0 samples.")] = 0.0,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling mass.")] = 1.0,
    top_k: Annotated[int, typer.Option(help="Sample among the k likeliest (0 = off).")] = 0,
    num_beams: Annotated[int, typer.Option(help="Beam search width (1 = off).")] = 1,
    seed: Annotated[int, typer.Option(help="Random seed for sampling, 0 to 2**32 - 1.", callback=_seed_in_range)] = 0,
    stop: Annotated[Optional[list[str]], typer.Option(help="Stop at this string (repeatable).")] = None,
    chat: Annotated[
        Optional[bool],
        typer.Option(
            "--chat/--no-chat",
            help="Wrap the prompt in the chat template (default: as the adapter was trained; plain for a bare model).",
        ),
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Prompts per generate call with --input.")] = 8,
    revision: Revision = None,
    dtype: Dtype = "float32",
    device: Device = "auto",
    trust_remote_code: TrustCode = False,
    force: Annotated[bool, typer.Option("--force", help="Attach an adapter whose base fingerprint differs.")] = False,
) -> None:
    """Generate text from a base model, with or without an adapter.

    A prompt whose tokens plus --max-new-tokens exceed the model's context is refused, naming it
    (``rows.jsonl:7``, or the prompt), before anything is generated; it is never cut silently.
    """
    _quiet_transformers()
    from ..data.rows import lone_surrogate, read_numbered_rows
    from ..files.atomic import check_writable, write_texts
    from ..inference.generation import GenerationSettings
    from ..inference.generation import generate as run_generate
    from ..outputs import check_predictions_target, refuse_input_as_output

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
        rows, fmt, linenos = read_numbered_rows(_input_file(input, "--input"))
        if fmt == "text":
            raise UsageError(f'{input}: rows need a "prompt" (or "messages") to generate from, not "text"')
        where = [f"{input}:{n}" for n in linenos]
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
    target = _load_target(model, adapter, revision, dtype, device, trust_remote_code, force)
    use_chat = chat if chat is not None else bool(target.info and target.info.chat_template)
    tokenizer, lm = target.loaded.tokenizer, target.loaded.model
    if rows is None:
        stream = display.out.is_terminal and num_beams == 1
        on_text = display.stream if stream else None
        result = run_generate(lm, tokenizer, [text], settings, chat=use_chat, on_text=on_text, where=["prompt"])[0]
        display.show_text("" if stream else result)
        return
    prompts = [_prompt_of(r) for r in rows]
    predictions = run_generate(lm, tokenizer, prompts, settings, chat=use_chat, batch_size=batch_size, where=where)
    lines = "".join(json.dumps(r | {"prediction": p}, ensure_ascii=False) + "\n" for r, p in zip(rows, predictions))
    write_texts({output: lines}, flag="--output")  # a full disk: one line, the old file kept
    display.line(f"wrote {len(predictions)} predictions to {output}")


@app.command()
@handle_errors
def inspect(
    adapter: Annotated[Optional[str], typer.Argument(help="adapter.safetensors to describe (no model is loaded).")] = None,
    model: Model = None,
    connections: Annotated[Optional[str], typer.Option(help="Plan to cost against --model (default: train's default).")] = None,
    rank: Annotated[Optional[int], typer.Option(help="Rank of the plan.")] = None,
    gate: Annotated[Optional[str], typer.Option(help="Gate mode of the plan.")] = None,
    revision: Revision = None,
    trust_remote_code: TrustCode = False,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Describe an adapter file, or what a connection plan costs on a model (beside LoRA r=4 on q,v)."""
    from ..inference.report import adapter_report, plan_report
    from ..training.config import TrainConfig

    if adapter is None and model is None:
        raise UsageError("give an adapter file to describe, or --model M to cost a plan")
    if adapter is not None:
        rep = adapter_report(adapter)
        display.emit_json(rep) if json_out else display.show_adapter_report(rep)
        return
    _quiet_transformers()
    defaults = TrainConfig()
    if rank is not None and rank < 1:
        raise UsageError(f"--rank {rank}: must be at least 1")
    rep = plan_report(
        model,
        connections or defaults.connections,
        rank or defaults.rank,
        gate or defaults.gate,
        revision,
        bool(trust_remote_code),
    )
    display.emit_json(rep) if json_out else display.show_plan_report(rep)


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
        _quiet_transformers()
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
    target = _load_target(model, adapter, revision, dtype, device, trust_remote_code, force)
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


@app.command()
@handle_errors
def merge(
    adapters: Annotated[list[str], typer.Argument(help="Adapters to combine (same base), or one adapter to --export.")],
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Where the merged adapter goes.")] = None,
    weights: Annotated[
        Optional[str], typer.Option(help="One weight per adapter, e.g. 0.7,0.3 (default: equal, summing to 1).")
    ] = None,
    rank: Annotated[
        Optional[int],
        typer.Option(help="Rank of the merged adapter (default: the largest input rank).", callback=_rank_at_least_1),
    ] = None,
    model: Model = None,
    export: Annotated[Optional[Path], typer.Option(help="Write a standalone model folder (base + adapter) here.")] = None,
    revision: Revision = None,
    trust_remote_code: TrustCode = False,
    force: Annotated[bool, typer.Option("--force", help="Export with a base whose fingerprint differs.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output or --export.")] = False,
) -> None:
    """Combine adapters of one base into one, or export base + adapter as a standalone model folder."""
    _quiet_transformers()
    from ..outputs import check_adapter_target

    if export is not None:
        from ..inference.export import export_model

        if len(adapters) != 1 or output is not None or weights is not None:
            raise UsageError("--export takes exactly one adapter (merge several first, with -o)")
        result = export_model(
            adapters[0],
            model,
            export,
            revision=revision,
            trust_remote_code=bool(trust_remote_code),
            force=force,
            overwrite=overwrite,
        )
        display.out.print(
            f"exported {result.path}: largest logit difference vs base + adapter {result.max_abs_diff:.2e}, "
            f"greedy output {'identical' if result.greedy_equal else 'DIFFERENT'}"
        )
        return
    from ..engine.adapter_file import save_adapter
    from ..engine.merge import merge_adapters, parse_weights

    if output is None:
        raise UsageError("give -o merged.safetensors for the merged adapter (or --export DIR with one adapter)")
    check_adapter_target(output, overwrite)  # solo replaces only an adapter it wrote
    result = merge_adapters(adapters, parse_weights(weights, len(adapters)), rank)
    path = save_adapter(output, result.adapter, result.info)
    display.show_merge(path, result)


def main() -> None:
    """The `solo` entry point: Ctrl+C or SIGTERM at any moment ends in "error: interrupted" and exit 130."""
    try:
        interrupt_on_signals()
        code = app(standalone_mode=False)
    except BaseException as exc:  # before or after a command runs (typer building the command line, say)
        if not caused_by_interrupt(exc):
            raise
        code = _interrupted()
    sys.exit(code)
