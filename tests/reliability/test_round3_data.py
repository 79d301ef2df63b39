"""Issue 30 (reliability round 3), the data rows: ICD-10 labels that are not codes (9) and prompts shared
across splits (10). The library (`load_rows`) is what `medkit data`, `train` and `eval` all read through;
one CLI run each shows what the user sees.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medkit.data.rows import load_rows
from medkit.errors import DataError
from tests.data.helpers import make_recipe, qa_rows
from tests.reliability.conftest import REPO, assert_one_line_error, run_medkit

DEMO_ICD = REPO / "recipes" / "data" / "icd10_demo.jsonl"
BAD_LABELS = ["XYZ", "not a code", "123.4", "R69.X", "Z99.999", "E11.99999"]


def _icd_file(tmp_path: Path, bad: list[str], n_good: int = 200) -> Path:
    rows = [json.loads(line) for line in DEMO_ICD.read_text().splitlines()[:n_good]]
    for i, label in enumerate(bad):
        rows.append({"dialogue": f"Doctor: Case {i}?\nPatient: Something odd number {i}.", "code": label})
    path = tmp_path / "icd.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _icd_recipe(source: Path, **data):
    return make_recipe(
        source,
        data={"format": "dialogue", "answer_template": "{code}", **data},
        eval={"task": "icd10"},
    )


def test_row9_labels_that_are_not_codes_are_dropped_and_reported(tmp_path):
    """Before: XYZ, 'not a code', 123.4, R69.X, Z99.999, E11.99999 passed data, validate and train."""
    from medkit import icd10

    splits, report = load_rows(_icd_recipe(_icd_file(tmp_path, BAD_LABELS), malformed_threshold=0.05))
    kept = {r["answer"] for s in splits.values() for r in s}
    assert not kept & set(BAD_LABELS) and all(icd10.is_billable(c) for c in kept)
    reason = f"malformed: label is not a billable ICD-10-CM code ({icd10.release()})"
    assert report.dropped[reason] == len(BAD_LABELS) and report.malformed == len(BAD_LABELS)
    assert report.examples[reason][0].endswith("'XYZ'; not code-shaped")
    assert "nearest: R69" in " ".join(report.examples[reason]) or "R69.X" not in report.examples[reason][0]


def test_row9_nearest_codes_are_given_as_hints(tmp_path):
    splits, report = load_rows(
        _icd_recipe(_icd_file(tmp_path, ["R69.X", "E11.99999"]), malformed_threshold=0.05)
    )
    (examples,) = [v for k, v in report.examples.items() if "ICD-10-CM" in k]
    assert examples[0].endswith("'R69.X'; nearest: R69") and "nearest: E11.9" in examples[1]


def test_row9_over_the_threshold_is_one_line(tmp_path):
    with pytest.raises(DataError) as err:
        load_rows(_icd_recipe(_icd_file(tmp_path, BAD_LABELS, n_good=20)))
    line = err.value.one_line()
    assert "6 of 26 rows are malformed" in line and "not a billable ICD-10-CM code" in line


def test_row9_cli_data_and_validate(tmp_path):
    """`medkit data` refuses labels over the threshold naming the release; `validate` names the release."""
    from medkit import icd10

    source = _icd_file(tmp_path, BAD_LABELS, n_good=20)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "config.json").write_text('{"model_type": "llama"}')
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[model]\nbase = "base"\n[data]\nsource = "{source.name}"\nformat = "dialogue"\n'
        'answer_template = "{code}"\n[eval]\ntask = "icd10"\n'
    )
    assert_one_line_error(
        run_medkit("data", str(recipe), cwd=tmp_path), "not a billable ICD-10-CM code", icd10.release()
    )
    out = run_medkit("validate", str(recipe), cwd=tmp_path)
    assert out.code == 0 and f"billable ICD-10-CM codes of {icd10.release()}" in out.stdout


def test_row9_auto_task_with_code_labels_is_checked(tmp_path):
    recipe = make_recipe(
        _icd_file(tmp_path, ["Z99.999"]), data={"format": "dialogue", "answer_template": "{code}"}
    )
    _, report = load_rows(recipe)
    assert report.malformed == 1


def _leaky(tmp_path: Path) -> Path:
    rows = qa_rows(40)
    rows[30] = {**rows[2], "question": rows[2]["question"].upper()}  # a case variant
    rows[31] = {**rows[3], "answer": "Another answer to the same question."}
    rows[32] = {**rows[4], "question": "  " + rows[4]["question"].replace(" ", "  ") + "!"}
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_row10_prompt_overlap_is_reported_and_can_be_dropped(tmp_path):
    """Before: case variants and the same question with another answer stayed in train and val/test."""
    from medkit.data.checks import prompt_key

    source = _leaky(tmp_path)
    base = {"val_split": "", "split_ratios": [0.5, 0.25, 0.25], "seed": 3}
    splits, report = load_rows(make_recipe(source, data=base))
    train = {prompt_key(r) for r in splits["train"]}
    shared = {s: sum(prompt_key(r) in train for r in splits[s]) for s in ("val", "test")}
    assert report.overlap == shared and sum(shared.values()) > 0
    splits, report = load_rows(make_recipe(source, data={**base, "clean": {"drop_overlap": True}}))
    train = {prompt_key(r) for r in splits["train"]}
    assert not any(prompt_key(r) in train for s in ("val", "test") for r in splits[s])
    assert report.dropped["prompt also in val/test (data.clean.drop_overlap)"] == sum(shared.values())


def test_row10_overlap_in_medkit_data_json(tmp_path, tiny_model_dir):
    source = _leaky(tmp_path)
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[model]\nbase = "{tiny_model_dir("llama")}"\n[data]\nsource = "{source.name}"\nseed = 3\n'
        "split_ratios = [0.5, 0.25, 0.25]\n"
    )
    out = run_medkit("data", str(recipe), "--json", cwd=tmp_path)
    assert out.code == 0, out.stderr
    stats = json.loads(out.stdout[out.stdout.index("{") :])
    assert sum(stats["prompt_overlap"].values()) > 0


@pytest.mark.slow
def test_row10_and_row14_train_records_overlap_and_says_no_val_cleanly(tiny_model_dir, tmp_path, monkeypatch):
    """run.json's data section holds the prompt overlap; without a val split the summary line ended
    "..., ; adapter in" (row 14)."""
    import io

    import tomli_w
    from rich.console import Console

    from medkit.train.verb import train

    source = _leaky(tmp_path)
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(tomli_w.dumps({
        "name": "tiny", "model": {"base": str(tiny_model_dir("llama"))},
        "data": {"source": str(source), "format": "qa", "max_seq_len": 64, "split_ratios": [0.6, 0.0, 0.4], "seed": 3},
        "lora": {"r": 2, "alpha": 4}, "train": {"max_steps": 2, "batch_size": 2, "eval_every": 0, "save_every": 0},
    }))  # fmt: skip
    monkeypatch.setenv("MEDKIT_RUNS", str(tmp_path / "runs"))
    buf = io.StringIO()
    result = train(recipe, console=Console(file=buf, highlight=False, soft_wrap=True, width=300))
    done = next(line for line in buf.getvalue().splitlines() if "adapter in" in line)
    assert ", ;" not in done and "tok/s); adapter in" in done, done
    data = json.loads((result.run_dir / "run.json").read_text())["data"]
    assert data["prompt_overlap"]["test"] > 0 and data["prompt_overlap"]["val"] == 0
