"""Corpus-level text-generation metrics that reproduce the official E2E NLG scorer.

The official scorer is ``measure_scores.py`` from GitHub ``tuetschek/e2e-metrics``. It reports
BLEU, NIST, METEOR, ROUGE-L and CIDEr; this module adds chrF. Every score is computed the way that
scorer computes it, so numbers can be compared with published E2E results:

- BLEU: NIST ``mteval-v13a`` (13a tokenization, case-insensitive, corpus level, all references of a
  segment, closest reference length, its smoothing). sacrebleu's BLEU with the 13a tokenizer collects
  the same statistics; references are passed as ``None``-padded streams because sacrebleu only drops
  ``None`` (an ``''`` reference would count as a real reference of length 0). Text is lower-cased
  the way mteval does it (ASCII letters only) and the score is combined by mteval's rule (see
  ``_mteval_bleu``; it differs from sacrebleu's only in corner cases).
- NIST: computed here from the definition in the scorer's edited ``mteval-v13a-sig.pl`` (see
  ``_nist``). ``nltk.translate.nist_score.corpus_nist`` is *not* the same metric: it clips n-gram
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

import math
import shutil
import subprocess
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

METRIC_NAMES = ("bleu", "nist", "meteor", "rouge_l", "cider", "chrf")

JAVA_NOTE = "METEOR, ROUGE-L and CIDEr need Java (install a JRE, e.g. apt-get install default-jre-headless)"
COCO_NOTE = "METEOR, ROUGE-L and CIDEr need the pycocoevalcap package (pip install pycocoevalcap)"

# mteval-v13a lower-cases with Perl's tr/[A-Z]/[a-z]/, which folds ASCII letters only.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
# pycocoevalcap's PTBTokenizer drops these tokens after tokenizing.
_PTB_PUNCTUATION = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
_NIST_ORDER = 5
_JAVA_TIMEOUT_S = 1800


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
        self._coco = _coco_dir() if self._java else None
        self._meteor: _Meteor | None = None

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
            _python_metrics(hyps, refs, result)
            return result

        # METEOR loads its paraphrase table at start-up and the PTB tokenizer starts two JVMs:
        # start them first so that they run while the Python metrics are computed.
        if self._meteor is None or not self._meteor.alive():
            self.close()
            self._meteor = _Meteor(self._java, self._coco / "meteor")
        tokenizers = [_PTBTokenizer(self._java, self._coco / "tokenizer", lines) for lines in (hyps, _flatten(refs))]
        try:
            _python_metrics(hyps, refs, result)
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
            result.rouge_l = _rouge_l(tok_hyps, tok_refs)
            result.cider = _cider(tok_hyps, tok_refs)
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


# ---------------------------------------------------------------------------------------------
# BLEU, NIST, chrF (pure Python)


def _python_metrics(hyps: list[str], refs: list[list[str]], result: Scores) -> None:
    from sacrebleu.metrics import BLEU, CHRF

    max_refs = max(len(r) for r in refs)
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(max_refs)]
    lowered_hyps = [h.translate(_ASCII_LOWER) for h in hyps]
    lowered_streams = [[None if r is None else r.translate(_ASCII_LOWER) for r in s] for s in streams]
    # force=True: no sacrebleu warning about outputs that "look tokenized" (it would print to stderr)
    stats = BLEU(tokenize="13a", lowercase=False, force=True).corpus_score(lowered_hyps, lowered_streams)
    result.bleu = _mteval_bleu(stats.counts, stats.totals, stats.sys_len, stats.ref_len)
    result.nist = _nist(hyps, refs)
    result.chrf = CHRF().corpus_score(hyps, streams).score


def _mteval_bleu(matches: list[int], totals: list[int], sys_len: int, ref_len: int) -> float:
    """mteval-v13a's ``bleu_score`` from sacrebleu's corpus statistics.

    sacrebleu's ``exp`` smoothing is the same rule, but sacrebleu returns 0 when no n-gram matches at
    all and when an order has no output n-grams (every output shorter than 4 tokens), where mteval
    still smooths (1 / 2^k per order without matches) and counts an empty order as precision 1.
    """
    if sys_len == 0:
        return 0.0
    log_sum, smooth = 0.0, 1
    for match, total in zip(matches, totals):
        if total == 0:
            continue
        if match == 0:
            smooth *= 2
            log_sum += math.log(1 / (smooth * total))
        else:
            log_sum += math.log(match / total)
    return math.exp(log_sum / len(totals) + min(0.0, 1 - ref_len / sys_len))


_TOKENIZER_13A = None


def _mteval_tokens(text: str) -> list[str]:
    """mteval-v13a's default tokenization, lower-cased (ASCII only, as mteval does)."""
    global _TOKENIZER_13A
    if _TOKENIZER_13A is None:
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

        _TOKENIZER_13A = Tokenizer13a()
    return _TOKENIZER_13A(text.translate(_ASCII_LOWER)).split()


