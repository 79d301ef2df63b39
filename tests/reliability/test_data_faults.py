"""Bad data files: each fault is one line naming the file (and line) and what is wrong (issue 13).

One table, FAULTS: a fault is the files it writes, the recipe's data.source (and extra [data] keys), and
the words its error line must hold. Every row runs through the library (`load_rows`, fast) and through the
real CLI (`medkit data`, one subprocess a row; the rows not marked `cli_fast` only in the slow tier).
A malformed JSON line is a dropped row counted against data.malformed_threshold, not the end of the load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from medkit.data.rows import load_rows
from medkit.errors import DataError
from tests.data.helpers import make_recipe, qa_rows
from tests.reliability.conftest import assert_one_line_error, run_medkit


def _jsonl(rows: list[Any]) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


GOOD9 = qa_rows(9)
BROKEN = '{"question": "What is a fever?", "answer": "A high temperature"'  # the closing brace is lost
CSV_NO_HEADER = (
    "What is asthma?,A chronic disease of the airways.\nWhat is gout?,Uric acid crystals in joints.\n"
)


@dataclass(frozen=True)
class Fault:
    name: str
    files: dict[str, str | bytes]
    source: str
    needles: tuple[str, ...]
    data: dict[str, Any] = field(default_factory=dict)
    vanish: bool = False  # the source is removed after the recipe was checked (data moved since training)
    cli_fast: bool = False


FAULTS = [
    Fault("malformed json line over the threshold", {"qa.jsonl": _jsonl([*GOOD9[:3], BROKEN, *GOOD9[3:]])},
          "qa.jsonl", ("1 of 10 rows are malformed", "malformed json", "qa.jsonl:4:", "data.malformed_threshold=0.05"),
          cli_fast=True),
    Fault("every line malformed (a CSV named .jsonl)", {"qa.jsonl": CSV_NO_HEADER}, "qa.jsonl",
          ("2 of 2 rows are malformed", "malformed json (x2)", "qa.jsonl:1:")),
    Fault("line that is JSON but not an object", {"qa.jsonl": _jsonl([*GOOD9[:5], '["What is asthma?"]'])},
          "qa.jsonl", ("1 of 6 rows are malformed", "line is not a JSON object", "qa.jsonl:6: an array")),
    Fault("line that is not UTF-8", {"qa.jsonl": _jsonl(GOOD9[:2]).encode() + b'{"question": "\xff\xfe"}\n'},
          "qa.jsonl", ("1 of 3 rows are malformed", "malformed json", "qa.jsonl:3: not UTF-8")),
    Fault("missing column", {"qa.jsonl": _jsonl(GOOD9)}, "qa.jsonl",
          ("data.fields.question: column 'Question'", "qa.jsonl", "it has: question, answer, topic"),
          data={"fields": {"question": "Question"}}, cli_fast=True),
    Fault("columns of no known layout", {"qa.jsonl": _jsonl([{"a": "x", "b": "y"}] * 3)}, "qa.jsonl",
          ("cannot tell the row layout from the columns: a, b", "qa.jsonl")),
    Fault("empty file", {"qa.jsonl": ""}, "qa.jsonl", ("data.source:", "qa.jsonl is empty: no rows to read")),
    Fault("CSV with a header and no rows", {"qa.csv": "question,answer\n"}, "qa.csv",
          ("data.source:", "qa.csv has no rows")),
    Fault("JSON array in a .jsonl file", {"qa.jsonl": json.dumps(GOOD9)}, "qa.jsonl",
          ("qa.jsonl holds one JSON array, not JSON Lines", "name it .json"), cli_fast=True),
    Fault("broken JSON array", {"qa.json": "[\n" + json.dumps(GOOD9[0]) + ",\n" + BROKEN + "\n"}, "qa.json",
          ("qa.json:4: not valid JSON: Expecting ',' delimiter",)),
    Fault("CSV without a header", {"qa.csv": CSV_NO_HEADER}, "qa.csv",
          ("columns: What is asthma?", "qa.csv", "the first line of a CSV must name its columns")),
    Fault("unsupported file type", {"qa.xlsx": "PK\x03\x04"}, "qa.xlsx", ("unsupported file type '.xlsx'", "qa.xlsx")),
    Fault("path that does not exist", {"qa.jsonl": _jsonl(GOOD9)}, "qa.jsonl", ("qa.jsonl", "does not exist"),
          vanish=True, cli_fast=True),
    Fault("directory instead of a file", {"data/notes.md": "not data"}, "data",
          ("data.source:", "data is a folder with no data files", "point data.source at a data file")),
]  # fmt: skip


def _write(root: Path, fault: Fault) -> Path:
    for name, content in fault.files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return root / fault.source


def _vanish(root: Path, fault: Fault) -> None:
    if fault.vanish:
        for name in fault.files:
            (root / name).unlink()


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: f.name)
def test_library_raises_one_line_data_error(tmp_path, fault):
    recipe = make_recipe(_write(tmp_path, fault), data=fault.data)
    _vanish(tmp_path, fault)
    with pytest.raises(DataError) as err:
        load_rows(recipe)
    line = err.value.one_line()
    assert "\n" not in line
    for needle in fault.needles:
        assert needle in line, f"{needle!r} not in {line!r}"


@pytest.mark.parametrize(
    "fault",
    [pytest.param(f, marks=() if f.cli_fast else pytest.mark.slow) for f in FAULTS],
    ids=lambda f: f.name,
)
def test_cli_prints_one_line(tmp_path, fault):
    (tmp_path / "base").mkdir()  # the data fails before the tokenizer is read: config.json is enough
    (tmp_path / "base" / "config.json").write_text('{"model_type": "llama"}')
    source = _write(tmp_path, fault)
    keys = "".join(f"{k} = {json.dumps(v)}\n" for k, v in fault.data.items() if not isinstance(v, dict))
    tables = "".join(
        f"[data.{k}]\n" + "".join(f"{a} = {json.dumps(b)}\n" for a, b in v.items())
        for k, v in fault.data.items()
        if isinstance(v, dict)
    )
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\nbase = "base"\n[data]\nsource = "{source.name}"\n{keys}{tables}')
    _vanish(tmp_path, fault)
    out = run_medkit("data", str(recipe), cwd=tmp_path, timeout=300)
    assert_one_line_error(out, *fault.needles)


# ---- under the threshold: malformed lines are dropped rows, counted with their line numbers ---------------


def test_malformed_lines_under_the_threshold_are_dropped_rows(tmp_path):
    rows = [*GOOD9[:3], BROKEN, *GOOD9[3:6], "[1, 2]", *GOOD9[6:]]
    (tmp_path / "qa.jsonl").write_text(_jsonl(rows))
    splits, report = load_rows(make_recipe(tmp_path / "qa.jsonl", data={"malformed_threshold": 0.2}))
    assert report.source_rows == 11 and report.malformed == 2
    assert report.dropped == {"malformed json": 1, "malformed: line is not a JSON object": 1}
    assert report.examples["malformed json"][0].startswith("qa.jsonl:4: Expecting ',' delimiter")
    assert report.examples["malformed: line is not a JSON object"] == ["qa.jsonl:8: an array: [1, 2]"]
    kept = {r["row"]: r["answer"] for s in splits.values() for r in s}
    assert sorted(kept) == [1, 2, 3, 5, 6, 7, 9, 10, 11]  # a row's number is its line in the file
    assert kept[9] == GOOD9[6]["answer"]
    with pytest.raises(DataError, match=r"2 of 11 rows are malformed.*qa.jsonl:4: "):
        load_rows(make_recipe(tmp_path / "qa.jsonl", data={"malformed_threshold": 0.1}))


def test_the_data_verb_shows_malformed_lines_in_its_stats(tmp_path, tiny_model_dir):
    (tmp_path / "qa.jsonl").write_text(_jsonl([*GOOD9[:3], BROKEN, *GOOD9[3:]]))
    recipe = tmp_path / "r.toml"
    recipe.write_text(
        f'[model]\nbase = "{tiny_model_dir("llama")}"\n[data]\nsource = "qa.jsonl"\nmalformed_threshold = 0.2\n'
    )
    out = run_medkit("data", str(recipe), "--json", cwd=tmp_path, timeout=300)
    assert out.code == 0, out.stderr
    stats = json.loads(out.stdout)
    assert stats["source_rows"] == 10 and stats["malformed"] == 1
    assert stats["dropped"] == {"malformed json": 1}
    assert stats["drop_examples"]["malformed json"][0].startswith("qa.jsonl:4: Expecting ',' delimiter")
    assert sum(stats["rows_kept"].values()) == 9
