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

from tests.reliability.conftest import Outcome, assert_one_line_error, run_medkit

QUIET = ("--no-verify", "--no-modelfile")


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


@pytest.mark.slow  # 35-70 s on 2 shared cores
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


def _destroyed_imatrix(own: Path, dst: Path, how: str) -> Path:
    """The run's own imatrix with its importances replaced: all zero, or all weight on one column."""
    import numpy as np

    from medkit.convert.quant.imatrix_file import read_imatrix, write_imatrix

    im = read_imatrix(own)
    for name, s in im.sums.items():
        im.sums[name] = np.zeros_like(s)
        if how == "one-hot":
            im.sums[name][0] = 1.0
    write_imatrix(im, dst)
    return dst


@pytest.mark.slow  # 35-70 s on 2 shared cores
def test_row4_parity_fails_a_destroyed_calibration(run_dir, tmp_path):
    """Row 4: an all-zero imatrix gave q4_0 top-1 0.0%, KL 23 and the parity table said ok, exit 0. Now a
    calibrated file is held to the plain quantization of its type (measured in the same check)."""
    out = _ok(run_medkit("export", str(run_dir), "--gguf", "q4_0", "--no-gptq", "--no-modelfile"))
    sound = json.loads((run_dir / "run.json").read_text())["parity"]["q4_0"]
    print("sound", {k: sound[k] for k in ("agreement", "kl_vs_hf", "plain_agreement", "plain_kl")})
    assert sound["passed"] and sound["plain_kl"] is not None
    assert sound["kl_vs_hf"] <= 1.5 * sound["plain_kl"] + 0.05
    assert not list((run_dir / "export").glob(".*.gguf")), "the plain twin was not removed"
    bad = _destroyed_imatrix(run_dir / "export" / "imatrix.gguf", tmp_path / "bad.imatrix.gguf", "one-hot")
    out = run_medkit(
        "export", str(run_dir), "--gguf", "q4_0", "--imatrix", str(bad), "--out", str(tmp_path / "o"),
        "--no-modelfile",
    )  # fmt: skip
    print(out.stdout[-3000:])
    assert_one_line_error(out, "parity failed for q4_0", "plain q4_0")
    assert not list((tmp_path / "o").glob(".*.gguf"))


@pytest.mark.slow  # 35-70 s on 2 shared cores
def test_row4_all_zero_imatrix_is_one_line(run_dir, tmp_path):
    """Row 4 as filed: an all-zero imatrix is refused when read, before anything is written."""
    _ok(run_medkit("export", str(run_dir), "--gguf", "q4_0", "--no-gptq", *QUIET))
    bad = _destroyed_imatrix(run_dir / "export" / "imatrix.gguf", tmp_path / "zero.imatrix.gguf", "zero")
    out = run_medkit("export", str(run_dir), "--gguf", "q4_0", "--imatrix", str(bad), "--force", *QUIET)
    assert_one_line_error(out, "all zeros", str(bad))


@pytest.mark.slow  # 35-70 s on 2 shared cores
def test_row7_imatrix_of_another_model_is_refused(run_dir, tiny_model_dir, tmp_path):
    """Row 7: another model's imatrix whose names and row lengths fit (14 of 210 weights covered) was
    accepted and the file labelled calibrated. Now coverage is checked, and imatrix.gguf records the model
    it was summed on (medkit.imatrix.source), compared with the model being quantized."""
    from medkit.convert.gguf.fingerprint import IMATRIX_SOURCE_KEY, model_fingerprint
    from medkit.convert.quant.imatrix_file import read_imatrix, write_imatrix

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir("llama"), base)
    calib = tmp_path / "calib.txt"
    calib.write_text("Hypertension is persistently elevated blood pressure. " * 40)
    _ok(run_medkit("export", str(base), "--gguf", "q4_0", "--calib", str(calib), "--no-gptq", *QUIET))
    foreign = tmp_path / "base-gguf" / "imatrix.gguf"
    assert read_imatrix(foreign).metadata[IMATRIX_SOURCE_KEY] == model_fingerprint(base)
    out = run_medkit("export", str(run_dir), "--gguf", "q4_0", "--imatrix", str(foreign), *QUIET)
    assert_one_line_error(out, "computed on another model", str(foreign))
    assert not (run_dir / "export" / "tiny_llama-q4_0.gguf").exists()

    partial = read_imatrix(foreign)  # names and row lengths fit, most weights missing, no source
    keep = sorted(partial.sums)[:3]
    partial.sums = {k: partial.sums[k] for k in keep}
    partial.counts = {k: partial.counts[k] for k in keep}
    partial.metadata = {}
    write_imatrix(partial, tmp_path / "partial.gguf")
    out = run_medkit(
        "export", str(run_dir), "--gguf", "q4_0", "--imatrix", str(tmp_path / "partial.gguf"), *QUIET
    )
    line = assert_one_line_error(out, "covers 3 of the model's", "missing", str(tmp_path / "partial.gguf"))
    print(line)


@pytest.mark.slow  # 35-70 s on 2 shared cores
def test_row14_q8_0_is_not_labelled_calibrated(run_dir):
    """Row 14: the parity table showed "imatrix yes" for q8_0, which llama.cpp quantizes without it."""
    from medkit.convert.verify import imatrix_cell
    from medkit.formats.gguf_header import calibration

    _ok(run_medkit("export", str(run_dir), "--gguf", "q8_0,q4_0", "--no-gptq", *QUIET))
    export = run_dir / "export"
    assert calibration(export / "tiny_llama-q8_0.gguf") == "plain"
    assert imatrix_cell(calibration(export / "tiny_llama-q8_0.gguf")) == "no"
    assert calibration(export / "tiny_llama-q4_0.gguf") == "imatrix"


def test_row14_quantizer_failure_names_the_output_not_the_deleted_temp(tiny_model_dir, tmp_path, monkeypatch):
    """Row 14: an iq2_xs failure named the temporary f16, already deleted when the line was read."""
    import medkit.convert.quant.quantize as quantize_mod
    from medkit.convert.export import Source, export
    from medkit.errors import ConvertError

    def failing(src, dst, qtype, **kw):
        raise ConvertError(f"llama.cpp quantizer failed for {qtype} (code 1): ...", where=str(src))

    monkeypatch.setattr(quantize_mod, "quantize", failing)
    src = Source(tiny_model_dir("llama"), tmp_path / "out", "m")
    with pytest.raises(ConvertError) as err:
        export(src, ["q4_0"], log=lambda line: None)
    assert err.value.where == str(tmp_path / "out" / "m-q4_0.gguf")
    assert not [p.name for p in (tmp_path / "out").iterdir() if p.suffix == ".gguf"]
