"""solo_cli.evaluation.metrics: hand-checkable cases, and agreement with the official E2E scorer on the test set."""

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from solo_cli.errors import UsageError
from solo_cli.evaluation.metrics import JAVA_NOTE, METRIC_NAMES, Scorer, Scores, score

TEST_SET = Path(__file__).resolve().parents[3] / "shared/data/e2e/test.jsonl"
HAVE_JAVA = shutil.which("java") is not None
needs_java = pytest.mark.skipif(not HAVE_JAVA, reason="METEOR, ROUGE-L and CIDEr need Java")
needs_test_set = pytest.mark.skipif(not TEST_SET.is_file(), reason=f"{TEST_SET} is not there")

# The official scorer's printout (official_scores.md) and the largest difference we accept.
OFFICIAL = {
    "first_reference": {"bleu": 1.0000, "nist": 14.2365, "meteor": 1.0000, "rouge_l": 1.0000, "cider": 3.4021},
    "constant_line": {"bleu": 0.1039, "nist": 0.0386, "meteor": 0.1038, "rouge_l": 0.3247, "cider": 0.0195},
}
# The brief's tolerances are BLEU/ROUGE-L 0.01, METEOR 0.02, NIST 0.15, CIDEr 0.05; we agree to the
# printed 4 decimals (measured differences are all below 6e-5), so assert that, plus rounding slack.
TOLERANCE = 1e-4


def _children() -> set[str]:
    """Process ids of this process's live children (Linux only; empty elsewhere)."""
    found: set[str] = set()
    for path in Path(f"/proc/{os.getpid()}/task").glob("*/children"):
        found.update(path.read_text().split())
    return found


