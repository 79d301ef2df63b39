"""Issue 30 (reliability round 3), rows 11 and 12: export flags that were silently ignored, and `--calib`
files read wrongly (blank rows labelled calibrated, .JSONL / .json read as plain text, long rows cut,
malformed messages as tracebacks, a messages file for a model without a chat template).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from medkit.errors import ConvertError
from tests.reliability import test_round3_export as export_tests
from tests.reliability.conftest import assert_one_line_error, run_medkit

_ok = export_tests._ok


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--gguf", "foo"], "--gguf does not apply to --adapter-only"),
        (["--gguf", "q4_0"], "--gguf does not apply to --adapter-only"),
        (["--base"], "--base does not apply to --adapter-only"),
        (["--imatrix", "none"], "--imatrix does not apply to --adapter-only"),
        (["--calib", "x.txt"], "--calib does not apply to --adapter-only"),
        (["--no-gptq"], "--gptq/--no-gptq does not apply to --adapter-only"),
        (["--no-verify"], "--verify/--no-verify does not apply to --adapter-only"),
    ],
)
def test_row11_adapter_only_refuses_flags_it_ignored(tmp_path, flags, needle):
    out = run_medkit("export", str(tmp_path / "nowhere"), "--adapter-only", *flags)
    assert_one_line_error(out, needle)


@pytest.mark.parametrize("mode", ["none", "some.imatrix.gguf"])
def test_row11_calib_with_imatrix_none_or_path_is_refused(tmp_path, mode):
    out = run_medkit("export", str(tmp_path), "--gguf", "q4_0", "--imatrix", mode, "--calib", "c.txt")
    assert_one_line_error(out, f"--calib does not apply with --imatrix {mode}")


def test_row11_shared_base_is_calibrated_with_calib(run_dir, tmp_path):
    """`--base` ignored --imatrix/--calib/--gptq (the shared base was always plain). Chosen: it works."""
    from medkit.formats.gguf_header import calibration

    calib = tmp_path / "calib.txt"
    calib.write_text("Hypertension is persistently elevated blood pressure. " * 40)
    bases = tmp_path / "bases"
    _ok(run_medkit("export", str(run_dir), "--base", "--gguf", "q4_0", "--calib", str(calib), "--no-gptq",
                   "--out", str(bases)))  # fmt: skip
    (gguf,) = bases.glob("base-*-q4_0.gguf")
    assert calibration(gguf) == "imatrix"
    plain = tmp_path / "plain"
    _ok(
        run_medkit(
            "export", str(run_dir), "--base", "--gguf", "q4_0", "--imatrix", "none", "--out", str(plain)
        )
    )
    (gguf,) = plain.glob("base-*-q4_0.gguf")
    assert calibration(gguf) == "plain"
    out = run_medkit("export", str(run_dir), "--base", "--gguf", "iq2_xs", "--out", str(plain))
    assert_one_line_error(out, "iq2_xs needs an importance matrix", "--imatrix PATH")


# ---- row 12: --calib files ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tiny_model_dir) -> Path:
    return tiny_model_dir("llama")


def _seqs(base: Path, path: Path, content: str | bytes):
    from medkit.convert.quant.calib import file_sequences

    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return file_sequences(path, base)


def test_row12_blank_rows_are_not_a_calibration(base, tmp_path):
    """Before: rows of only blank text gave "1 texts, 2 tokens" and a file labelled calibrated."""
    with pytest.raises(ConvertError, match="calibration set is empty"):
        _seqs(base, tmp_path / "c.jsonl", '{"text": "   "}\n{"text": "\\n\\n"}\n')
    with pytest.raises(ConvertError, match=r"give \d+ tokens; an importance matrix needs at least 32"):
        _seqs(base, tmp_path / "c.jsonl", '{"text": "Fever."}\n')


def test_row12_upper_case_jsonl_and_json_arrays_are_rows(base, tmp_path):
    rows = [
        {"text": f"Patient {i} has a fever and a dry cough for {i} days, with no chest pain."}
        for i in range(6)
    ]
    seqs, what = _seqs(base, tmp_path / "CALIB.JSONL", "".join(json.dumps(r) + "\n" for r in rows))
    assert what == "CALIB.JSONL: 6 texts" and len(seqs) == 6
    seqs, what = _seqs(base, tmp_path / "calib.json", json.dumps(rows))
    assert what == "calib.json: 6 texts"
    seqs, what = _seqs(base, tmp_path / "strings.json", json.dumps([r["text"] for r in rows]))
    assert what == "strings.json: 6 texts"
    with pytest.raises(ConvertError, match="must hold an array"):
        _seqs(base, tmp_path / "obj.json", json.dumps({"text": "x"}))


def test_row12_long_jsonl_rows_are_windowed_like_plain_text(base, tmp_path):
    from medkit.convert.quant.calib import MAX_SEQ

    long = "The patient reports fever, cough and fatigue for several days. " * 200
    seqs, _ = _seqs(base, tmp_path / "c.jsonl", json.dumps({"text": long}) + "\n")
    plain, _ = _seqs(base, tmp_path / "c.txt", long)
    assert len(seqs) > 1 and max(map(len, seqs)) <= MAX_SEQ
    assert sorted(map(len, seqs)) == sorted(map(len, plain))


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"messages": [{"role": "user"}]}, "line 1: 'messages' must be a list of {role, content} strings"),
        ({"messages": "hello"}, "line 1: 'messages' must be a list"),
        ({"messages": [{"role": "user", "content": 3}]}, "must be a list of {role, content} strings"),
        ({"messages": []}, "must be a list"),
    ],
)
def test_row12_malformed_messages_are_one_line(base, tmp_path, row, needle):
    """Before: jinja2 / TypeError tracebacks."""
    with pytest.raises(ConvertError) as err:
        _seqs(base, tmp_path / "c.jsonl", json.dumps(row) + "\n")
    assert needle in err.value.one_line() and str(tmp_path / "c.jsonl") in err.value.one_line()


def test_row12_messages_for_a_model_without_chat_template(base, tmp_path):
    """Before: reported as "has no 'text' string or 'messages' list" though it has messages."""
    bare = tmp_path / "bare"
    shutil.copytree(base, bare)
    cfg = json.loads((bare / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(cfg))
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi, I have a fever."}]}) + "\n")
    from medkit.convert.quant.calib import file_sequences

    with pytest.raises(ConvertError, match="has 'messages' but the model has no chat template"):
        file_sequences(path, bare)
