"""Loading, field mapping, cleaning, malformed rows and splits (no tokenizer needed)."""

from __future__ import annotations

import csv

import pytest

from medkit.data.rows import clean_text, load_rows, load_table
from medkit.errors import DataError
from tests.data.helpers import make_recipe, qa_rows, write_jsonl


def _all(splits):
    return [r for s in ("train", "val", "test") for r in splits[s]]


# ---- formats -------------------------------------------------------------------------------------


def test_medical_o1_layout_answer_is_cot_plus_response(tmp_path):
    rows = [
        {"Question": f"Q{i}: chest pain?", "Complex_CoT": f"Think {i}.", "Response": f"Answer {i}."}
        for i in range(6)
    ]
    src = write_jsonl(tmp_path / "o1.jsonl", rows)
    splits, rep = load_rows(make_recipe(src, data={"answer_template": "{cot}\n\nFinal: {response}"}))
    assert rep.layout == "cot"
    got = {r["messages"][-1]["content"]: r["answer"] for r in _all(splits)}
    assert got["Q3: chest pain?"] == "Think 3.\n\nFinal: Answer 3."
    default, _ = load_rows(make_recipe(src))
    assert {r["answer"] for r in _all(default)} >= {"Think 0.\n\nAnswer 0."}


def test_alpaca_layout_joins_instruction_and_input(tmp_path):
    rows = [
        {
            "instruction": f"Summarise note {i}.",
            "input": "BP 150/95." if i % 2 else "",
            "output": f"Hypertension {i}.",
        }
        for i in range(6)
    ]
    splits, rep = load_rows(make_recipe(write_jsonl(tmp_path / "a.jsonl", rows)))
    assert rep.layout == "alpaca"
    prompts = {r["answer"]: r["messages"][-1]["content"] for r in _all(splits)}
    assert prompts["Hypertension 1."] == "Summarise note 1.\n\nBP 150/95."
    assert prompts["Hypertension 2."] == "Summarise note 2."


def test_prompt_completion_and_text_layouts(tmp_path):
    pc = [{"prompt": f"Define term {i}.", "completion": f"Definition {i}."} for i in range(5)]
    splits, rep = load_rows(make_recipe(write_jsonl(tmp_path / "pc.jsonl", pc)))
    assert rep.layout == "prompt_completion" and len(_all(splits)) == 5
    (tmp_path / "notes.txt").write_text("".join(f"Clinical note number {i}.\n" for i in range(5)))
    splits, rep = load_rows(make_recipe(tmp_path / "notes.txt"))
    assert rep.layout == "text"
    assert all(r["messages"] == [] and r["answer"].startswith("Clinical note") for r in _all(splits))


def test_messages_layout_uses_the_last_assistant_turn(tmp_path):
    rows = [
        {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": f"Hi {i}"},
                      {"role": "assistant", "content": "Hello."}, {"role": "user", "content": f"Fever {i} days?"},
                      {"role": "assistant", "content": f"See a doctor after {i} days."}]}
        for i in range(5)
    ]  # fmt: skip
    splits, rep = load_rows(
        make_recipe(write_jsonl(tmp_path / "m.jsonl", rows), data={"system_prompt": "ignored"})
    )
    assert rep.layout == "messages"
    row = next(r for r in _all(splits) if r["answer"] == "See a doctor after 3 days.")
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant", "user"]
    assert row["messages"][0]["content"] == "Be kind."  # the row's own system turn wins


def test_messages_plus_diagnosis_becomes_one_transcript(tmp_path):
    rows = [
        {"messages": [{"role": "doctor", "content": "What brings you in?"}, {"role": "patient", "content": f"Cough {i} weeks."}],
         "diagnosis": f"J20.{i}"}
        for i in range(5)
    ]  # fmt: skip
    splits, rep = load_rows(
        make_recipe(write_jsonl(tmp_path / "d.jsonl", rows), data={"system_prompt": "Code it."})
    )
    assert rep.layout == "messages"
    row = next(r for r in _all(splits) if r["answer"] == "J20.2")
    assert row["messages"] == [
        {"role": "system", "content": "Code it."},
        {"role": "user", "content": "Doctor: What brings you in?\nPatient: Cough 2 weeks."},
    ]


