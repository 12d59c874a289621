"""`solo eval` as one function: loss and perplexity, generation, scoring, and the predictions and metrics files.

:func:`evaluate` checks everything it can before it loads the model it is given; scoring an
existing predictions file loads no model and imports no torch (the model's part,
:mod:`solo_cli.evaluation.model_eval`, is imported only when a model is evaluated).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..data.formats import FORMATS
from ..errors import UsageError, param
from .config import EvalConfig
from .eval_set import EvalSet, eval_set_of, first_prompts, load_eval_split
from .metrics import Scores, score
from .predictions import metrics_path, read_predictions, write_outputs

if TYPE_CHECKING:
    from ..inference.load import InferenceModel

Advance = Callable[[int], None]
Counter = Callable[[str, int], contextlib.AbstractContextManager[Advance]]  # (label, total) -> a context giving advance(n)


@contextlib.contextmanager
def _no_counter(label: str, total: int) -> Iterator[Advance]:
    yield lambda n: None


@dataclass
class EvalResult:
    """What an evaluation found: the loss (None where nothing was scored) and the generation scores."""

    data: str
    split: str | None = None  # the split scored, as messages name it (test.jsonl, owner/name[test])
    rows: int | None = None  # of its rows, those scored (--limit: the rows of the first N prompts)
    rows_in_split: int | None = None
    loss: float | None = None
    perplexity: float | None = None
    loss_tokens: int | None = None
    prompts: int | None = None
    scores: Scores | None = None
    predictions: str | None = None  # the predictions file written, if any
    pairs: dict | None = None  # preference pairs: pairs, pair_accuracy, pair_margin (model_eval.pair_preferences)
    notes: list[str] = field(default_factory=list)  # one line each (keys of the rows that no field uses)

    def to_dict(self) -> dict:
        """The report as `solo eval --json` prints it (and, less ``predictions``, as the metrics file holds it)."""
        out: dict = {"data": self.data}
        if self.loss is not None:
            out |= {"loss": self.loss, "perplexity": self.perplexity, "loss_tokens": self.loss_tokens}
        if self.scores is not None:
            out |= {"prompts": self.prompts} | self.scores.to_dict()
        out |= self.pairs or {}
        if self.notes:
            out["notes"] = self.notes + out.get("notes", [])
        out |= {"split": self.split, "rows": self.rows, "rows_in_split": self.rows_in_split}  # what was scored
        if self.predictions is not None:
            out["predictions"] = self.predictions
        return out


_NOT_GENERATED = {"text": "text rows, which have no prompts to generate from", "preference": "preference pairs, which are scored"}


def _check_output(output: Path, data: Path, generating: bool, fmt: str = "text") -> None:
    """Fail before the model loads: a folder, the input itself, a file solo did not write, or no write access."""
    from ..files.atomic import check_writable
    from ..files.outputs import check_predictions_target, refuse_input_as_output

    if output.is_dir():
        raise UsageError(f"{param('output')} {output}: is a folder; give a file path for the predictions")
    if not generating:  # text rows (generate=False is refused by EvalConfig.validate)
        raise UsageError(
            f"{param('output')} {output}: {data} holds {_NOT_GENERATED.get(fmt, fmt + ' rows')}, so nothing would be "
            f"written; drop {param('output')} (the {'pair accuracy' if FORMATS[fmt].pairs else 'loss'} is reported without it)"
        )
    refuse_input_as_output(output, data, "--data")
    check_predictions_target(output, metrics_path(output))  # solo replaces only predictions and metrics it wrote
    check_writable(output, "--output")  # predictions and metrics go there


def evaluate(
    config: EvalConfig, load: Callable[[], InferenceModel] | None = None, *, counter: Counter | None = None
) -> EvalResult:
    """Evaluate ``load()``'s model on ``config.data``, or score ``config.predictions`` (then ``load`` must be None).

    With a model: the loss and perplexity on the completion tokens (rows with none, such as
    prompt/references rows, give none), then, unless ``config.generate`` is off or the rows are
    plain text, a prediction for every unique prompt scored with BLEU, NIST, METEOR, ROUGE-L,
    CIDEr and chrF; ``config.output`` receives the predictions and the metrics (both or neither).
    ``load`` is called only after every input has been checked. ``counter`` shows progress.
    """
    config.validate()
    every = load_eval_split(config.data_spec())
    rows = first_prompts(every, config.limit)  # --limit applies to the loss as well as to generation
    result = EvalResult(data=str(config.data), split=every.name, rows=len(rows), rows_in_split=len(every))
    result.notes += [every.note] if every.note else []
    if config.predictions is not None:
        if load is not None:
            raise UsageError(
                f"{param('predictions')} scores an existing file; drop {param('model')}/{param('adapter')} (no model is loaded)"
            )
        targets = eval_set_of(rows)
        _score(result, read_predictions(config.predictions, len(targets.prompts)), targets)
        return result
    if load is None:
        raise UsageError(f"nothing to evaluate: give a model to load, or {param('predictions')} to score")
    pairs = FORMATS[rows.fmt].pairs  # preference pairs are scored for the reply the model prefers, not generated from
    generating = config.generate and rows.fmt != "text" and not pairs
    output = Path(config.output) if config.output is not None else None
    if output is not None:
        _check_output(output, Path(config.data), generating, rows.fmt)
    from ..inference.generation import check_chat_template
    from .model_eval import loss_and_perplexity, pair_preferences, predict  # torch and transformers: only with a model

    target = load()
    lm, tokenizer = target.loaded.model, target.loaded.tokenizer
    chat = config.chat if config.chat is not None else bool(target.info and target.info.chat_template)
    check_chat_template(tokenizer, [], chat, [])  # before the loss, which would quietly score the rows without it
    if pairs:
        settings = {"chat_template": chat, "max_seq_length": config.max_seq_length, "batch_size": config.batch_size}
        result.pairs = pair_preferences(lm, tokenizer, rows, **settings, device=next(lm.parameters()).device)
        return result
    losses = loss_and_perplexity(
        lm,
        tokenizer,
        rows,
        chat_template=chat,
        max_seq_length=config.max_seq_length,
        batch_size=config.batch_size,
        device=next(lm.parameters()).device,
    )
    if losses:
        result.loss, result.perplexity, result.loss_tokens = losses["loss"], losses["perplexity"], losses["loss_tokens"]
    if generating:
        targets = eval_set_of(rows)
        with (counter or _no_counter)("generate", len(targets.prompts)) as advance:
            preds = predict(lm, tokenizer, targets, config.settings, chat=chat, batch_size=config.batch_size, on_batch=advance)
        _score(result, preds, targets)
        if output is not None:
            write_outputs(output, targets, preds, result.to_dict())  # both or neither; a full disk is one line
            result.predictions = str(output)
    return result


def _score(result: EvalResult, predictions: list[str], targets: EvalSet) -> None:
    result.prompts, result.scores = len(predictions), score(predictions, targets.references)
