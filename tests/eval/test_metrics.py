"""Metric functions against values computed by hand."""

from __future__ import annotations

import math

import pytest

from medkit.errors import EvalError
from medkit.eval import metrics as M


def test_rouge_on_known_strings():
    # pred and ref share 5 of 6 unigrams, 3 of 5 bigrams, and an LCS of 5 tokens.
    got = M.rouge(["the cat is on the mat"], ["the cat sat on the mat"])
    assert got["rouge1"] == pytest.approx(5 / 6)
    assert got["rouge2"] == pytest.approx(3 / 5)
    assert got["rougeL"] == pytest.approx(5 / 6)
    assert M.rouge(["", "a b"], ["x y", "a b"])["rouge1"] == pytest.approx(0.5)  # mean over rows


def test_bleu_on_known_strings():
    assert M.bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; same length, so no brevity penalty.
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25
    assert M.bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == pytest.approx(expected, rel=1e-6)


def test_icd_normalisation_and_extraction():
    assert M.normalize_icd(" e11.9 ") == "E119"
    assert M.normalize_icd("J45 .909") == "J45909"
    assert M.extract_icd("The code is e11.9.") == "E119"
    assert M.extract_icd("I10 and nothing else") == "I10"
    assert M.extract_icd("COVID-19 is U07.1") == "U071"
    assert M.extract_icd("no code here") is None


def test_icd_hierarchy():
    assert M.icd_chapter("E11.9") == M.icd_chapter("e66.9") == "4"  # endocrine chapter
    assert M.icd_chapter("I10") == "9"
    assert M.icd_chapter("E11.99") is None  # not a real code
    assert M.is_valid_icd("e11.65") and not M.is_valid_icd("E11.99") and not M.is_valid_icd(None)


def test_icd_metrics_by_hand():
    preds = ["E11.9", "e11.9", "E11.65", "E66.9", "I10", "no idea", "E11.99", "E11.9 (diabetes)", "E11"]
    refs = ["E11.9"] * 9
    got = M.icd_metrics(preds, refs)
    assert got["exact"] == pytest.approx(1 / 9)  # only the verbatim answer
    assert got["code_match"] == pytest.approx(3 / 9)  # case/dot insensitive, the first code of the text
    assert got["category_match"] == pytest.approx(6 / 9)  # E11.* (E11.99 is still category E11), E11
    assert got["chapter_match"] == pytest.approx(6 / 9)  # E11.99 is invalid; E11 a real category
    # one billable code and nothing else: not prose, not E11.99, not trailing text, not the category E11
    assert got["valid_rate"] == pytest.approx(5 / 9)


def test_parse_number():
    assert M.parse_number("about 1,250.5 mg") == 1250.5
    assert M.parse_number("HbA1c is 7.2%") == 7.2
    assert M.parse_number("-3.5 degrees") == -3.5
    assert M.parse_number("roughly .5") == 0.5
    assert M.parse_number("n/a") is None


def test_numeric_metrics_by_hand():
    got = M.numeric_metrics(["10", "about 20", "n/a", "35 mmol"], ["12", "18", "30", "30"])
    # parsed pairs (10,12), (20,18), (35,30): errors -2, 2, 5
    assert got["unparsed"] == pytest.approx(1 / 4)
    assert got["mae"] == pytest.approx(3.0)
    assert got["rmse"] == pytest.approx(math.sqrt(33 / 3))
    assert got["r2"] == pytest.approx(1 - 33 / 168)  # references 12, 18, 30 around their mean 20
    none = M.numeric_metrics(["?", "?"], ["1", "2"])
    assert none["unparsed"] == 1.0 and none["mae"] is None and none["r2"] is None
    with pytest.raises(EvalError, match="no number"):
        M.numeric_metrics(["1"], ["unknown"])


def test_stop_rate_and_perplexity():
    assert M.stop_rate([True, False, True, True]) == 0.75
    assert M.stop_rate([]) == 0.0
    assert M.perplexity(0.0) == 1.0
    assert M.perplexity(math.log(10)) == pytest.approx(10)
    assert M.perplexity(1e6) == math.inf


def test_task_metrics_fit():
    assert "bleu" in M.metrics_for_task("qa")
    assert M.metrics_for_task("icd10", ["exact", "loss"]) == ("loss", "exact")
    with pytest.raises(EvalError, match="'bleu' does not fit task 'icd10'"):
        M.metrics_for_task("icd10", ["bleu"])
    with pytest.raises(EvalError, match="unknown eval task"):
        M.metrics_for_task("poetry")


def test_guess_task():
    assert M.guess_task(["I10", "E11.9", "j45.909"]) == "icd10"
    assert M.guess_task(["12", "7.5", "-3"]) == "numeric"
    assert M.guess_task(["Asthma is a chronic disease.", "I10"]) == "qa"


def test_check_references():
    M.check_references("icd10", ["I10", "code E11.9"])
    M.check_references("numeric", ["12", "7.5 kg"])
    M.check_references("qa", ["anything"])
    with pytest.raises(EvalError, match="reference 1 has no number"):
        M.check_references("numeric", ["12", "twelve"])
    with pytest.raises(EvalError, match="task 'icd10' does not fit this data"):
        M.check_references("icd10", ["Asthma is a disease of the airways."])


def test_bleu_from_per_answer_counts_equals_sacrebleus_corpus_score():
    """bleu() sums each answer's (cached) n-gram counts: the same number as sacrebleu.corpus_bleu on the
    whole corpus, empty answers and short ones included."""
    import random

    import sacrebleu

    from medkit.eval.metrics import bleu

    rng = random.Random(0)
    words = "the a fever cough rest water doctor pain chest breath sleep take days mild severe . , ?".split()
    for _ in range(100):
        n = rng.randint(1, 10)
        preds = [" ".join(rng.choices(words, k=rng.randint(0, 20))) for _ in range(n)]
        refs = [" ".join(rng.choices(words, k=rng.randint(1, 20))) for _ in range(n)]
        assert bleu(preds, refs) == pytest.approx(sacrebleu.corpus_bleu(preds, [refs]).score, abs=1e-9)