def test_dialogue_code_layout_and_custom_templates(tmp_path):
    codes = ["L20.0", "L20.81", "L20.82", "L20.83", "L20.84"]  # billable: an ICD-10 set's labels are checked
    rows = [
        {"dialogue": f"Doctor: Hi.\nPatient: Rash {i}.", "code": code, "title": f"Eczema {i}"}
        for i, code in enumerate(codes)
    ]
    src = write_jsonl(tmp_path / "icd.jsonl", rows)
    splits, rep = load_rows(make_recipe(src))
    assert rep.layout == "dialogue" and {r["answer"] for r in _all(splits)} == set(codes)
    recipe = make_recipe(
        src,
        data={"prompt_template": "Code this encounter:\n{dialogue}", "answer_template": "{code} ({title})"},
    )
    splits, _ = load_rows(recipe)
    row = next(r for r in _all(splits) if r["answer"] == "L20.81 (Eczema 1)")
    assert row["messages"][-1]["content"].startswith("Code this encounter:\nDoctor: Hi.")


def test_fields_map_other_column_names(tmp_path):
    rows = [
        {"Patient": f"My knee hurts {i}", "Doctor": f"Rest it {i}.", "Description": "knee"} for i in range(5)
    ]
    src = write_jsonl(tmp_path / "chat.jsonl", rows)
    splits, rep = load_rows(
        make_recipe(src, data={"format": "qa", "fields": {"question": "Patient", "answer": "Doctor"}})
    )
    assert rep.layout == "qa" and {r["answer"] for r in _all(splits)} == {f"Rest it {i}." for i in range(5)}


def test_csv_and_parquet_sources(tmp_path):
    rows = qa_rows(6)
    with open(tmp_path / "qa.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    import datasets

    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "qa.parquet"))
    for name in ("qa.csv", "qa.parquet"):
        splits, rep = load_rows(make_recipe(tmp_path / name))
        assert rep.source_rows == 6 and len(_all(splits)) == 6


def test_json_array_file_and_json_lines_in_a_json_file(tmp_path):
    import json

    rows = qa_rows(6)
    (tmp_path / "qa.json").write_text(json.dumps(rows, indent=2))  # one array of objects, pretty-printed
    splits, rep = load_rows(make_recipe(tmp_path / "qa.json"))
    assert rep.source_rows == 6 and {r["answer"] for r in _all(splits)} == {r["answer"] for r in rows}
    write_jsonl(tmp_path / "lines.json", rows)  # JSON Lines under a .json name, as datasets reads it too
    splits, rep = load_rows(make_recipe(tmp_path / "lines.json"))
    assert rep.source_rows == 6 and rep.dropped == {}


# ---- errors --------------------------------------------------------------------------------------


def test_mapping_to_a_missing_column_lists_the_columns(tmp_path):
    src = write_jsonl(tmp_path / "qa.jsonl", qa_rows(5))
    with pytest.raises(DataError) as err:
        load_rows(make_recipe(src, data={"fields": {"question": "Question"}}))
    msg = err.value.one_line()
    assert msg.startswith("data.fields.question: column 'Question'")
    assert "it has: question, answer, topic" in msg


def test_format_whose_columns_are_absent_lists_the_columns(tmp_path):
    src = write_jsonl(tmp_path / "qa.jsonl", qa_rows(5))
    with pytest.raises(
        DataError, match=r"format 'cot' needs column\(s\) for cot; the dataset has: question, answer, topic"
    ):
        load_rows(make_recipe(src, data={"format": "cot"}))


