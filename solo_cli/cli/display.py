"""Everything `solo` shows a person: progress, tables, errors. The only module that imports rich."""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
import unicodedata

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ..engine.topology import source_name

# Nothing printed is read as rich markup or :emoji: codes: values from files print as written.
out = Console(highlight=False, markup=False, emoji=False)
err = Console(stderr=True, highlight=False, markup=False, emoji=False)

_JOINERS = {"\u200c", "\u200d"}  # zero-width (non-)joiners: emoji sequences and Persian or Indic text need them


def _escape(char: str) -> str:
    if char in "\n\r\t":
        return repr(char)[1:-1]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def clean(value, *, multiline: bool = False) -> str:
    """``value`` as text that is safe to print: every control or invisible format character escaped.

    C0 and C1 controls, DEL, bidirectional overrides, line separators, surrogates and other
    non-printable characters become ``\\x1b`` / ``\\u202e`` escapes, so nothing read from a file
    (an adapter's header, a data row, a path, generated text) can move the cursor, clear the
    screen, set the window title or reorder a line. Letters of every script, emoji and spaces
    are kept. ``multiline`` keeps newlines and tabs (generated text, token previews); a single
    value escapes them too, so an error or a header field is always one line.
    """
    text = str(value)
    if text.isprintable():
        return text
    keep = "\n\t" if multiline else ""
    return "".join(
        char if char.isprintable() or char in keep or char in _JOINERS or unicodedata.category(char) == "Zs" else _escape(char)
        for char in text
    )


def line(text: str, console: Console = out) -> None:
    """One line, escaped, never wrapped by rich (a pipe gets it whole; a terminal wraps it itself)."""
    console.print(Text(clean(text)), soft_wrap=True)


def error(message: str) -> None:
    err.print(Text(f"error: {clean(message)}", style="bold red"), soft_wrap=True)


def warning(message: str) -> None:
    err.print(Text(f"warning: {clean(message)}", style="yellow"), soft_wrap=True)


def third_party(message: str) -> None:
    """What another package logged or warned (``--verbose``, or an error), apart from solo's own lines."""
    err.print(Text(clean(message, multiline=True), style="dim"), soft_wrap=True)


def stream(piece: str) -> None:
    """A piece of generated text as it arrives (escaped; newlines kept)."""
    out.print(Text(clean(piece, multiline=True)), end="", soft_wrap=True)


def show_text(text: str) -> None:
    """Generated text, escaped, newlines kept."""
    out.print(Text(clean(text, multiline=True)), soft_wrap=True)


def emit_json(obj) -> None:
    """Machine-readable output: plain JSON on stdout, no colour, no wrapping."""
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def param_line(summary: dict) -> str:
    """The PEFT-style one-liner that practitioners grep for."""
    return (
        f"trainable params: {summary['trainable']:,} || all params: {summary['total']:,} || trainable%: {summary['percent']:.4f}"
    )


