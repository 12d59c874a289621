"""Corpus-level text-generation metrics that reproduce the official E2E NLG scorer.

The official scorer is ``measure_scores.py`` from GitHub ``tuetschek/e2e-metrics``. It reports
BLEU, NIST, METEOR, ROUGE-L and CIDEr; this module adds chrF. Every score is computed the way that
scorer computes it, so numbers can be compared with published E2E results:

- BLEU: NIST ``mteval-v13a`` (13a tokenization, case-insensitive, corpus level, all references of a
  segment, closest reference length, its smoothing). sacrebleu's BLEU with the 13a tokenizer collects
  the same statistics; references are passed as ``None``-padded streams because sacrebleu only drops
  ``None`` (an ``''`` reference would count as a real reference of length 0). Text is lower-cased
  the way mteval does it (ASCII letters only) and the score is combined by mteval's rule (see
  ``scorers.mteval._mteval_bleu``; it differs from sacrebleu's only in corner cases).
- NIST: computed here from the definition in the scorer's edited ``mteval-v13a-sig.pl`` (see
  ``scorers.mteval._nist``). ``nltk.translate.nist_score.corpus_nist`` is *not* the same metric: it clips n-gram
  matches against the single best reference instead of the per-n-gram maximum over all references,
  and its brevity penalty uses the lengths of those chosen references instead of the average
  reference length. On the E2E test set with a constant output it gives 0.0100 where the scorer
  gives 0.0386.
- METEOR 1.5, ROUGE-L and CIDEr(-D): the MS-COCO caption evaluation code (``pycocoevalcap``, the
  code the scorer vendors) after the Stanford PTB tokenizer (lower-cased, punctuation removed).
  The tokenizer and METEOR run on Java; without Java (or without ``pycocoevalcap``) the three come
  back as ``None`` with a note. CIDEr's document frequencies come from the evaluated references.
- chrF: sacrebleu's ``CHRF()`` (character 6-grams, beta 2, case-sensitive), on sacrebleu's 0-100 scale.

Scales follow the official scorer's printout: BLEU 0-1, NIST about 0-15, METEOR 0-1, ROUGE-L 0-1,
CIDEr about 0-10; chrF 0-100. Nothing here prints; Java's output is captured and its temporary
files are deleted. ``score()`` starts and ends its own JVMs; ``Scorer`` keeps one METEOR JVM for
several corpora.

Inputs are cleaned the way the official scorer reads its files: outputs and references are stripped,
line breaks inside them become spaces, and empty references are dropped.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field

from ..errors import UsageError
from .scorers.coco import Meteor, PTBTokenizer, cider, coco_dir, rouge_l
from .scorers.mteval import python_metrics

METRIC_NAMES = ("bleu", "nist", "meteor", "rouge_l", "cider", "chrf")

JAVA_NOTE = "METEOR, ROUGE-L and CIDEr need Java (install a JRE, e.g. apt-get install default-jre-headless)"
COCO_NOTE = "METEOR, ROUGE-L and CIDEr need the pycocoevalcap package (pip install pycocoevalcap)"


@dataclass
class Scores:
    """The six corpus scores (``None`` where a metric could not be computed) and notes saying why."""

    bleu: float | None = None
    nist: float | None = None
    meteor: float | None = None
    rouge_l: float | None = None
    cider: float | None = None
    chrf: float | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        out: dict = {name: getattr(self, name) for name in METRIC_NAMES}
        out["notes"] = list(self.notes)
        return out


def score(predictions: list[str], references: list[list[str]], *, java: bool | None = None) -> Scores:
    """Score one output per segment against that segment's references (any number, at least one).

    ``java=None`` uses Java when ``java`` is on the PATH; ``java=False`` skips the Java metrics
    (METEOR, ROUGE-L, CIDEr come back as ``None`` with a note), as if Java were missing.
    Raises ``UsageError`` when the lengths differ or a row has no (non-empty) reference.
    """
    with Scorer(java=java) as scorer:
        return scorer.score(predictions, references)


class Scorer:
    """``score()`` for several corpora in a row, sharing one METEOR JVM (its start-up, which loads a
    60 MB paraphrase table, is most of the Java time). Use it as a context manager, or call ``close()``."""

    def __init__(self, *, java: bool | None = None) -> None:
        self._java = shutil.which("java") if java is not False else None
        self._coco = coco_dir() if self._java else None
        self._meteor: Meteor | None = None

    def __enter__(self) -> Scorer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End the METEOR JVM (if one was started). The scorer can still be used; it starts a new one."""
        meteor, self._meteor = self._meteor, None
        if meteor is not None:
            meteor.close()

    def score(self, predictions: list[str], references: list[list[str]]) -> Scores:
        """See ``score()``."""
        hyps, refs = _check_inputs(predictions, references)
        result = Scores()
        if self._java is None:
            result.notes.append(JAVA_NOTE)
        elif self._coco is None:
            result.notes.append(COCO_NOTE)
        if self._java is None or self._coco is None:
            result.bleu, result.nist, result.chrf = python_metrics(hyps, refs)
            return result

        # METEOR loads its paraphrase table at start-up and the PTB tokenizer starts two JVMs:
        # start them first so that they run while the Python metrics are computed.
        if self._meteor is None or not self._meteor.alive():
            self.close()
            self._meteor = Meteor(self._java, self._coco / "meteor")
        tokenizers = [PTBTokenizer(self._java, self._coco / "tokenizer", lines) for lines in (hyps, _flatten(refs))]
        try:
            result.bleu, result.nist, result.chrf = python_metrics(hyps, refs)
            tok_hyps, flat_tok_refs = (t.result() for t in tokenizers)
        finally:
            for t in tokenizers:
                t.close()
        if tok_hyps is None or flat_tok_refs is None:
            error = next((t.error for t in tokenizers if t.error), "failed")
            result.notes.append(f"METEOR, ROUGE-L and CIDEr failed: the PTB tokenizer (Java) {error}")
            return result
        tok_refs = _regroup(flat_tok_refs, refs)
        try:
            self._meteor.start(tok_hyps, tok_refs)
            result.rouge_l = rouge_l(tok_hyps, tok_refs)
            result.cider = cider(tok_hyps, tok_refs)
            result.meteor = self._meteor.result()
        except BaseException:
            self.close()  # it may be mid-answer: never reuse it
            raise
        if result.meteor is None:
            result.notes.append(f"METEOR failed: {self._meteor.error}")
            self.close()
        return result


