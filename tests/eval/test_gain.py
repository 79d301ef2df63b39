"""medkit.eval.gain: the share of the fine-tuning gain kept, and its paired bootstrap interval."""

from __future__ import annotations

import pytest

from medkit.eval.gain import MEDIAN, gain_intervals
from medkit.eval.metrics import Scored, compute

METRICS = ("loss", "rouge1", "rougeL", "bleu", "stop_rate")
REFS = [f"drink water and rest for {w} days then see a doctor if the {w} fever stays" for w in "abcdefghijkl"]


def _scored(answers: list[str], nll: list[float]) -> Scored:
    tokens = [10] * len(nll)
    return Scored(answers, REFS, [True] * len(answers), sum(nll), sum(tokens), nll, tokens)


def _models() -> dict[str, Scored]:
    base = _scored(["see a doctor"] * len(REFS), [30.0 + i % 3 for i in range(len(REFS))])
    tuned = _scored(list(REFS), [12.0 + i % 4 for i in range(len(REFS))])
    # half the answers right, half the base's; the likelihood half way
    half = _scored([r if i % 2 else "see a doctor" for i, r in enumerate(REFS)],
                   [(a + b) / 2 for a, b in zip(base.row_nll, tuned.row_nll, strict=True)])  # fmt: skip
    return {"base": base, "tuned": tuned, "as_tuned": tuned, "as_base": base, "half": half}


def test_take_resamples_answers_and_likelihood_together():
    s = _models()["tuned"]
    t = s.take([0, 0, 3])
    assert t.predictions == [REFS[0], REFS[0], REFS[3]] and t.references == t.predictions
    assert t.nll == s.row_nll[0] * 2 + s.row_nll[3] and t.tokens == 30 and t.row_tokens == [10, 10, 10]
    assert compute(("loss",), t)["loss"] == pytest.approx(t.nll / 30)
    u = s.take([1, 2], examples=[5])  # examples drawn apart from the answers
    assert u.predictions == [REFS[1], REFS[2]] and u.row_nll == [s.row_nll[5]]


def test_intervals_pin_the_exact_copies_and_bracket_the_point_estimate():
    models = _models()
    iv = gain_intervals(models, METRICS, draws=200)
    assert set(iv) == {"as_tuned", "as_base", "half"}
    # a copy of the tuned model keeps all of the gain in every draw, a copy of the base none
    for name in (MEDIAN, "loss", "rouge1", "bleu"):
        assert iv["as_tuned"][name] == [1.0, 1.0] and iv["as_base"][name] == [0.0, 0.0], name
    # half the answers of each: the shares scatter around the point estimate, which lies inside
    from medkit.eval.gain import gain_kept

    point = gain_kept({k: compute(METRICS, s) for k, s in models.items()})["half"]
    for name in ("rouge1", "bleu"):
        lo, hi = iv["half"][name]
        assert lo < point[name] < hi and hi - lo > 0.1, (name, lo, hi, point[name])
    assert iv["half"]["loss"][0] == pytest.approx(0.5, abs=0.08)  # the likelihood moved half way everywhere
    assert gain_intervals(models, METRICS, draws=200) == iv  # seeded: the same every run


def test_no_interval_without_base_tuned_and_an_export():
    models = _models()
    assert gain_intervals({"base": models["base"], "tuned": models["tuned"]}, METRICS) == {}
    assert gain_intervals({"tuned": models["tuned"], "half": models["half"]}, METRICS) == {}
    one = {k: s.take([0]) for k, s in models.items()}
    assert gain_intervals(one, METRICS) == {}  # a single example has nothing to resample


def test_paired_rates_compare_two_ways_of_answering_on_the_same_draws():
    from medkit.eval.gain import paired_rates

    refs = ["J45.909", "E11.9", "I10", "N39.0"] * 10
    free = Scored(["J45.909", "The code is E11.9", "I10", "no idea"] * 10, refs)  # prose is not a valid code
    held = Scored(["J45.909", "E11.9", "I10", "N39.9"] * 10, refs)  # one billable code each
    got = paired_rates({"m": free, "m+icd10": held, "other": held}, [("m", "m+icd10"), ("x", "x+icd10")],
                       ("loss", "exact", "chapter_match", "valid_rate", "stop_rate"), draws=300)  # fmt: skip
    assert list(got) == ["m"] and list(got["m"]) == ["exact", "chapter_match", "valid_rate"]
    valid = got["m"]["valid_rate"]
    assert valid["free"][0] == pytest.approx(0.5) and valid["other"] == [1.0, 1.0, 1.0]
    assert valid["free"][1] < 0.5 < valid["free"][2]
    assert valid["difference"][0] == pytest.approx(0.5) and 0 < valid["difference"][1] <= 0.5
    exact = got["m"]["exact"]  # 0.50 -> 0.75: E11.9 said bare; N39.9 still wrong
    assert exact["difference"][0] == pytest.approx(0.25) and exact["difference"][1] > 0
    assert got["m"]["chapter_match"]["difference"][:1] == [pytest.approx(0.25)]


def test_difference_interval_is_paired_and_brackets_the_difference():
    from medkit.eval.gain import difference_intervals

    models = _models()
    got = difference_intervals(models, [("tuned", "as_tuned"), ("tuned", "half"), ("x", "tuned")], METRICS,
                               draws=300)  # fmt: skip
    assert set(got) == {"tuned - as_tuned", "tuned - half"}  # a pair with an unscored model is left out
    # the same answers on the same draws: the difference is exactly 0 in every one of them
    for name in ("loss", "rouge1", "bleu"):
        assert got["tuned - as_tuned"][name] == {"value": 0.0, "interval": [0.0, 0.0]}
    # half the answers differ: the difference of the whole set lies inside an interval of real width
    whole = compute(METRICS, models["tuned"]), compute(METRICS, models["half"])
    for name in ("rouge1", "loss"):
        d = got["tuned - half"][name]
        assert d["value"] == pytest.approx(whole[0][name] - whole[1][name], abs=1e-4)
        lo, hi = d["interval"]
        assert lo < d["value"] < hi and hi - lo > 0.01, (name, d)
    assert got["tuned - half"]["rouge1"]["interval"][0] > 0  # tuned is surely better in rouge1 here
    assert difference_intervals(models, [("tuned", "half")], METRICS, draws=300) == {
        "tuned - half": got["tuned - half"]
    }  # seeded
