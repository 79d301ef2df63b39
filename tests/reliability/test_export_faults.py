"""Export and merge faults: a stale merge reused after retraining, a full disk during merge, kill -9 during
export, two exports at once. Each fault runs the real CLI (`run_medkit`) and checks what is left on disk.

Add a kill point: a row in KILL_POINTS (the function to die in). Add a full-disk case: a row in
DISK_FULL_RUNS. The run directory is the quickest one with a real adapter: a tiny random Llama base and a
PEFT adapter with random weights (tests/convert/adapter/test_lora_gguf.make_adapter), no training.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from medkit.provenance import ADAPTER_KEY, adapter_hash, gguf_adapter_hash, stale_reason
from tests.convert.adapter.test_lora_gguf import make_adapter
from tests.reliability.conftest import REPO, Outcome, assert_one_line_error, run_medkit

EXPORT = ("--gguf", "f16", "--no-verify")


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _ok(out: Outcome) -> Outcome:
    assert out.code == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    return out


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_retrained_adapter_rebuilds_the_merge_and_is_recorded(run_dir, tiny_model_dir, tmp_path):
    """Defect 1: after the adapter changes, export reused the stale export/merged/ (md5 differed from a
    fresh merge) and wrote a GGUF of the old weights under new provenance."""
    from medkit.convert.adapter.merge import merge_adapter

    adapter, merged, gguf = (
        run_dir / "adapter",
        run_dir / "export" / "merged",
        run_dir / "export" / "tiny_llama-f16.gguf",
    )
    _ok(run_medkit("export", str(run_dir), *EXPORT))
    first = adapter_hash(adapter)
    assert json.loads((merged / "medkit_merge.json").read_text())["adapter_sha256"] == first
    assert gguf_adapter_hash(gguf) == first and stale_reason(gguf) is None
    old_weights = _md5(merged / "model.safetensors")

    make_adapter(tiny_model_dir("llama"), adapter, seed=7, b_std=0.02)  # "retrained": other weights
    second = adapter_hash(adapter)
    assert second != first
    reason = stale_reason(gguf)
    assert reason and "old weights" in reason and str(gguf) in reason and "\n" not in reason

    out = _ok(run_medkit("export", str(run_dir), *EXPORT, "--force"))
    notes = [line for line in out.stdout.splitlines() if "merging again" in line]
    assert len(notes) == 1 and "merged from adapter" in notes[0], out.stdout
    fresh = merge_adapter(tiny_model_dir("llama"), adapter, tmp_path / "fresh")
    assert _md5(merged / "model.safetensors") == _md5(fresh / "model.safetensors") != old_weights
    assert gguf_adapter_hash(gguf) == second and stale_reason(gguf) is None
    assert _leftovers(run_dir / "export") == []


def test_adapter_gguf_records_its_adapter(run_dir):
    _ok(run_medkit("export", str(run_dir), "--adapter-only"))
    gguf = run_dir / "export" / "adapter.gguf"
    assert gguf_adapter_hash(gguf) == adapter_hash(run_dir / "adapter")
    assert stale_reason(gguf) is None
    config = run_dir / "adapter" / "adapter_config.json"
    config.write_text(config.read_text() + "\n")  # any change to the adapter's files changes its hash
    assert "old weights" in (stale_reason(gguf) or "")


def test_gguf_without_a_hash_is_stale_only_if_older_than_the_adapter(run_dir, tiny_model_dir):
    from medkit.convert.gguf.writer import write_gguf

    gguf = write_gguf(tiny_model_dir("llama"), run_dir / "export" / "legacy-f16.gguf", "f16").path
    assert gguf_adapter_hash(gguf) is None and stale_reason(gguf) is None  # exported after the adapter
    weights = run_dir / "adapter" / "adapter_model.safetensors"
    later = gguf.stat().st_mtime + 60
    os.utime(weights, (later, later))
    assert "records no adapter hash" in (stale_reason(gguf) or "")
    assert stale_reason(tiny_model_dir("llama") / "config.json") is None  # not in a run's export/


# ---- full disk during merge ---------------------------------------------------------------------------

# The disk fills while the merge writes (another process took the space after medkit checked it): the
# free-space pre-check is skipped, the export folder is a tmpfs that holds config.json but not the weights.
_NO_PRECHECK = (
    "import sys, medkit.formats.files as r; r.check_free_space = lambda *a, **k: None; "
    "from medkit.cli import main; main(sys.argv[1:])"
)
DISK_FULL_RUNS = [("merge",), ("export", *EXPORT)]


def _in_small_tmpfs(folder: Path, size: str, *argv: str) -> tuple[Outcome, list[str]]:
    """Run ``argv`` with ``folder`` a tmpfs of ``size`` (a private mount namespace), and what is in it after."""
    script = 'mount -t tmpfs -o size="$1" tmpfs "$0" || exit 99; shift; "$@"; rc=$?; echo @@LEFT; ls -A "$0"; exit $rc'
    folder.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MEDKIT_DEBUG"}
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, str(folder), size, *argv],
        capture_output=True, text=True, timeout=600, cwd=REPO,
        env={**env, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )  # fmt: skip
    if proc.returncode == 99 or "unshare:" in proc.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {proc.stderr.strip()[:200]}")
    stdout, _, left = proc.stdout.partition("@@LEFT\n")
    return Outcome(proc.returncode, stdout, proc.stderr), left.split()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
@pytest.mark.parametrize("argv", DISK_FULL_RUNS, ids=lambda a: a[0])
def test_full_disk_during_merge_is_one_line_and_leaves_nothing(run_dir, argv):
    out, left = _in_small_tmpfs(
        run_dir / "export", "64k", sys.executable, "-c", _NO_PRECHECK, argv[0], str(run_dir), *argv[1:]
    )
    line = assert_one_line_error(out, "disk full while writing the merged model", "MiB free", "merged")
    assert "need " in line
    assert left == [], f"left in export/: {left}"
    assert "merge" not in json.loads((run_dir / "run.json").read_text())


@pytest.mark.parametrize("path", ["streamed", "peft"])
def test_safetensors_disk_full_is_a_disk_space_error(run_dir, monkeypatch, path):
    """The same fault in-process, where no tmpfs can be mounted: the streamed merge's own write raises
    ENOSPC as an OSError; PEFT's path (4-bit bases, DoRA...) gets safetensors' own error type."""
    import errno

    import transformers.modeling_utils as mu
    from safetensors import SafetensorError

    import medkit.convert.adapter.merge_stream as ms
    from medkit.convert.adapter.merge import merge_run
    from medkit.errors import DiskSpaceError

    def full_streamed(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    def full_peft(*_a, **_k):
        raise SafetensorError(
            'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
        )

    if path == "streamed":
        monkeypatch.setattr(ms, "merge_streaming", full_streamed)
    else:
        monkeypatch.setattr(ms, "stream_reason", lambda *_a: "forced by the test")
        monkeypatch.setattr(mu, "safe_save_file", full_peft)
    with pytest.raises(DiskSpaceError, match=r"need \d+ MiB, \d+ MiB free in .*export"):
        merge_run(run_dir)
    assert sorted(p.name for p in (run_dir / "export").iterdir()) == []


# ---- kill -9 during export ----------------------------------------------------------------------------

# (id, module, function): the export process SIGKILLs itself the first time it enters that function
KILL_POINTS = [
    ("gguf-tensors", "medkit.convert.gguf.writer", "_tensors"),  # the f16 GGUF half written
    (
        "merge-tokenizer",
        "medkit.convert.adapter.merge",
        "copy_tokenizer",
    ),  # merged weights saved, folder not yet whole
]
_KILL_IN = """
import importlib, os, signal, sys
mod, name = importlib.import_module(sys.argv[1]), sys.argv[2]
real = getattr(mod, name)
def kill():
    os.kill(os.getpid(), signal.SIGKILL)