def test_unknown_layout_and_unknown_template_field(tmp_path):
    src = write_jsonl(tmp_path / "odd.jsonl", [{"a": "x", "b": "y"}] * 3)
    with pytest.raises(DataError, match="cannot tell the row layout from the columns: a, b"):
        load_rows(make_recipe(src))
    src = write_jsonl(tmp_path / "qa.jsonl", qa_rows(5))
    with pytest.raises(DataError, match=r"data.answer_template: unknown field\(s\) respons"):
        load_rows(make_recipe(src, data={"answer_template": "{respons}"}))


def test_empty_dataset_after_cleaning(tmp_path):
    src = write_jsonl(tmp_path / "qa.jsonl", qa_rows(5))
    with pytest.raises(
        DataError,
        match=r"no rows left after cleaning \(5 rows read; dropped answer shorter than 500 chars: 5\)",
    ):
        load_rows(make_recipe(src, data={"clean": {"min_chars": 500}}))
    html_only = write_jsonl(tmp_path / "h.jsonl", [{"question": "Q?", "answer": "<p> </p>"}] * 3)
    with pytest.raises(DataError, match="no rows left"):
        load_rows(make_recipe(html_only, data={"malformed_threshold": 1.0}))


@pytest.mark.parametrize("name, text", [("empty.jsonl", ""), ("blank.jsonl", "\n  \n"), ("empty.csv", "")])
def test_empty_file_is_one_clear_error(tmp_path, name, text):
    src = tmp_path / name
    src.write_text(text)
    with pytest.raises(DataError, match=r"data.source: .* is empty: no rows to read"):
        load_rows(make_recipe(src))


def test_malformed_rows_are_counted_with_two_examples(tmp_path):
    rows = qa_rows(20)
    rows[3]["answer"] = None
    rows[5]["answer"] = ""
    rows[7]["question"] = {"text": "nested"}
    rows[9]["answer"] = None
    rows[11]["answer"] = None
    src = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError) as err:  # 5 of 20 = 25% > 5% default
        load_rows(make_recipe(src))
    msg = err.value.one_line()
    assert "5 of 20 rows are malformed" in msg and "missing field 'answer' (x3)" in msg and "row 4:" in msg
    splits, rep = load_rows(make_recipe(src, data={"malformed_threshold": 0.3}))
    assert rep.malformed == 5 and len(_all(splits)) == 15
    assert rep.dropped["malformed: missing field 'answer'"] == 3
    assert len(rep.examples["malformed: missing field 'answer'"]) == 2  # two examples, not all three
    assert rep.examples["malformed: missing field 'answer'"][0].startswith("row 4: ")
    assert rep.dropped["malformed: empty field 'answer'"] == 1
    assert rep.dropped["malformed: field 'question' is dict, not text"] == 1


def test_cleaning_strips_html_collapses_whitespace_and_dedupes(tmp_path):
    rows = qa_rows(6)
    rows[0]["answer"] = "<p>Asthma&nbsp;is <b>chronic</b>.</p>\n\n\n\nIt   narrows airways.  "
    rows.append(dict(rows[1]))  # an exact duplicate
    rows.append({**rows[2], "answer": rows[2]["answer"] + "  "})  # a duplicate once whitespace is cleaned
    src = write_jsonl(tmp_path / "c.jsonl", rows)
    splits, rep = load_rows(make_recipe(src))
    answers = {r["answer"] for r in _all(splits)}
    assert "Asthma is chronic .\n\nIt narrows airways." in answers
    assert rep.dropped["exact duplicate"] == 2 and len(answers) == 6
    assert clean_text("a<br/>b &amp; c  <5 mm", strip_html=True, collapse=True) == "a b & c <5 mm"


def test_max_chars_filter(tmp_path):
    rows = qa_rows(6)
    rows[0]["answer"] = "x" * 400
    splits, rep = load_rows(
        make_recipe(write_jsonl(tmp_path / "m.jsonl", rows), data={"clean": {"max_chars": 300}})
    )
    assert rep.dropped == {"longer than 300 chars": 1} and len(_all(splits)) == 5


# ---- splits --------------------------------------------------------------------------------------