def _fmt_eta(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class TrainDisplay:
    """The training callback: a rich progress bar on a terminal, otherwise a line for every step the trainer
    reports (every ``--log-every`` steps, and the last)."""

    def __init__(self, console: Console = out) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.task = None

    def __call__(self, event: str, info: dict) -> None:
        getattr(self, f"on_{event}", lambda info: None)(info)

    def on_start(self, info: dict) -> None:
        line(param_line(info), self.console)
        line(f"connections: {info['connections']} | {info['examples']} examples | {info['total_steps']} steps", self.console)
        if info.get("dtype_reason"):
            line(f"dtype {info['dtype_reason']}", self.console)
        if info.get("dtype_exactness"):
            line(f"note: {info['dtype_exactness']}", self.console)
        if info.get("compile_reason", "off") != "off":
            line(f"compile {info['compile_reason']}", self.console)
        if self.console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn(
                    "loss {task.fields[loss]}{task.fields[pairs]} lr {task.fields[lr]} gate {task.fields[gate]} "
                    "{task.fields[tps]} tok/s"
                ),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.console,
            )
            fields = {"loss": "-", "lr": "-", "gate": "-", "tps": "-", "pairs": ""}
            self.task = self.progress.add_task("train", total=info["total_steps"], completed=info.get("start_step", 0), **fields)
            self.progress.start()

    def on_step(self, info: dict) -> None:
        if self.progress is not None:
            self.progress.update(
                self.task,
                completed=info["step"],
                loss=f"{info['loss']:.4f}",
                lr=f"{info['lr']:.2e}",
                gate=f"{info['gate']:.3f}",
                tps=f"{info['tokens_per_s']:.0f}",
                pairs=_pairs(info),
            )
        else:
            line(
                f"step {info['step']}/{info['total_steps']} loss {info['loss']:.4f}{_pairs(info)} lr {info['lr']:.2e} "
                f"gate {info['gate']:.3f} {info['tokens_per_s']:.0f} tok/s "
                f"elapsed {_fmt_eta(info['elapsed'])} eta {_fmt_eta(info['remaining'])}",
                self.console,
            )

    def on_reference(self, info: dict) -> None:
        if info["cached"]:
            line(f"reference: the log-probabilities of {info['pairs']} pairs, read from the cache", self.console)
        else:
            line(f"reference: scoring {info['pairs']} pairs once, before step 1 (cached for reruns and resumes)", self.console)

    def on_resume(self, info: dict) -> None:
        line(f"resuming from step {info['step']} ({info['path']})", self.console)

    def on_eval(self, info: dict) -> None:
        mark = " (best)" if info["best"] else ""
        self._print(f"step {info['step']}: valid loss {info['valid_loss']:.4f}{_pairs(info, 'valid_')}{mark}")

    def on_save(self, info: dict) -> None:
        self._print(f"checkpoint: {info['path']}")

    def on_end(self, info: dict) -> None:
        if self.progress is not None:
            self.progress.stop()
        line(f"adapter: {info['adapter_path']} ({info['steps']} steps, {info['seconds']:.1f} s)", self.console)
        if info.get("best_path"):
            line(f"best:    {info['best_path']} (valid loss {info['best_valid_loss']:.4f})", self.console)

    def _print(self, text: str) -> None:
        line(text, self.progress.console if self.progress else self.console)


def _pairs(info: dict, prefix: str = "") -> str:
    """`` acc 0.75 margin 0.412``: a preference objective's reward accuracy and margin (nothing for sft)."""
    if f"{prefix}rewards/accuracies" not in info:
        return ""
    return f" acc {info[f'{prefix}rewards/accuracies']:.2f} margin {info[f'{prefix}rewards/margins']:.3f}"


MASKED = ("\u27e6", "\u27e7")  # ⟦ ⟧ around masked tokens off a terminal: brackets that data rows rarely hold


def show_dry_run(config: dict, stats: dict, example_tokens: list[tuple[str, bool]], summary: dict) -> None:
    """The resolved config (each value whole, one line each), the data's statistics, the parameter counts and the
    first example with its trained and masked tokens: by colour on a terminal, else masked ones between ⟦ and ⟧."""
    out.print(Text("resolved config", style="bold"))
    width = max(len(key) for key in config)
    for key, value in config.items():
        line(f"  {key.ljust(width)}  {value}")
    data = Table(title="data")
    data.add_column("")
    for split in stats:
        data.add_column(split, justify="right")
    for key in next(iter(stats.values())):
        data.add_row(key.replace("_", " "), *(clean(values[key]) for values in stats.values()))
    out.print(data)
    line(param_line(summary))
    coloured = out.is_terminal
    text = Text()
    for trained, run in itertools.groupby(example_tokens, key=lambda token: token[1]):
        piece = clean("".join(piece for piece, _ in run), multiline=True)
        if not (trained or coloured):
            piece = f"{MASKED[0]}{piece}{MASKED[1]}"
        text.append(piece, style="bold green" if trained else "dim")
    legend = "(green: trained, dim: masked)" if coloured else f"({MASKED[0]}masked{MASKED[1]}, the rest trained)"
    out.print(Text("first example ", style="bold") + Text(legend))
    out.print(text, soft_wrap=True)


