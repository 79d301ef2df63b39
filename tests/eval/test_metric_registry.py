"""One home per metric: medkit.eval.metrics.METRICS. Eval computes from it, the report formats, orders and
judges gains from it, the recipe help lists it; none of them names a metric of its own.

Add a metric: one function over `Scored` and one `Metric` row, plus a row in KNOWN_VALUES below.
"""

from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest

from medkit.errors import EvalError
from medkit.eval import metrics as M

REPO = Path(__file__).resolve().parents[2]
USERS = (
    "toolkit/eval/report.py",
    "toolkit/eval/score.py",
    "toolkit/eval/verb.py",
    "toolkit/recipe/schema.py",
)

# (task, predictions, references, stopped, nll, tokens) -> expected values of every metric of the task
KNOWN_VALUES = [
    pytest.param(
        "icd10", ["E11.9", "The code is I10"], ["E11.9", "I10"], [True, False], 4.0, 2,
        {"loss": 2.0, "ppl": math.exp(2.0), "exact": 0.5, "code_match": 1.0, "category_match": 1.0,
         "chapter_match": 1.0, "valid_rate": 0.5, "stop_rate": 0.5},  # prose around a code is not valid
        id="icd10",
    ),
    pytest.param(
        "numeric", ["about 12 mg", "none"], ["10", "20"], [True, True], 0.0, 0,
        {"loss": None, "ppl": None, "mae": 2.0, "rmse": 2.0, "r2": None, "unparsed": 0.5, "stop_rate": 1.0},
        id="numeric",
    ),
    pytest.param(
        "qa", ["the cat sat on the mat"], ["the cat sat on the mat"], [True], 1.0, 4,
        {"loss": 0.25, "ppl": math.exp(0.25), "rouge1": 1.0, "rouge2": 1.0, "rougeL": 1.0, "bleu": 100.0,
         "stop_rate": 1.0},
        id="qa",
    ),
    pytest.param("text", ["x"], ["y"], [False], 3.0, 3, {"loss": 1.0, "ppl": math.e, "stop_rate": 0.0}, id="text"),
]  # fmt: skip


def test_every_metric_eval_reports_has_a_complete_row():
    reported = {m for task in M.TASKS for m in M.metrics_for_task(task)}
    assert reported == set(M.METRICS)
    for name, row in M.METRICS.items():
        assert row.name == name and row.help and row.tasks and set(row.tasks) <= set(M.TASKS)
        assert isinstance(row.higher_is_better, bool) and isinstance(row.rate, bool)
        assert row.show(0.5) == format(0.5, row.fmt) and row.show(None) == "-" and row.show(math.inf) == "inf"
        assert row.label.endswith("↑" if row.higher_is_better else "↓")
    for task in M.TASKS:
        assert {"loss", "ppl", "stop_rate"} <= set(M.metrics_for_task(task))


@pytest.mark.parametrize(("task", "preds", "refs", "stopped", "nll", "tokens", "expected"), KNOWN_VALUES)
def test_registry_functions_compute_each_task(task, preds, refs, stopped, nll, tokens, expected):
    names = M.metrics_for_task(task)
    assert set(names) == set(expected)
    got = M.compute(names, M.Scored(preds, refs, stopped, nll, tokens))
    assert list(got) == list(names)
    for name, want in expected.items():
        assert got[name] == (None if want is None else pytest.approx(want, abs=1e-6)), name


def test_a_shared_function_runs_once(monkeypatch):
    calls = []
    real = M.METRICS["exact"].compute

    def counted(scored):
        calls.append(1)
        return real(scored)

    for name in ("exact", "code_match", "valid_rate"):
        monkeypatch.setitem(M.METRICS, name, dataclasses.replace(M.METRICS[name], compute=counted))
    M.compute(("exact", "code_match", "valid_rate"), M.Scored(["I10"], ["I10"]))
    assert len(calls) == 1