def generator(*a, **k):  # dies asking for the second item: the first is already written
    for n, item in enumerate(real(*a, **k)):
        if n:
            kill()
        yield item
def function(*a, **k):
    kill()
setattr(mod, name, generator if name == "_tensors" else function)
from medkit.cli import main
main(sys.argv[3:])
"""


@pytest.mark.parametrize("point", KILL_POINTS, ids=lambda p: p[0])
def test_kill_9_during_export_leaves_no_orphan(run_dir, point):
    _, module, function = point
    export = run_dir / "export"
    killed = subprocess.run(
        [sys.executable, "-c", _KILL_IN, module, function, "export", str(run_dir), *EXPORT],
        capture_output=True, text=True, timeout=600, cwd=REPO,
    )  # fmt: skip
    assert killed.returncode == -9, killed.stderr
    orphans = _leftovers(export)
    assert any(name.endswith(".partial") for name in orphans), orphans  # what the killed process left

    out = _ok(run_medkit("export", str(run_dir), *EXPORT))
    assert f"removed {len(orphans) - orphans.count('.medkit-export.lock')} temp file(s)" in out.stdout
    assert _leftovers(export) == []
    assert (export / "tiny_llama-f16.gguf").is_file() and (export / "merged" / "model.safetensors").is_file()
    assert gguf_adapter_hash(export / "tiny_llama-f16.gguf") == adapter_hash(run_dir / "adapter")


def test_orphan_rule_removes_only_medkit_temp_files(tmp_path):
    from medkit.provenance import remove_orphans

    theirs = ["notes.partial", ".download.partial", ".hidden", "model.gguf", ".tiny-f16.gguf"]
    ours = [".m-f16.gguf.ab12cd_9.partial", "..m-f16.intermediate.gguf.zz99yy88.partial",
            ".m-f16.intermediate.gguf", ".Modelfile.k2j3h4g5.partial", ".merged.old-4242"]  # fmt: skip
    for name in theirs + ours[:-1]:
        (tmp_path / name).write_text("x")
    (tmp_path / ".merged.q1w2e3r4.partial").mkdir()
    (tmp_path / ".merged.q1w2e3r4.partial" / "model.safetensors").write_text("half")
    (tmp_path / ours[-1]).mkdir()
    removed = remove_orphans(tmp_path)
    assert sorted(removed) == sorted([*ours, ".merged.q1w2e3r4.partial"])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(theirs)


def test_second_export_while_one_runs_is_refused(run_dir):
    export = run_dir / "export"
    export.mkdir()
    (export / ".tiny_llama-f16.gguf.abcd1234.partial").write_text("being written by the live export")
    with open(export / ".medkit-export.lock", "w") as held:  # the running export's lock
        fcntl.flock(held, fcntl.LOCK_EX)
        out = run_medkit("export", str(run_dir), *EXPORT)
    assert_one_line_error(out, "another medkit export or merge is writing here", str(export.resolve()))
    assert (export / ".tiny_llama-f16.gguf.abcd1234.partial").is_file()  # the live writer's file is kept
    assert not (export / "merged").exists()


def test_adapter_key_is_the_documented_name():
    assert ADAPTER_KEY == "medkit.adapter.sha256"
