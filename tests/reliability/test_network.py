"""No verb reaches the network for a recipe that names no hub id (issue 13, defect 4).

`datasets.load_dataset("json", ...)` sent a HEAD request to count the load (a DNS lookup of a cloud
host first) even for a local file; the suite's socket block (tests/conftest.py) refused it silently. Here
the real CLI runs in a subprocess the way a user's shell runs it (no HF_*_OFFLINE variables), with a
`sitecustomize.py` that records every getaddrinfo()/connect()/connect_ex() without blocking it; the
test fails on any attempt that is not loopback. Add a verb: one more `_run_recorded(...)` call.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.data.helpers import qa_rows, write_jsonl

OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "MEDKIT_DEBUG")
RECORDER = """
import json, os, socket

_LOG = os.environ["MEDKIT_NET_LOG"]


def _record(call, target):
    if isinstance(target, tuple):
        target = list(target[:2])
    elif isinstance(target, bytes):
        target = target.decode("utf-8", "replace")
    with open(_LOG, "a") as fh:
        fh.write(json.dumps([call, target], default=str) + "\\n")


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def connect(self, address):
    _record("connect", address if self.family != socket.AF_UNIX else "unix")
    return _connect(self, address)


def connect_ex(self, address):
    _record("connect_ex", address if self.family != socket.AF_UNIX else "unix")
    return _connect_ex(self, address)


def getaddrinfo(host, *args, **kwargs):
    _record("getaddrinfo", [host])
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo = connect, connect_ex, getaddrinfo
"""


def _is_loopback(target) -> bool:
    if target == "unix" or not isinstance(target, list) or not target:
        return True
    host = target[0]
    if host in (None, "", "localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


@pytest.fixture
def recorded(tmp_path):
    """(run, attempts): run(*argv) runs a command recorded; attempts() lists the non-loopback attempts."""
    hook = tmp_path / "net-recorder"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(RECORDER)
    log = tmp_path / "net.log"
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARS}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook), env.get("PYTHONPATH", "")) if p)
    env["MEDKIT_NET_LOG"] = str(log)

    def run(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            list(argv), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout
        )
        assert proc.returncode == 0, f"{' '.join(argv[2:])} failed:\n{proc.stderr[-3000:]}"
        return proc

    def attempts() -> list[list]:
        calls = [json.loads(x) for x in log.read_text().splitlines()] if log.is_file() else []
        return [c for c in calls if not _is_loopback(c[1])]

    return run, attempts


def _medkit(*args: str) -> tuple[str, ...]:
    return (sys.executable, "-m", "medkit", *args)


@pytest.fixture
def local_recipe(tmp_path, tiny_model_dir) -> Path:
    """A recipe that names only local things: a tiny llama folder and a JSON Lines file."""
    write_jsonl(tmp_path / "qa.jsonl", qa_rows(24))
    path = tmp_path / "net.toml"
    path.write_text(
        f'name = "net"\n[model]\nbase = "{tiny_model_dir("llama")}"\n'
        '[data]\nsource = "qa.jsonl"\nformat = "qa"\nmax_seq_len = 96\nsplit_ratios = [0.75, 0.25, 0.0]\n'
        "[lora]\nr = 4\nalpha = 8\n"
        "[train]\nmax_steps = 2\nbatch_size = 4\ngrad_accum = 1\neval_every = 2\nsave_every = 2\n"
        f'log_every = 1\noutput_dir = "{tmp_path / "runs" / "net"}"\n'
    )
    return path


def test_the_recorder_sees_a_lookup_without_blocking_it(recorded):
    """The control: an attempt made in the subprocess is recorded, and goes ahead (it is not refused)."""
    run, attempts = recorded
    probe = "import socket\ntry:\n    socket.getaddrinfo('medkit-probe.invalid', 443)\nexcept OSError:\n    pass\n"
    run(sys.executable, "-c", probe + "print('went ahead')")
    assert attempts() == [["getaddrinfo", ["medkit-probe.invalid"]]]


def test_data_makes_no_network_call(recorded, local_recipe):
    run, attempts = recorded
    out = run(*_medkit("data", str(local_recipe), "--show", "1", "--json"))
    assert json.loads(out.stdout)["rows_kept"] == {"train": 18, "val": 6, "test": 0}
    assert attempts() == [], "medkit data reached the network"


@pytest.mark.slow
def test_train_eval_export_make_no_network_call(recorded, local_recipe, tmp_path):
    """train (2 steps), eval (2 examples) and export (its verify re-reads the run's data)."""
    run, attempts = recorded
    run_dir = tmp_path / "runs" / "net"
    run(*_medkit("train", str(local_recipe)))
    assert attempts() == [], "medkit train reached the network"
    run(
        *_medkit(
            "eval", str(run_dir), "--split", "val", "--n", "2", "--no-gguf", "--set", "eval.max_new_tokens=4"
        )
    )
    assert (run_dir / "eval.json").is_file()
    assert attempts() == [], "medkit eval reached the network"
    run(*_medkit("export", str(run_dir), "--gguf", "f16"))
    assert list((run_dir / "export").glob("*f16.gguf"))
    assert attempts() == [], "medkit export (verify) reached the network"