def show_adapter_report(rep: dict) -> None:
    table = Table(title=clean(f"{rep['path']}  ({rep['gate_mode']} gate, rank {rep['rank']})"))
    for column in ("source", "destination", "rank", "gate", "params", "norm of t·BA"):
        table.add_column(column, justify="right")
    for row in rep["connections"]:
        src = source_name(row["source"])
        table.add_row(
            src, str(row["destination"]), str(row["rank"]), f"{row['gate']:.4f}", f"{row['params']:,}", f"{row['norm']:.4f}"
        )
    table.add_row("total", "", "", "", f"{rep['trainable_params']:,}", "", style="bold")
    out.print(table)
    fp = rep["fingerprint"]
    line(
        f"base: {rep['base_model']} (revision {rep['base_revision'] or '-'}) — {fp['model_type']}, "
        f"{fp['num_blocks']} blocks, d={fp['hidden_size']}, vocab={fp['vocab_size']}"
    )
    data = f"{rep['data_format']} rows" if rep["data_format"] else "not recorded"  # saved from Python, not by solo train
    line(
        f"data: {data}, chat template {'on' if rep['chat_template'] else 'off'}; "
        f"file {rep['file_bytes']:,} bytes; solo {rep['solo_version']}, format v{rep['format_version']}"
    )
    if rep["training"]:
        line("training: " + ", ".join(f"{k}={_training_value(k, v)}" for k, v in rep["training"].items()))