# ---------------------------------------------------------------------------------------------
# input checks


def _one_line(text: str) -> str:
    """Strip, and turn any line break (which would split a segment in the Java tools) into a space."""
    return " ".join(text.splitlines()).strip()


def _check_inputs(predictions: list[str], references: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    if isinstance(predictions, str) or isinstance(references, str):
        raise UsageError("score() takes a list of predictions and a list of reference lists, not a string")
    predictions, references = list(predictions), list(references)
    if len(predictions) != len(references):
        raise UsageError(f"{len(predictions)} predictions but {len(references)} reference sets: they must match one to one")
    if not predictions:
        raise UsageError("nothing to score: there are no predictions")
    hyps: list[str] = []
    refs: list[list[str]] = []
    for row, (pred, ref_set) in enumerate(zip(predictions, references), start=1):
        if not isinstance(pred, str):
            raise UsageError(f"row {row}: the prediction is {type(pred).__name__}, not a string")
        if isinstance(ref_set, str) or not all(isinstance(r, str) for r in ref_set):
            raise UsageError(f"row {row}: the references must be a list of strings")
        # The official scorer reads references one per line, stripped; empty lines separate segments.
        cleaned = [r for r in map(_one_line, ref_set) if r]
        if not cleaned:
            raise UsageError(f"row {row}: the prediction has no references (each row needs at least one non-empty reference)")
        hyps.append(_one_line(pred))
        refs.append(cleaned)
    return hyps, refs


def _flatten(refs: list[list[str]]) -> list[str]:
    return [r for ref_set in refs for r in ref_set]


def _regroup(flat: list[str], like: list[list[str]]) -> list[list[str]]:
    out, pos = [], 0
    for ref_set in like:
        out.append(flat[pos : pos + len(ref_set)])
        pos += len(ref_set)
    return out
