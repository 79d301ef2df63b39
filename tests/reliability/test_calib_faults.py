"""Calibrated-export faults (issue 32): a plan that does not fit the disk stops in one line with need and
free before anything is written; kill -9 in the middle of the layer loop or of GPTQ leaves no file under a
final name, and the next export removes what was left and finishes. The memory side of the plan (one line,
need and free, nothing written) is tests/convert/test_memplan.py's last test.

Add a kill point: a row in CALIB_KILL_POINTS (the function to die in, the first time it is entered).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.conftest import REPO, assert_one_line_error, run_medkit
from tests.reliability.test_export_faults import _in_small_tmpfs

CALIB = ("--gguf", "q4_k_m", "--no-verify", "--no-modelfile")
# wide enough that the Gram matrices (2 layers x ~17 MiB) need more than the GGUFs leave of a 56 MiB disk
WIDE = dict(hidden_size=256, intermediate_size=2048, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture
def calib(tmp_path) -> Path:
    path = tmp_path / "calib.jsonl"
    rows = [f'{{"text": "Patient {i} reports fever, cough and a rash after a new drug for {i} days."}}'
            for i in range(24)]  # fmt: skip
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_no_disk_for_the_gram_matrices_recomputes_them(tiny_model_dir, calib, tmp_path, monkeypatch):
    """A disk with room for the GGUFs but not for the Gram store: the export runs the pass again and GPTQ rounds
    each layer as it goes (the same file as with the store); MEDKIT_GRAMS=disk insists on the store and
    stops in one line with need and free, nothing written."""
    model = tiny_model_dir("llama", **WIDE)
    out = tmp_path / "out"
    argv = ("export", str(model), *CALIB, "--calib", str(calib), "--out", str(out))
    monkeypatch.setenv("MEDKIT_GRAMS", "disk")
    res, left = _in_small_tmpfs(out, "56m", sys.executable, "-m", "medkit", *argv)
    line = assert_one_line_error(res, "not enough disk", "Gram matrices", "MiB free", str(out))
    assert "need " in line
    assert left == [], f"left in the output folder: {left}"
    monkeypatch.delenv("MEDKIT_GRAMS")
    gguf = out / f"{model.name}-q4_k_m.gguf"
    kept = tmp_path / "recomputed.gguf"  # copied out of the private tmpfs before it goes
    res, left = _in_small_tmpfs(
        out, "56m", sys.executable, "-c", _EXPORT_AND_COPY, str(gguf), str(kept), *argv
    )
    assert res.code == 0, res.stderr
    assert "no disk for the Gram matrices" in res.stdout
    assert sorted(left) == ["imatrix.gguf", gguf.name]
    # the same export where the store fits (kept on disk), and without GPTQ
    files = {}
    for how, extra in (("store", ()), ("plain", ("--no-gptq",))):
        monkeypatch.setenv("MEDKIT_GRAMS", "disk")
        done = run_medkit(
            "export", str(model), *CALIB, *extra, "--calib", str(calib), "--out", str(tmp_path / how)
        )
        assert done.code == 0, done.stderr
        assert "no disk for the Gram matrices" not in done.stdout
        files[how] = tmp_path / how / gguf.name
    # GPTQ's codes from the recomputed matrices are the store's (tests/convert/quant/test_layerwise.py: byte for
    # byte from one quantized file); here the first pass's importance sums differ in float rounding (squares
    # summed, not a Gram diagonal), so a few of llama.cpp's scales may too: the codes agree almost everywhere
    same_as_store, same_as_plain = _agreement(kept, files["store"]), _agreement(kept, files["plain"])
    assert same_as_store > 0.98, (same_as_store, same_as_plain)
    assert same_as_plain < 0.9, (same_as_store, same_as_plain)


def _agreement(a: Path, b: Path) -> float:
    """The share of equal bytes in the quantized tensors' data of two GGUFs of one model and type."""
    import numpy as np
    from gguf import GGUFReader

    ta = {t.name: np.asarray(t.data).view(np.uint8).ravel() for t in GGUFReader(a).tensors}
    tb = {t.name: np.asarray(t.data).view(np.uint8).ravel() for t in GGUFReader(b).tensors}
    same = sum(int((ta[n] == tb[n]).sum()) for n in ta if n.startswith("blk."))
    return same / sum(len(ta[n]) for n in ta if n.startswith("blk."))


# runs `medkit ARGV...` (argv[3:]) and copies the file argv[1] it wrote to argv[2] (out of the tmpfs)
_EXPORT_AND_COPY = (
    "import shutil, subprocess, sys; r = subprocess.run([sys.executable, '-m', 'medkit', *sys.argv[3:]]); "
    "r.returncode and sys.exit(r.returncode); shutil.copyfile(sys.argv[1], sys.argv[2])"
)


# (id, module, function): the export process SIGKILLs itself the first time it enters that function
CALIB_KILL_POINTS = [
    (
        "layer-loop",
        "medkit.convert.quant.layerwise",
        "_free",
    ),  # layer 0's sums taken, its Gram matrices on disk
    ("gptq", "medkit.convert.quant.gptq", "refine"),  # the quantized file written under its temporary name
]
_KILL_IN = """
import importlib, os, signal, sys
mod, name = importlib.import_module(sys.argv[1]), sys.argv[2]
def function(*a, **k):
    os.kill(os.getpid(), signal.SIGKILL)
setattr(mod, name, function)
from medkit.cli import main
main(sys.argv[3:])
"""


@pytest.mark.parametrize("point", CALIB_KILL_POINTS, ids=lambda p: p[0])
def test_kill_9_mid_calibration_leaves_no_final_file_and_the_next_export_starts_clean(
    tiny_model_dir, calib, tmp_path, point
):
    _, module, function = point
    model = tiny_model_dir("llama", **WIDE)
    out = tmp_path / "out"
    argv = ("export", str(model), *CALIB, "--calib", str(calib), "--out", str(out))
    killed = subprocess.run([sys.executable, "-c", _KILL_IN, module, function, *argv],
                            capture_output=True, text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    left = sorted(p.name for p in out.iterdir())
    # under a final name only what is whole: the importance matrix, once the layer loop has finished
    assert [n for n in left if not n.startswith(".")] in ([], ["imatrix.gguf"]), left
    if "imatrix.gguf" in left:
        from medkit.convert.quant.imatrix_file import read_imatrix

        assert read_imatrix(out / "imatrix.gguf").sums
    assert any(n.endswith(".partial") for n in left), left  # the Gram store / quantized file half done

    done = run_medkit(*argv)
    assert done.code == 0, done.stderr
    assert "removed" in done.stdout and "temp file(s)" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["imatrix.gguf", f"{model.name}-q4_k_m.gguf"]