def test_unknown_metric_and_task_are_eval_errors():
    with pytest.raises(EvalError, match="unknown metric 'f1'"):
        M.compute(("f1",), M.Scored([], []))
    with pytest.raises(EvalError, match="unknown eval task 'poetry'"):
        M.metrics_for_task("poetry")


def _report(metrics, table):
    from medkit.eval.report import gain_kept

    return {
        "recipe": "r", "split": "test", "n": 2, "task": "qa", "base": "b", "metrics": list(metrics),
        "generation": {"greedy": True, "temperature": 0.0, "max_new_tokens": 8}, "table": table,
        "gain_kept": gain_kept(table), "models": {k: {"samples": [], "qualitative": []} for k in table},
    }  # fmt: skip


def test_adding_a_metric_is_one_function_and_one_row(monkeypatch):
    """A new metric (answer length, lower is better, one decimal) shows up in the task's metrics, the
    computed values, the table with its arrow, format and best cell, the gain kept, and the recipe help."""
    from medkit.eval.report import render_markdown

    def answer_words(s):
        return {"answer_words": sum(len(p.split()) for p in s.predictions) / max(len(s.predictions), 1)}

    row = M.Metric("answer_words", answer_words, ("qa",), False, False, ".1f", "mean words per answer")
    monkeypatch.setitem(M.METRICS, "answer_words", row)

    names = M.metrics_for_task("qa")
    assert names[-1] == "answer_words" and "answer_words" not in M.metrics_for_task("icd10")
    assert M.compute(names, M.Scored(["a b c", "d"], ["x", "y"], [True, True]))["answer_words"] == 2.0
    table = {
        "base": {"loss": 2.0, "answer_words": 30.0},
        "tuned": {"loss": 1.0, "answer_words": 10.0},
        "q4_0": {"loss": 1.5, "answer_words": 15.0},
    }
    report = _report(["loss", "answer_words"], table)
    assert report["gain_kept"] == {
        "q4_0": {"loss": 0.5, "answer_words": 0.75}
    }  # lower is better: 20 -> 15 kept
    md = render_markdown(report)
    assert "| answer_words ↓ | 30.0 | **10.0** | 15.0 |" in md
    assert "answer_words" in M.task_help()


def test_report_direction_format_and_gain_come_from_the_rows(monkeypatch):
    """Flip a row and the report follows: the code that renders has no metric facts of its own."""
    from medkit.eval.report import render_markdown

    table = {"base": {"loss": 2.0, "ppl": 7.389}, "tuned": {"loss": 1.0, "ppl": 2.718}}
    assert "| loss ↓ | 2.0000 | **1.0000** |" in render_markdown(_report(["loss", "ppl"], table))
    flipped = M.Metric("loss", M.METRICS["loss"].compute, M.TASKS, True, False, ".1f", "x", gain=False)
    monkeypatch.setitem(M.METRICS, "loss", flipped)
    table["q"] = {"loss": 1.5, "ppl": 4.0}
    report = _report(["loss", "ppl"], table)
    assert "| loss ↑ | **2.0** | 1.0 | 1.5 |" in render_markdown(report)
    assert report["gain_kept"] == {"q": {}}  # loss no longer counts, ppl never does


def test_recipe_eval_task_help_is_the_registry_s():
    from medkit.recipe import TASKS, describe_keys

    assert TASKS == ("auto", *M.TASKS)
    help_text = dict((k, h) for k, _, h in describe_keys())["eval.task"]
    assert M.task_help() in help_text


def test_report_and_eval_code_name_no_metric_of_their_own():
    """No metric name is a string constant in the eval verb, scorer, report or recipe modules."""
    names = set(M.METRICS)
    found = set()
    for rel in USERS:
        tree = ast.parse((REPO / rel).read_text(encoding="utf-8"))
        found |= {
            (rel, node.value)
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names
        }
    assert not found, f"metric names outside medkit.eval.metrics: {sorted(found)}"
