"""The checked-in demo data in recipes/data/: counts, schema, ICD-10-CM validity, reproducibility."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import simple_icd_10_cm as cm

DATA = Path(__file__).resolve().parents[2] / "recipes" / "data"
SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


def _rows(name: str) -> list[dict]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def medqa() -> list[dict]:
    return _rows("medqa_demo.jsonl")


@pytest.fixture(scope="module")
def icd() -> list[dict]:
    return _rows("icd10_demo.jsonl")


@pytest.fixture(scope="module")
def numeric() -> list[dict]:
    return _rows("numeric_demo.jsonl")


def test_counts(medqa, icd, numeric):
    assert len(medqa) >= 300
    assert len(icd) >= 300
    assert len(numeric) >= 150


def test_medqa_schema_style_and_no_duplicates(medqa):
    questions = [r["question"].strip().lower() for r in medqa]
    assert len(questions) == len(set(questions))
    assert len({r["answer"] for r in medqa}) == len(medqa)
    for row in medqa:
        assert set(row) == {"question", "answer", "topic"}
        assert row["question"].endswith("?"), row["question"]
        assert 25 <= len(row["answer"].split()) <= 90, row["question"]
        assert 1 <= len(SENTENCE_END.findall(row["answer"])) <= 4, row["question"]
    assert len({r["topic"] for r in medqa}) >= 8


def test_icd_codes_valid_billable_and_titled(icd):
    for row in icd:
        assert set(row) == {"dialogue", "code", "title"}
        code = row["code"]
        assert cm.is_valid_item(code), code
        assert cm.is_leaf(code), f"{code} is not billable"
        assert row["title"] == cm.get_description(code)
    assert len({r["code"] for r in icd}) >= 30


def test_icd_dialogues_hide_the_code_and_are_distinct(icd):
    assert len({r["dialogue"] for r in icd}) == len(icd)
    for row in icd:
        text = row["dialogue"]
        assert row["code"] not in text
        assert row["code"].replace(".", "") not in text.replace(".", "")
        lines = text.split("\n")
        assert lines[0].startswith("Doctor: ") and len(lines) >= 4
        assert all(line.startswith(("Doctor: ", "Patient: ")) for line in lines)


def test_icd_examples_per_code(icd):
    per_code: dict[str, int] = {}
    for row in icd:
        per_code[row["code"]] = per_code.get(row["code"], 0) + 1
    assert all(8 <= n <= 12 for n in per_code.values()), per_code


def _expected(question: str) -> float:
    """Recompute the answer from the numbers in the question text."""
    if "body mass index" in question or "BMI" in question:
        kg = float(re.search(r"(\d+) kg", question).group(1))
        m = float(re.search(r"(\d\.\d\d) m", question).group(1))
        return round(kg / m**2, 1)
    if "arterial" in question or "MAP" in question:
        systolic, diastolic = map(int, re.search(r"(\d+)(?:/| over )(\d+)", question).groups())
        return round((systolic + 2 * diastolic) / 3)
    fahrenheit = float(re.search(r"(\d+\.\d)", question).group(1))
    return round((fahrenheit - 32) * 5 / 9, 1)


def test_numeric_answers_parse_and_follow_from_the_text(numeric):
    questions = [r["question"] for r in numeric]
    assert len(questions) == len(set(questions))
    for row in numeric:
        assert set(row) == {"question", "answer"}
        value = float(row["answer"])
        assert value == pytest.approx(_expected(row["question"]), abs=0.051), row


@pytest.fixture(scope="module")
def generator():
    spec = importlib.util.spec_from_file_location("medkit_demo_generate", DATA / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_check_passes_from_the_command_line():
    done = subprocess.run(
        [sys.executable, str(DATA / "generate.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_generator_is_deterministic(generator):
    first, second = generator.outputs(), generator.outputs()
    assert first == second
    for path, data in first.items():
        assert path.read_bytes() == data, path.name


def test_generator_check_flags_a_changed_file(generator, tmp_path, monkeypatch, capsys):
    for name in ("icd10_demo.jsonl", "numeric_demo.jsonl"):
        shutil.copy(DATA / name, tmp_path / name)
    (tmp_path / "medqa_demo.jsonl").write_text("{}\n", encoding="utf-8")
    monkeypatch.setattr(generator, "HERE", tmp_path)
    assert generator.main(["--check"]) == 1
    out = capsys.readouterr().out
    assert "medqa_demo.jsonl" in out
    assert "icd10_demo.jsonl" not in out and "numeric_demo.jsonl" not in out
    (tmp_path / "icd10_demo.jsonl").unlink()
    assert generator.main(["--check"]) == 1
    assert "icd10_demo.jsonl" in capsys.readouterr().out
    assert generator.main([]) == 0
    for name in ("medqa_demo.jsonl", "icd10_demo.jsonl", "numeric_demo.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes()