def _test_set() -> list[dict]:
    return [json.loads(line) for line in TEST_SET.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def scorer():
    """One METEOR JVM for the Java tests below (its start-up is most of their time)."""
    with Scorer() as s:
        yield s


@pytest.fixture(scope="module")
def official_scores(scorer) -> dict[str, Scores]:
    """One scoring call per official case."""
    refs = [row["references"] for row in _test_set()]
    systems = {
        "first_reference": [r[0] for r in refs],
        "constant_line": ["The restaurant is located in the city centre."] * len(refs),
    }
    return {name: scorer.score(hyps, refs) for name, hyps in systems.items()}


# --- hand-checkable cases ---------------------------------------------------------------------


def test_bleu_by_hand():
    # hyp: the cat sat on the red mat (7 tokens), ref: the cat sat on the mat (6 tokens)
    # clipped precisions 6/7, 4/6, 3/5, 2/4; no brevity penalty (7 > 6)
    s = score(["the cat sat on the red mat"], [["the cat sat on the mat"]], java=False)
    assert s.bleu == pytest.approx((6 / 7 * 4 / 6 * 3 / 5 * 2 / 4) ** 0.25, abs=1e-12)
    # a 5-token prefix of the reference: all precisions 1, brevity penalty exp(1 - 6/5)
    s = score(["the cat sat on the"], [["the cat sat on the mat"]], java=False)
    assert s.bleu == pytest.approx(math.exp(1 - 6 / 5), abs=1e-12)


def test_bleu_uses_all_references_and_closest_length():
    # the second reference matches exactly: BLEU 1 whatever the first one says
    s = score(["the cat sat on the mat"], [["a dog", "the cat sat on the mat", "the cat sat on the mat today"]], java=False)
    assert s.bleu == pytest.approx(1.0)


def test_nist_by_hand():
    # One reference, so the information weights come from it alone (6 words, "the" twice):
    # unigrams: 2 * log2(6/2) + 4 * log2(6/1), over 6 output unigrams
    # bigrams: "the cat" and "the mat" carry log2(2/1) = 1, the other three 0, over 5 bigrams
    # higher orders: every prefix occurs once, so 0. No brevity penalty.
    s = score(["the cat sat on the mat"], [["the cat sat on the mat"]], java=False)
    expected = (2 * math.log2(3) + 4 * math.log2(6)) / 6 + 2 / 5
    assert s.nist == pytest.approx(expected, abs=1e-12)


def test_case_and_punctuation_do_not_matter_for_bleu():
    s = score(["The Cat sat on the MAT."], [["the cat sat on the mat ."]], java=False)
    assert s.bleu == pytest.approx(1.0)
    s = score(["the cat, the mat!"], [["The cat , the mat !"]], java=False)
    assert s.bleu == pytest.approx(1.0)


def test_without_java():
    s = score(["the cat sat on the mat", ""], [["the cat sat on the mat"], ["a dog barked"]], java=False)
    assert (s.meteor, s.rouge_l, s.cider) == (None, None, None)
    assert JAVA_NOTE in s.notes
    assert s.bleu is not None and 0 < s.bleu < 1
    assert s.nist is not None and s.nist > 0
    assert s.chrf is not None and 0 < s.chrf < 100
    d = s.to_dict()
    assert list(d) == [*METRIC_NAMES, "notes"]
    assert d["notes"] == [JAVA_NOTE]


def test_no_java_on_path_gives_the_note(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    s = score(["a b c"], [["a b c"]])
    assert s.meteor is None and s.rouge_l is None and s.cider is None
    assert s.notes == [JAVA_NOTE]
    assert s.bleu == pytest.approx(1.0)


def test_quiet_on_tokenized_looking_outputs(capfd, caplog):
    score(["the cat sat ."] * 120, [["the cat sat ."]] * 120, java=False)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert caplog.records == []


def test_empty_prediction_scores_zero():
    s = score([""], [["the cat sat on the mat"]], java=False)
    assert s.bleu == 0.0 and s.nist == 0.0 and s.chrf == 0.0


def test_bad_inputs():
    with pytest.raises(UsageError, match="2 predictions but 1 reference"):
        score(["a", "b"], [["a"]], java=False)
    with pytest.raises(UsageError, match="row 2: the prediction has no references"):
        score(["a", "b"], [["a"], []], java=False)
    with pytest.raises(UsageError, match="no references"):
        score(["a"], [["  "]], java=False)
    with pytest.raises(UsageError, match="list of strings"):
        score(["a"], ["a"], java=False)
    with pytest.raises(UsageError, match="no predictions"):
        score([], [], java=False)


@needs_java
def test_identical_with_java_is_perfect_quiet_and_clean(capfd, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    before = _children()
    s = score(["The cat sat on the mat."], [["The cat sat on the mat."]])
    assert s.bleu == pytest.approx(1.0)
    assert s.chrf == pytest.approx(100.0)
    assert s.rouge_l == pytest.approx(1.0)
    assert s.meteor == pytest.approx(1.0)
    assert s.notes == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing printed, Java's chatter included
    assert list(tmp_path.iterdir()) == []  # the PTB tokenizer's input files are gone
    assert _children() <= before  # the JVMs are closed


@needs_java
def test_empty_prediction_with_java(scorer):
    # whitespace is stripped; segment 1 is perfect, segment 2 (empty) scores 0, so ROUGE-L averages to 0.5
    s = scorer.score(["  The cat sat on the mat.  ", " "], [["The cat sat on the mat."], ["A dog barked."]])
    assert s.rouge_l == pytest.approx(0.5)
    assert s.meteor is not None and 0 < s.meteor < 1
    assert s.notes == []


# --- the official scorer's numbers on the E2E test set ---------------------------------------


@needs_test_set
@pytest.mark.parametrize("system", list(OFFICIAL))
def test_official_bleu_nist_chrf(official_scores, system):
    s = official_scores[system]
    for metric in ("bleu", "nist"):
        assert getattr(s, metric) == pytest.approx(OFFICIAL[system][metric], abs=TOLERANCE), metric
    if system == "first_reference":
        assert s.chrf == pytest.approx(100.0)
    else:
        assert s.chrf is not None and 0 < s.chrf < 100


@needs_test_set
@needs_java
@pytest.mark.parametrize("system", list(OFFICIAL))
def test_official_meteor_rouge_cider(official_scores, system):
    s = official_scores[system]
    assert s.notes == []
    for metric in ("meteor", "rouge_l", "cider"):
        assert getattr(s, metric) == pytest.approx(OFFICIAL[system][metric], abs=TOLERANCE), metric
