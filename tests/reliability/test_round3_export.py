"""Issue 30 (reliability round 3), the export rows: temp files offered as models (5), an export to another
folder overwriting the run's imatrix record (6), a foreign imatrix accepted as calibration (7), a merge
exported after its adapter was deleted (8), flags that were silently ignored (11), the parity check that
passed a destroyed model (4) and the unclear lines of row 14.

The run directory is test_export_faults' quickest one: a tiny random Llama base and a random PEFT adapter.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.convert.test_lora_gguf import make_adapter
from tests.reliability.conftest import REPO, Outcome, assert_one_line_error, run_medkit

DEMO_DATA = REPO / "recipes" / "data" / "medqa_demo.jsonl"
QUIET = ("--no-verify", "--no-modelfile")


@pytest.fixture(scope="module")
def run_template(tiny_model_dir, tmp_path_factory) -> Path:
    base = tiny_model_dir("llama")
    run = tmp_path_factory.mktemp("r3template") / "tiny_llama"
    make_adapter(base, run / "adapter", b_std=0.02)
    (run / "recipe.toml").write_text(
        f'name = "tiny_llama"\n\n[model]\nbase = "{base}"\ndtype = "float32"\n\n'
        f'[data]\nsource = "{DEMO_DATA}"\nformat = "qa"\nmax_samples = 60\nmax_seq_len = 256\n'
    )
    (run / "run.json").write_text(json.dumps({"name": "tiny_llama", "base_model": str(base)}))
    return run


@pytest.fixture
def run_dir(run_template, tmp_path) -> Path:
    dst = tmp_path / "runs" / "tiny_llama"
    shutil.copytree(run_template, dst)
    return dst


def _ok(out: Outcome) -> Outcome:
    assert out.code == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    return out


def test_row5_intermediate_is_never_a_model_and_is_cleaned(run_dir, monkeypatch):
    """Row 5: export/.<run>-f16.intermediate.gguf (left by a killed export) was listed as a model: an eval
    column, and chat/serve's newest model. Now RunDir.ggufs() skips dot-names and the orphan rule clears it."""
    from medkit.provenance import export_session
    from medkit.runs import RunDir, latest_export

    _ok(run_medkit("export", str(run_dir), "--gguf", "f16", *QUIET))
    export = run_dir / "export"
    real = export / "tiny_llama-f16.gguf"
    leftover = export / ".tiny_llama-f16.intermediate.gguf"
    shutil.copy(real, leftover)  # newer than the real export, a valid model GGUF
    monkeypatch.chdir(run_dir.parent.parent)
    assert RunDir(run_dir).model_ggufs() == [real]
    assert latest_export().resolve() == real.resolve()
    with export_session(export, log=lambda line: None):
        pass
    assert not leftover.exists()


def test_row8_export_refuses_a_merge_whose_adapter_is_gone(run_dir):
    """Row 8: after `rm -r runs/x/adapter`, `medkit export --force` exported the old merged model."""
    _ok(run_medkit("export", str(run_dir), "--gguf", "f16", *QUIET))
    shutil.rmtree(run_dir / "adapter")
    out = run_medkit("export", str(run_dir), "--gguf", "f16", "--force", *QUIET)
    assert_one_line_error(out, "adapter", "is gone", str(run_dir / "adapter"))


def test_row6_export_elsewhere_keeps_the_runs_imatrix_record(run_dir, tmp_path):
    """Row 6: `export --gguf q4_k_m --imatrix OTHER --out elsewhere/` rewrote run.json's imatrix record
    (naming the foreign file, gptq []) though export/'s own files were made with the run's own."""
    _ok(run_medkit("export", str(run_dir), "--gguf", "q4_0", "--no-gptq", *QUIET))
    own = json.loads((run_dir / "run.json").read_text())["imatrix"]
    assert own["file"] == str(run_dir / "export" / "imatrix.gguf") and own["calibrated"] == ["q4_0"]
    other = tmp_path / "other.imatrix.gguf"
    shutil.copy(run_dir / "export" / "imatrix.gguf", other)
    elsewhere = tmp_path / "elsewhere"
    _ok(
        run_medkit(
            "export", str(run_dir), "--gguf", "q4_0", "--imatrix", str(other), "--out", str(elsewhere), *QUIET
        )
    )
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["imatrix"] == own
    assert manifest["imatrix_elsewhere"][str(elsewhere.resolve())]["file"] == str(other)
