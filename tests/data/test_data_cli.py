"""`medkit data`: rendered examples with the trained part marked, the stats table, the plot, errors."""

from __future__ import annotations

import pytest

from medkit.cli import main
from tests.data.helpers import qa_rows, write_jsonl


def _recipe(tmp_path, base, extra: str = "") -> str:
    write_jsonl(tmp_path / "qa.jsonl", qa_rows(30))
    path = tmp_path / "r.toml"
    path.write_text(
        f'[model]\nbase = "{base}"\n\n[data]\nsource = "qa.jsonl"\nsystem_prompt = "Be brief."\n'
        f"max_seq_len = 128\n{extra}"
    )
    return str(path)


def _run(argv, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as ex:
        main(argv)
    out = capsys.readouterr()
    return ex.value.code, out.out, out.err


def test_show_marks_the_trained_part_and_prints_stats(tmp_path, tokenizer_dirs, capsys):
    recipe = _recipe(tmp_path, tokenizer_dirs["qwen2"])
    plot = tmp_path / "plots" / "len.png"
    code, out, err = _run(["data", recipe, "--show", "2", "--split", "val", "--plot", str(plot)], capsys)
    assert code == 0, err
    assert out.count("val example ") == 2
    # not a terminal: the trained span is wrapped in « » and holds the answer and the end-of-turn token
    spans = [s.split("»")[0] for s in out.split("«")[1:]]
    assert len(spans) == 2 and all(s.endswith("<|im_end|>") for s in spans)
    answers = {r["answer"] for r in qa_rows(30)}
    assert all(s[: -len("<|im_end|>")] in answers for s in spans)
    assert "<|im_start|>user" in out and "Be brief." in out  # the masked prompt is shown too
    for label in ("rows read", "rows kept", "tokens/example", "truncated answers", "trained share"):
        assert label in out
    assert "train 24, val 3, test 3" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(plot.parent.glob("*.partial"))


def test_json_stats_and_set_override(tmp_path, tokenizer_dirs, capsys):
    import json

    recipe = _recipe(tmp_path, tokenizer_dirs["gpt2"])
    code, out, err = _run(["data", recipe, "--json", "--set", "data.max_samples=10"], capsys)
    assert code == 0, err
    stats = json.loads(out)
    assert stats["rows_kept"] == {"train": 8, "val": 1, "test": 1}
    assert stats["eot_token"] == "<|endoftext|>" and len(stats["fingerprint"]) == 64
    assert 0 < stats["trained_share"] < 1


def test_missing_column_is_one_line_exit_1(tmp_path, tokenizer_dirs, capsys):
    recipe = _recipe(tmp_path, tokenizer_dirs["qwen2"], extra='fields = { question = "Question" }\n')
    code, out, err = _run(["data", recipe], capsys)
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0
    assert (
        err.startswith("error: data.fields.question: column 'Question'") and "question, answer, topic" in err
    )


def test_recipe_errors_exit_1(tmp_path, capsys):
    code, _, err = _run(["data", str(tmp_path / "nope.toml")], capsys)
    assert code == 1 and "recipe file not found" in err
    path = tmp_path / "bad.toml"
    path.write_text('[model]\nbase = "a/b"\n[data]\nsource = "missing.jsonl"\n')
    code, _, err = _run(["data", str(path)], capsys)
    assert code == 1 and "data.source: local file" in err and "does not exist" in err