def test_splits_are_seeded_disjoint_and_sized(tmp_path):
    src = write_jsonl(tmp_path / "qa.jsonl", qa_rows(100))
    a, rep = load_rows(make_recipe(src))
    b, _ = load_rows(make_recipe(src))
    c, _ = load_rows(make_recipe(src, data={"seed": 1}))
    assert rep.kept == {"train": 80, "val": 10, "test": 10}
    ids = {s: [r["row"] for r in a[s]] for s in a}
    assert ids == {s: [r["row"] for r in b[s]] for s in b}
    assert ids != {s: [r["row"] for r in c[s]] for s in c}
    sets = [set(v) for v in ids.values()]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert set().union(*sets) == set(range(1, 101))


def test_max_samples_is_taken_before_the_split(tmp_path):
    src = write_jsonl(tmp_path / "qa.jsonl", qa_rows(100))
    _, rep = load_rows(make_recipe(src, data={"max_samples": 40, "split_ratios": [0.7, 0.15, 0.15]}))
    assert rep.kept == {"train": 28, "val": 6, "test": 6}


def test_train_part_cuts_the_train_split_alone_and_its_two_parts_are_disjoint(tmp_path):
    """SFT on [0, 0.6] and reward tuning on [0.6, 1]: the same val and test, the train rows split between them."""
    src = write_jsonl(tmp_path / "qa.jsonl", qa_rows(100))
    whole, _ = load_rows(make_recipe(src))
    first, rep = load_rows(make_recipe(src, data={"train_part": [0.0, 0.6]}))
    rest, rep2 = load_rows(make_recipe(src, data={"train_part": [0.6, 1.0]}))
    assert rep.kept == {"train": 48, "val": 10, "test": 10} and rep2.kept["train"] == 32
    ids = {s: [r["row"] for r in whole[s]] for s in whole}
    assert [r["row"] for r in first["train"] + rest["train"]] == ids["train"]
    assert all([r["row"] for r in part[s]] == ids[s] for part in (first, rest) for s in ("val", "test"))


def test_existing_splits_are_used_from_a_saved_dataset(tmp_path):
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list(qa_rows(30)[:20]),
        "validation": datasets.Dataset.from_list(qa_rows(30)[20:25]),
        "test": datasets.Dataset.from_list(qa_rows(30)[25:]),
    })  # fmt: skip
    dd.save_to_disk(str(tmp_path / "saved"))
    recipe = make_recipe(tmp_path / "saved", data={"val_split": "validation", "test_split": "test"})
    splits, rep = load_rows(recipe)
    assert rep.kept == {"train": 20, "val": 5, "test": 5}
    recipe = make_recipe(tmp_path / "saved", data={"val_split": "validation"})  # test carved from train
    _, rep = load_rows(recipe)
    assert rep.kept["val"] == 5 and rep.kept["test"] == 2 and rep.kept["train"] == 18
    with pytest.raises(DataError, match="no split 'dev'.*train, validation, test"):
        load_rows(make_recipe(tmp_path / "saved", data={"val_split": "dev"}))


def test_hub_style_dataset_folder_goes_through_load_dataset(tmp_path):
    """A folder of data files is read by the same `load_dataset(id, config, split=...)` call as a hub id."""
    folder = tmp_path / "my-org--medqa"
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", qa_rows(24)[:20])
    write_jsonl(folder / "test.jsonl", qa_rows(24)[20:])
    recipe = make_recipe(folder, data={"test_split": "test"})
    table = load_table(recipe)
    assert set(table) == {"train", "val", "test"}
    assert table["test"].num_rows == 4 and table["train"].num_rows + table["val"].num_rows == 20
    assert table["train"].column_names == ["messages", "answer", "row"]
    with pytest.raises(DataError, match="cannot load split 'valid'"):
        load_rows(make_recipe(folder, data={"val_split": "valid"}))


def test_a_single_file_has_no_named_val_split(tmp_path):
    src = write_jsonl(tmp_path / "qa.jsonl", qa_rows(5))
    with pytest.raises(DataError, match="a single file has no split 'validation'"):
        load_rows(make_recipe(src, data={"val_split": "validation"}))
