"""`medkit eval` under the ICD-10 constraint (issue 33): every model scored again with answers held to the
billable codes ('<model>+icd10' columns); transformers and llama.cpp walk the same automaton."""

from __future__ import annotations

import pytest

from medkit import icd10
from medkit.errors import EvalError
from medkit.eval.report import render_markdown
from medkit.eval.verb import evaluate_run

pytest.importorskip("simple_icd_10_cm")


def test_constrained_columns_only_hold_billable_codes_when_sampling(tiny_run):
    """Temperature 1.0 on a tiny random model: unconstrained answers are noise, constrained ones codes."""
    report = evaluate_run(tiny_run, overrides=["eval.constrain=auto", "eval.temperature=1.0"], write=False)
    assert list(report["table"]) == ["base", "tuned", "f32", "base+icd10", "tuned+icd10", "f32+icd10"]
    for name in ("base", "tuned", "f32"):
        answers = report["models"][f"{name}+icd10"]["rows"]["answers"]
        assert len(answers) == report["n"] and all(icd10.is_billable(a) for a in answers), (name, answers)
        assert report["table"][f"{name}+icd10"]["valid_rate"] == 1.0
        assert report["models"][f"{name}+icd10"]["constrain"] == "icd10"
        free = report["models"][name]["rows"]["answers"]
        assert not all(icd10.is_billable(a) for a in free)  # what the constraint is for
    # each model beside its constrained self, with paired intervals (eval.json and eval.md)
    block = report["constrained"]
    assert block["spec"] == "icd10" and list(block["models"]) == ["base", "tuned", "f32"]
    for name in ("base", "tuned", "f32"):
        valid = block["models"][name]["valid_rate"]
        assert valid["other"] == [1.0, 1.0, 1.0] and valid["difference"][0] == pytest.approx(
            1 - valid["free"][0]
        )
    md = render_markdown(report)
    assert (
        "## Unconstrained vs constrained to `icd10`" in md
        and "| valid_rate free | valid_rate +icd10 | valid_rate difference |" in md
    )
    # the README's table (docs/icd10_table.py) reads the same block: one row per model and report
    import runpy
    from pathlib import Path

    table = runpy.run_path(str(Path(__file__).parents[2] / "docs" / "icd10_table.py"))["table"]
    rows = table([report])
    assert len(rows) == 2 + 3 and rows[2].startswith("| base | T=1 (seed 0) | ")
    assert rows[3].split(" | ")[3] == "1.000 (1.000-1.000)"  # tuned, valid code +icd10
    # the constraint changes answers, not the likelihood of the references
    assert report["table"]["tuned+icd10"]["loss"] == pytest.approx(report["table"]["tuned"]["loss"], rel=1e-6)


def test_a_prefix_constraint_holds_transformers_and_llama_cpp_to_it(tiny_run):
    out = tiny_run / "j-codes"  # --out: a second table beside the run's own, the manifest untouched
    manifest = tiny_run / "run.json"
    before = manifest.read_text() if manifest.exists() else None
    report = evaluate_run(tiny_run, overrides=["eval.constrain=icd10:J"], tuned=False, out=out)
    assert sorted(p.name for p in out.iterdir()) == ["eval.json", "eval.md", "eval.png"]
    assert not (tiny_run / "eval.json").exists()
    assert (manifest.read_text() if manifest.exists() else None) == before
    assert "## Unconstrained vs constrained to `icd10:J`" in (out / "eval.md").read_text()
    for name in ("base+icd10", "f32+icd10"):
        answers = report["models"][name]["rows"]["answers"]
        assert all(a.startswith("J") and icd10.is_billable(a) for a in answers), (name, answers)


@pytest.mark.parametrize(
    "setting,needle",
    [("icd9", "eval.constrain: unknown constraint 'icd9'"), ("icd10:{missing}", "no such ICD-10 code file")],
)
def test_a_bad_eval_constrain_stops_before_scoring(tiny_run, setting, needle):
    setting = setting.format(missing=tiny_run / "missing.txt")
    with pytest.raises(EvalError) as info:
        evaluate_run(tiny_run, overrides=[f"eval.constrain={setting}"], write=False)
    assert needle in info.value.one_line()
    assert not (tiny_run / "eval.json").exists()


def test_a_tokenizer_that_cannot_spell_a_code_stops_before_scoring(tiny_run, monkeypatch):
    from medkit.eval import verb

    load = verb._tokenizer

    def no_dot(run, recipe):  # the run's tokenizer, its '.' read as ' .'
        tok = load(run, recipe)
        pieces = tok.convert_ids_to_tokens
        monkeypatch.setattr(
            tok, "convert_ids_to_tokens", lambda ids: ["Ġ." if t == "." else t for t in pieces(ids)]
        )
        return tok

    monkeypatch.setattr(verb, "_tokenizer", no_dot)
    with pytest.raises(EvalError) as info:
        evaluate_run(tiny_run, overrides=["eval.constrain=auto"])
    assert (
        "eval.constrain: this model's tokenizer cannot spell ICD-10 codes: no token for '.'"
        in info.value.one_line()
    )
    assert not (tiny_run / "eval.json").exists()