def _training_value(key: str, value) -> str:
    """A value of an adapter's training summary for people: 4 significant digits; a merge's errors, their max and mean."""
    if key == "reconstruction_error" and isinstance(value, dict):
        errors = [v for v in value.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if errors and len(errors) == len(value):
            return f"max {max(errors):.2e}, mean {sum(errors) / len(errors):.2e} over {len(errors)} connections"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def show_plan_report(rep: dict) -> None:
    fp = rep["fingerprint"]
    line(
        f"{rep['model']}: {fp['model_type']}, {fp['num_blocks']} blocks of {rep['block_class']} at "
        f"{rep['blocks_path']}, d={fp['hidden_size']}, vocab={fp['vocab_size']}, {rep['total_params']:,} params "
        f"({rep['block_params']:,} per block)"
    )
    plan, lora = rep["plan"], rep["lora_qv_r4"]
    table = Table(title="trainable parameters")
    for column in ("", f"solo ({plan['count']} connections, r={plan['rank']}, {plan['gate']})", "LoRA r=4 on q,v"):
        table.add_column(clean(column), justify="right")  # every value shown is escaped, as in line()
    lora_params = f"{lora['trainable_params']:,}" if lora["trainable_params"] else "unknown layout"
    table.add_row("connections", clean(plan["connections"]), "every block")
    table.add_row("trainable params", f"{plan['trainable_params']:,}", lora_params)
    ratio = f"{100 * rep['ratio_to_lora']:.1f}% of LoRA" if rep["ratio_to_lora"] else "-"
    table.add_row("relative size", ratio, "100%")
    table.add_row("blocks with a backward pass", str(plan["blocks_with_backward"]), str(lora["blocks_with_backward"]))
    out.print(table)
    if "train_memory" in rep:
        show_train_memory(rep["train_memory"], plan)


MEMORY_ROWS = (
    ("base weights", ("weights", "gathered")),
    ("activations kept for backward", ("activations", "sources", "workspace")),
    ("loss (logits)", ("loss",)),
    ("adapter + gradients + AdamW", ("adapter", "gradients", "optimizer")),
)


def gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def show_train_memory(mem: dict, plan: dict) -> None:
    """The training memory of the plan beside LoRA r=8 (all linear layers, and q,v), part by part."""
    s = mem["settings"]
    quant = "" if s["quantize"] == "none" else f", {s['quantize']} base"
    cast = f" under {s['autocast']} autocast" if s.get("autocast") else ""
    per = f", per process of {s['world_size']} ({s['parallel']})" if s["world_size"] > 1 else ""
    ckpt = ", grad checkpoint" if s["grad_checkpoint"] else ""
    title = f"training memory (estimate): batch {s['batch_size']} x {s['max_seq_length']} tokens, {s['dtype']}{cast}{quant}{ckpt}{per}"
    table = Table(title=clean(title))
    r = s["lora_rank"]
    for column in ("", f"solo (r={plan['rank']})", f"LoRA r={r}, all linear (QLoRA)", f"LoRA r={r} on q,v"):
        table.add_column(clean(column), justify="right")
    names = ("solo", "lora", "lora_qv")
    rough = {n for n in names if mem.get("activations_method", {}).get(n) == "rough"}  # not traced: a per-block formula
    for label, keys in MEMORY_ROWS:
        sizes = (gib(sum(mem["parts"][n][k] for k in keys)) for n in names)
        table.add_row(label, *(f"{v} (rough)" if n in rough and keys[0] == "activations" else v for n, v in zip(names, sizes)))
    table.add_row("total", *(gib(mem[n]) for n in names))
    ratio = f"{100 * mem['solo'] / mem['lora']:.0f}% of LoRA" if mem["lora"] else "-"
    table.add_row("relative", ratio, "100%", f"{100 * mem['lora_qv'] / mem['lora']:.0f}%" if mem["lora"] else "-")
    if s["parallel"] == "fsdp" and s["world_size"] > 1:  # every process loads the whole base before it is sharded
        table.add_row("while loading (whole base)", *(gib(mem["load"]) for _ in names))
    out.print(table)


@contextlib.contextmanager
def counter(label: str, total: int, enabled: bool = True):
    """A progress bar on a terminal (nothing otherwise); yields ``advance(n)``."""
    if not (enabled and err.is_terminal):
        yield lambda n: None
        return
    with Progress(
        TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn(), console=err
    ) as progress:
        task = progress.add_task(label, total=total)
        yield lambda n: progress.advance(task, n)


METRIC_LABELS = {
    "loss": "loss",
    "perplexity": "perplexity",
    "bleu": "BLEU",
    "nist": "NIST",
    "meteor": "METEOR",
    "rouge_l": "ROUGE-L",
    "cider": "CIDEr",
    "chrf": "chrF",
    "pair_accuracy": "pair accuracy",  # preference pairs: how often the chosen reply is the likelier one
    "pair_margin": "pair margin (nats)",
}


def show_eval(result: dict, title: str) -> None:
    line(title)  # a line, not the table's title: that wraps a long path mid-word at the table's width
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in METRIC_LABELS.items():
        if key in result:
            value = result[key]
            table.add_row(label, "n/a" if value is None else f"{value:.4f}")
    out.print(table)
    for note in result.get("notes", []):
        warning(note)
    if "predictions" in result:
        line(f"predictions: {result['predictions']}")


def show_merge(path, result) -> None:
    conns, rank = result.adapter.config.connections, result.adapter.config.rank
    lossy = rank < result.exact_rank
    line(
        f"merged adapter: {path} ({len(conns)} connections, rank {rank}, {result.adapter.num_parameters():,} params; "
        + (f"lossy: rank {result.exact_rank} is exact)" if lossy else "exact)")
    )
    for name, relative in result.errors.items() if lossy else ():
        line(f"  {name}: re-factored, relative reconstruction error {relative:.2e}")


def show_export(result) -> None:
    """What the export's check found, and the dtype solo generate would compute in here where it is another."""
    line(  # escaped: the path is the user's
        f"exported {result.path}: checked in {result.dtype}, as transformers loads it: largest logit difference vs "
        f"base + adapter {result.max_abs_diff:.2e}, greedy output {'identical' if result.greedy_equal else 'DIFFERENT'}"
    )
    if result.auto_dtype != result.dtype:  # what the check compared is not what `solo generate` computes here
        line(
            f"note: solo generate and eval compute in {result.auto_dtype} here (--dtype auto), so they may write other "
            f"words than the export does in {result.dtype}; pass --dtype {result.dtype} to get the export's",
            err,
        )
