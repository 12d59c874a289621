"""BLEU, NIST and chrF as the official E2E scorer computes them (pure Python, on sacrebleu's statistics).

How each score follows NIST ``mteval-v13a`` (and where sacrebleu and nltk differ) is told in
:mod:`solo_cli.evaluation.metrics`.
"""

from __future__ import annotations

import math
from collections import Counter

# mteval-v13a lower-cases with Perl's tr/[A-Z]/[a-z]/, which folds ASCII letters only.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_NIST_ORDER = 5


def python_metrics(hyps: list[str], refs: list[list[str]]) -> tuple[float, float, float]:
    """BLEU, NIST and chrF of cleaned outputs and references (see :mod:`solo_cli.evaluation.metrics`)."""
    from sacrebleu.metrics import BLEU, CHRF

    max_refs = max(len(r) for r in refs)
    streams = [[r[i] if i < len(r) else None for r in refs] for i in range(max_refs)]
    lowered_hyps = [h.translate(_ASCII_LOWER) for h in hyps]
    lowered_streams = [[None if r is None else r.translate(_ASCII_LOWER) for r in s] for s in streams]
    # force=True: no sacrebleu warning about outputs that "look tokenized" (it would print to stderr)
    stats = BLEU(tokenize="13a", lowercase=False, force=True).corpus_score(lowered_hyps, lowered_streams)
    bleu = _mteval_bleu(stats.counts, stats.totals, stats.sys_len, stats.ref_len)
    return bleu, _nist(hyps, refs), CHRF().corpus_score(hyps, streams).score


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
