"""Bad input to `medkit chat` / `medkit serve`: one line naming what and where, nonzero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _medkit(*args: str, cwd=None, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "medkit", *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=env
    )


@pytest.mark.parametrize("verb", ["chat", "serve"])
def test_missing_model_file(verb, tmp_path):
    out = _medkit(verb, str(tmp_path / "nope.gguf"))
    assert out.returncode == 1
    assert out.stderr.strip() == f"error: {tmp_path / 'nope.gguf'}: model file not found"


def test_no_model_and_no_export_suggests_export(tmp_path):
    out = _medkit("chat", cwd=tmp_path, env_extra={"MEDKIT_RUNS": str(tmp_path / "runs")})
    assert out.returncode == 1 and "Traceback" not in out.stderr
    line = out.stderr.strip()
    assert line.startswith("error: no model given and no exported GGUF found") and "medkit export" in line


def test_adapter_for_another_base_is_one_line(smollm2_gguf, wrong_base_lora, tmp_path):
    out = _medkit(
        "chat", str(smollm2_gguf), "--adapter", f"wide={wrong_base_lora}", "--db", str(tmp_path / "h.db")
    )
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1
    assert "adapter was made for another base" in out.stderr and "2048 x 576" in out.stderr


def test_bad_adapter_spec(smollm2_gguf):
    out = _medkit("chat", str(smollm2_gguf), "--adapter", "no-equals-sign")
    assert out.returncode == 2 and "expected NAME=PATH" in out.stderr


def test_run_directory_resolves_to_its_model_and_adapters(tmp_path, monkeypatch):
    from medkit.runtime.options import resolve_model

    run = tmp_path / "runs" / "demo"
    (run / "export").mkdir(parents=True)
    (run / "recipe.toml").write_text("")
    (run / "export" / "model-q4_0.gguf").write_bytes(b"GGUF")
    (run / "export" / "adapter.gguf").write_bytes(b"GGUF")
    monkeypatch.setenv("MEDKIT_RUNS", str(tmp_path / "runs"))
    model, adapters = resolve_model("demo")
    assert model == run / "export" / "model-q4_0.gguf" and adapters == {
        "adapter": str(run / "export" / "adapter.gguf")
    }
    assert resolve_model(None) == (model, adapters)  # no argument: the latest export
