"""Issue 29: no network unless the user names a hub id, never code from a hub, and quiet output.

Each check runs a fresh interpreter (the decisions are made once per process, at a verb's start).
The recorded-sockets test of train/eval/export is in test_network.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.reliability.conftest import assert_one_line_error, run_medkit

HF_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "MEDKIT_OFFLINE", "MEDKIT_DEBUG")
QUIET_VARS = (
    "TQDM_DISABLE",
    "HF_HUB_DISABLE_PROGRESS_BARS",
    "TRANSFORMERS_VERBOSITY",
)  # set by an in-process main()


def _python(code: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter with no HF_* offline variables of the suite's own."""
    full = {k: v for k, v in os.environ.items() if k not in HF_VARS + QUIET_VARS}
    full.update({"HF_HOME": str(tmp_path / "hf"), "MEDKIT_CACHE": str(tmp_path / "cache"), **env})
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300, cwd=tmp_path
    )


def _state(proc: subprocess.CompletedProcess) -> dict:
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


PROBE = """
import importlib.util, json, os, sys
from medkit import network
network.start(offline={offline})
before = {{k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}}
error = None
try:
    network.allow({ids})
except Exception as exc:
    error = f"{{type(exc).__name__}}: {{exc}}"
import huggingface_hub.constants as c
try:
    import kernels
    kernels_importable = True
except ImportError:
    kernels_importable = False
print(json.dumps({{"use_hub_kernels": os.environ.get("USE_HUB_KERNELS"), "before": before, "hub_offline_after": c.HF_HUB_OFFLINE, "error": error,
                  "kernels": kernels_importable, "kernels_spec": importlib.util.find_spec("kernels") is not None}}))
"""


def test_the_hub_is_closed_until_a_hub_id_is_named(tmp_path):
    st = _state(_python(PROBE.format(offline=False, ids="[]"), tmp_path))
    assert st["before"] == {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    assert st["hub_offline_after"] is True and st["error"] is None


def test_a_named_hub_id_opens_it(tmp_path):
    st = _state(_python(PROBE.format(offline=False, ids="['TinyLlama/TinyLlama-1.1B-Chat-v1.0']"), tmp_path))
    assert st["hub_offline_after"] is False and st["error"] is None


def test_offline_with_an_uncached_hub_id_is_one_line(tmp_path):
    st = _state(_python(PROBE.format(offline=True, ids="['lavita/MedQuAD']"), tmp_path))
    assert st["hub_offline_after"] is True
    assert st["error"].startswith("ModelError: 'lavita/MedQuAD' is a hub id and is not in the local cache")


def test_offline_with_a_cached_hub_id_goes_ahead_offline(tmp_path):
    snap = tmp_path / "hf" / "hub" / "datasets--lavita--MedQuAD" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "data.jsonl").write_text("{}\n")
    st = _state(_python(PROBE.format(offline=True, ids="['lavita/MedQuAD']"), tmp_path))
    assert st["error"] is None and st["hub_offline_after"] is True


def test_hub_kernels_are_never_loaded_unless_opted_in(tmp_path):
    """bitsandbytes (CPU, avx512-bf16) and transformers' GGUF path ask `kernels` for hub code: it is
    unimportable, and find_spec says so, so they fall back to their own code without asking a hub."""
    st = _state(_python(PROBE.format(offline=False, ids="['a/b']"), tmp_path))
    assert st["kernels"] is False and st["kernels_spec"] is False and st["use_hub_kernels"] == "NO"
    opted = _state(_python(PROBE.format(offline=False, ids="[]"), tmp_path, MEDKIT_HUB_KERNELS="1"))
    assert opted["kernels_spec"] == _kernels_installed()


def _kernels_installed() -> bool:
    import importlib.metadata as md

    try:
        md.version("kernels")
        return True
    except md.PackageNotFoundError:
        return False


def test_cli_offline_flag_with_a_hub_recipe(tmp_path):
    recipe = tmp_path / "hub.toml"
    recipe.write_text(
        'name = "hub"\n[model]\nbase = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"\n[data]\nsource = "lavita/MedQuAD"\n'
    )
    out = run_medkit("validate", str(recipe), "--offline", env={"HF_HOME": str(tmp_path / "hf")})
    assert_one_line_error(out, "TinyLlama/TinyLlama-1.1B-Chat-v1.0", "not in the local cache", str(recipe))
    assert "held back" not in out.stderr  # the error line stands alone


QUIET = """
import logging, sys, warnings
from medkit import quiet
quiet.start(verbose={verbose}, verb="probe")
logging.getLogger("transformers.modeling_utils").warning("a library's warning")
logging.getLogger("datasets.builder").error("a library's error")
warnings.warn_explicit("a library's FutureWarning", FutureWarning, "/x/site-packages/peft/tuners.py", 7)
import tqdm
for _ in tqdm.tqdm(range(3), desc="Loading weights"):
    pass
print("medkit's own line")
"""


def test_other_packages_are_held_back_and_logged(tmp_path):
    proc = _python(QUIET.format(verbose=False), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "medkit's own line"
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "datasets.builder: a library's error"  # errors still show, as they are
    assert "Loading weights" not in proc.stderr and "FutureWarning" not in proc.stderr
    log = tmp_path / "cache" / "logs" / "probe.log"
    assert lines[-1].startswith("(2 messages from other packages held back: ") and str(log) in lines[-1]
    held = log.read_text()
    assert "a library's warning" in held and "a library's FutureWarning" in held


def test_verbose_shows_everything(tmp_path):
    proc = _python(QUIET.format(verbose=True), tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "a library's warning" in proc.stderr and "FutureWarning" in proc.stderr
    assert "Loading weights" in proc.stderr and "held back" not in proc.stderr
    debug = _python(QUIET.format(verbose=False), tmp_path, MEDKIT_DEBUG="1")
    assert "FutureWarning" in debug.stderr


def test_data_verb_prints_only_medkit_lines(tmp_path, tiny_model_dir):
    """A real verb on a real (tiny) model: stdout is medkit's, stderr has no library chatter."""
    from tests.data.helpers import qa_rows, write_jsonl

    write_jsonl(tmp_path / "qa.jsonl", qa_rows(12))
    recipe = tmp_path / "q.toml"
    recipe.write_text(
        f'name = "q"\n[model]\nbase = "{tiny_model_dir("llama")}"\n'
        '[data]\nsource = "qa.jsonl"\nformat = "qa"\nmax_seq_len = 96\n'
    )
    out = run_medkit("data", str(recipe), "--show", "1", env={"MEDKIT_CACHE": str(tmp_path / "cache")})
    assert out.code == 0, out.stderr
    noise = [ln for ln in out.stderr.splitlines() if ln.strip() and "held back" not in ln]
    assert noise == [], f"other packages' lines on stderr:\n{out.stderr}"
