"""`solo eval` as one function: loss and perplexity, generation, scoring, and the predictions and metrics files.

:func:`evaluate` checks everything it can before it loads the model it is given; scoring an
existing predictions file loads no model and imports no torch (the model's part,
:mod:`solo_cli.evaluation.model_eval`, is imported only when a model is evaluated).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import UsageError, param
from .config import EvalConfig
from .eval_set import EvalSet, eval_set_of, load_eval_split
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
    loss: float | None = None
    perplexity: float | None = None
    loss_tokens: int | None = None
    prompts: int | None = None
    scores: Scores | None = None
    predictions: str | None = None  # the predictions file written, if any

    def to_dict(self) -> dict:
        """The report as `solo eval --json` prints it (and, less ``predictions``, as the metrics file holds it)."""
        out: dict = {"data": self.data}
        if self.loss is not None:
            out |= {"loss": self.loss, "perplexity": self.perplexity, "loss_tokens": self.loss_tokens}
        if self.scores is not None:
            out |= {"prompts": self.prompts} | self.scores.to_dict()
        if self.predictions is not None:
            out["predictions"] = self.predictions
        return out


def _limited(data: EvalSet, limit: int | None) -> EvalSet:
    if limit:
        data.prompts, data.references = data.prompts[:limit], data.references[:limit]
    return data


def _check_output(output: Path, data: Path, generating: bool) -> None:
    """Fail before the model loads: a folder, the input itself, a file solo did not write, or no write access."""
    from ..files.atomic import check_writable
    from ..files.outputs import check_predictions_target, refuse_input_as_output

    if output.is_dir():
        raise UsageError(f"{param('output')} {output}: is a folder; give a file path for the predictions")
    if not generating:  # text rows (generate=False is refused by EvalConfig.validate)
        raise UsageError(
            f"{param('output')} {output}: {data} holds text rows, which have no prompts to generate from, so nothing "
            f"would be written; drop {param('output')} (the loss is reported without it)"
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
    rows = load_eval_split(config.data_spec())
    result = EvalResult(data=str(config.data))
    if config.predictions is not None:
        if load is not None:
            raise UsageError(
                f"{param('predictions')} scores an existing file; drop {param('model')}/{param('adapter')} (no model is loaded)"
            )
        targets = _limited(eval_set_of(rows), config.limit)
        _score(result, read_predictions(config.predictions, len(targets.prompts)), targets)
        return result
    if load is None:
        raise UsageError(f"nothing to evaluate: give a model to load, or {param('predictions')} to score")
    generating = config.generate and rows.fmt != "text"
    output = Path(config.output) if config.output is not None else None
    if output is not None:
        _check_output(output, Path(config.data), generating)
    from ..inference.generation import check_chat_template
    from .model_eval import loss_and_perplexity, predict  # torch and transformers: only with a model

    target = load()
    lm, tokenizer = target.loaded.model, target.loaded.tokenizer
    chat = config.chat if config.chat is not None else bool(target.info and target.info.chat_template)
    check_chat_template(tokenizer, [], chat, [])  # before the loss, which would quietly score the rows without it
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
        targets = _limited(eval_set_of(rows), config.limit)
        with (counter or _no_counter)("generate", len(targets.prompts)) as advance:
            preds = predict(lm, tokenizer, targets, config.settings, chat=chat, batch_size=config.batch_size, on_batch=advance)
        _score(result, preds, targets)
        if output is not None:
            write_outputs(output, targets, preds, result.to_dict())  # both or neither; a full disk is one line
            result.predictions = str(output)
    return result


def _score(result: EvalResult, predictions: list[str], targets: EvalSet) -> None:
    result.prompts, result.scores = len(predictions), score(predictions, targets.references)