def _ngram_counts(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _nist(hyps: list[str], refs: list[list[str]], order: int = _NIST_ORDER) -> float:
    """Corpus NIST as the official scorer's ``mteval-v13a-sig.pl`` computes it.

    - information weight of an n-gram, from all references of the corpus:
      ``info(w1..wn) = log2(count(w1..wn-1) / count(w1..wn))`` (for unigrams the numerator is the
      total number of reference words);
    - per segment, each output n-gram earns ``info * min(count in output, max count in any one
      reference)``; the score sums, over n = 1..5, the earned information divided by the number of
      output n-grams of order n (corpus totals);
    - brevity penalty ``exp(-beta * log(r)^2)`` for ``r = output words / average reference length``,
      ``beta = -log(0.5) / log(1.5)^2``, no penalty for ``r >= 1``. The average reference length is
      (all reference words) / (references per segment on average) -- the scorer's edit for a variable
      number of references per segment (stock mteval divides by the maximum number of references).
    """
    # ref_ngrams[segment][reference][n] = Counter of that reference's n-grams (index 0 unused)
    ref_ngrams = [
        [[Counter()] + [_ngram_counts(words, n) for n in range(1, order + 1)] for words in map(_mteval_tokens, ref_set)]
        for ref_set in refs
    ]
    counts: Counter = Counter()
    total_words = 0
    for ref_set in ref_ngrams:
        for per_order in ref_set:
            total_words += sum(per_order[1].values())
            for n in range(1, order + 1):
                counts.update(per_order[n])

    def info(ngram: tuple) -> float:
        denominator = counts[ngram[:-1]] if len(ngram) > 1 else total_words
        return math.log2(denominator / counts[ngram])

    earned = [0.0] * (order + 1)
    hyp_ngrams = [0] * (order + 1)
    for hyp, ref_set in zip(hyps, ref_ngrams):
        words = _mteval_tokens(hyp)
        for n in range(1, min(order, len(words)) + 1):
            hyp_ngrams[n] += len(words) - n + 1
            ref_max: Counter = Counter()
            for per_order in ref_set:
                ref_max |= per_order[n]
            for ngram, count in _ngram_counts(words, n).items():
                if ngram in ref_max:
                    earned[n] += info(ngram) * min(count, ref_max[ngram])
    precision_sum = sum(earned[n] / max(hyp_ngrams[n], 1) for n in range(1, order + 1))

    refs_per_segment = sum(len(r) for r in refs) / len(refs)
    average_ref_length = total_words / refs_per_segment
    return precision_sum * _nist_length_penalty(hyp_ngrams[1] / average_ref_length if average_ref_length else 0.0)


def _nist_length_penalty(ratio: float) -> float:
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    beta = -math.log(0.5) / math.log(1.5) ** 2
    return math.exp(-beta * math.log(ratio) ** 2)


# ---------------------------------------------------------------------------------------------
# METEOR, ROUGE-L, CIDEr (pycocoevalcap on Java)


class _JavaError(RuntimeError):
    pass


def _coco_dir() -> Path | None:
    """The installed ``pycocoevalcap`` folder, if it has the two jars we need."""
    try:
        import pycocoevalcap.tokenizer.ptbtokenizer as ptb
    except ImportError:
        return None
    root = Path(ptb.__file__).resolve().parent.parent
    needed = (root / "tokenizer" / "stanford-corenlp-3.4.1.jar", root / "meteor" / "meteor-1.5.jar")
    return root if all(p.is_file() for p in needed) else None


class _PTBTokenizer:
    """pycocoevalcap's ``PTBTokenizer``: the same Java command and punctuation filter, but the input
    goes to a private temporary folder (not into site-packages) that is always removed, and Java's
    stdout/stderr are captured."""

    def __init__(self, java: str, jar_dir: Path, lines: list[str]) -> None:
        self.error: str | None = None
        self._count = len(lines)
        self._tmp = tempfile.TemporaryDirectory(prefix="solo-ptb-")
        self._proc: subprocess.Popen | None = None
        path = Path(self._tmp.name) / "sentences.txt"
        path.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))
        cmd = [java, "-cp", str(jar_dir / "stanford-corenlp-3.4.1.jar"), "edu.stanford.nlp.process.PTBTokenizer"]
        cmd += ["-preserveLines", "-lowerCase", str(path)]
        try:
            self._proc = subprocess.Popen(
                cmd, cwd=jar_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
            )
        except OSError as exc:
            self.error = f"could not start: {exc}"
            self.close()

    def result(self) -> list[str] | None:
        """The tokenized lines (lower-cased, punctuation tokens removed), or None with ``error`` set."""
        if self._proc is None:
            return None
        try:
            out, err = self._proc.communicate(timeout=_JAVA_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.error = f"took longer than {_JAVA_TIMEOUT_S} s"
            return None
        finally:
            self.close()
        lines = out.decode("utf-8", errors="replace").split("\n")
        if self._proc.returncode != 0 or len(lines) < self._count:
            detail = err.decode("utf-8", errors="replace").strip().splitlines()
            self.error = f"exited with code {self._proc.returncode}" + (f": {detail[-1]}" if detail else "")
            return None
        return [" ".join(w for w in line.rstrip().split(" ") if w not in _PTB_PUNCTUATION) for line in lines[: self._count]]

    def close(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.communicate()
        self._tmp.cleanup()


class _Meteor:
    """pycocoevalcap's ``Meteor`` wrapper (same jar, options and SCORE/EVAL protocol) with an explicit
    lifetime: ``close()`` ends the JVM instead of relying on ``__del__``. ``-Dfile.encoding=UTF-8``
    is added so that non-ASCII text reads the same whatever the locale (we send UTF-8).

    ``start()`` sends the work from background threads (the SCORE lines are written without waiting
    for each answer), so METEOR runs while ROUGE-L and CIDEr are computed; ``result()`` waits for it.
    """

    def __init__(self, java: str, jar_dir: Path) -> None:
        self._error: str | None = None
        self._value: float | None = None
        self._threads: list[threading.Thread] = []
        cmd = [java, "-Dfile.encoding=UTF-8", "-Xmx2G", "-jar", "meteor-1.5.jar", "-", "-", "-stdio", "-l", "en", "-norm"]
        try:
            self._proc: subprocess.Popen | None = subprocess.Popen(
                cmd, cwd=jar_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except OSError as exc:
            self._proc = None
            self._error = f"could not start Java: {exc}"

    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None and self._error is None

    def start(self, hyps: list[str], refs: list[list[str]]) -> None:
        """Send one corpus; the METEOR process answers each request in order, so it can be reused."""
        self._value, self._threads = None, []
        if self._proc is None:
            return
        lines = []
        for hyp, ref_set in zip(hyps, refs):
            hyp = hyp.replace("|||", "").replace("  ", " ")
            lines.append(" ||| ".join(("SCORE", " ||| ".join(ref_set), hyp)) + "\n")
        writer = threading.Thread(target=self._write, args=("".join(lines),), daemon=True)
        reader = threading.Thread(target=self._talk, args=(len(lines),), daemon=True)
        self._threads = [writer, reader]
        writer.start()
        reader.start()

    def _write(self, text: str) -> None:
        try:
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(text.encode("utf-8"))
            self._proc.stdin.flush()
        except (OSError, ValueError) as exc:
            self._error = self._error or f"lost the METEOR process: {exc}"

    def _readline(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        answer = self._proc.stdout.readline()
        if not answer:
            raise _JavaError(f"the METEOR process ended (exit code {self._proc.poll()})")
        return answer.decode("utf-8").strip()

    def _talk(self, count: int) -> None:
        try:
            stats = [self._readline() for _ in range(count)]
            self._threads[0].join()
            assert self._proc is not None and self._proc.stdin is not None
            self._proc.stdin.write(("EVAL ||| " + " ||| ".join(stats) + "\n").encode("utf-8"))
            self._proc.stdin.flush()
            for _ in range(count):  # one score per segment, then the corpus score
                self._readline()
            self._value = float(self._readline())
        except (_JavaError, OSError, ValueError) as exc:
            self._error = self._error or str(exc)

    def result(self) -> float | None:
        """The corpus METEOR score, or None (see ``error``)."""
        for thread in self._threads:
            thread.join(_JAVA_TIMEOUT_S)
        if self._threads and self._threads[-1].is_alive():
            self._error = f"METEOR took longer than {_JAVA_TIMEOUT_S} s"
            return None
        return self._value

    @property
    def error(self) -> str:
        return self._error or "METEOR did not run"

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        for thread in self._threads:
            thread.join(10)
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        proc.wait()


def _rouge_l(hyps: list[str], refs: list[list[str]]) -> float:
    from pycocoevalcap.rouge.rouge import Rouge

    ids = range(len(hyps))
    value, _ = Rouge().compute_score({i: refs[i] for i in ids}, {i: [hyps[i]] for i in ids})
    return float(value)


def _cider(hyps: list[str], refs: list[list[str]]) -> float:
    from pycocoevalcap.cider.cider import Cider

    ids = range(len(hyps))
    value, _ = Cider().compute_score({i: refs[i] for i in ids}, {i: [hyps[i]] for i in ids})
    return float(value)
