"""The reliability suite: faults a careless or hostile user meets, each one a row or a few lines.

Every fault must end the same way: one line that says what and where, a nonzero exit, no traceback, and
nothing lost or half-written. `run_medkit` runs the real CLI entry point in a subprocess (so a crash shows
as a traceback in stderr, exactly as a user would see it) and `assert_one_line_error` checks the outcome.
Add a fault: a new row in the table of the area's test file, or a test that calls these two helpers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEMO_DATA = REPO / "recipes" / "data" / "medqa_demo.jsonl"


@pytest.fixture(scope="module")
def run_template(tiny_model_dir, tmp_path_factory) -> Path:
    """runs/tiny_llama as `medkit train` leaves it: recipe.toml, run.json, adapter/ (with tokenizer)."""
    import json

    from tests.convert.adapter.test_lora_gguf import make_adapter

    base = tiny_model_dir("llama")
    run = tmp_path_factory.mktemp("template") / "tiny_llama"
    make_adapter(base, run / "adapter", b_std=0.02)
    (run / "recipe.toml").write_text(
        f'name = "tiny_llama"\n\n[model]\nbase = "{base}"\ndtype = "float32"\n\n'
        f'[data]\nsource = "{DEMO_DATA}"\nformat = "qa"\nmax_samples = 60\nmax_seq_len = 256\n'
    )
    (run / "run.json").write_text(json.dumps({"name": "tiny_llama", "base_model": str(base)}))
    return run


@pytest.fixture
def run_dir(run_template, tmp_path) -> Path:
    """A fresh copy of run_template under tmp_path/runs/ (a test may break it)."""
    import shutil

    dst = tmp_path / "runs" / "tiny_llama"
    shutil.copytree(run_template, dst)
    return dst


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("error:")]


def run_medkit(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> Outcome:
    """`medkit ARGS...` in a fresh interpreter, offline, with MEDKIT_DEBUG unset."""
    full_env = {k: v for k, v in os.environ.items() if k != "MEDKIT_DEBUG"}
    full_env.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "medkit", *args],
        cwd=str(cwd or REPO),
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def assert_one_line_error(out: Outcome, *needles: str) -> str:
    """A user's mistake: nonzero exit, no traceback, exactly one `error:` line containing every needle."""
    assert out.code != 0, f"exit 0 for a fault; stderr:\n{out.stderr}"
    assert "Traceback" not in out.stderr, f"a traceback for a user's mistake:\n{out.stderr}"
    lines = out.error_lines
    assert len(lines) == 1, f"expected one error line, got:\n{out.stderr}"
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


@pytest.fixture
def medkit_cli():
    return run_medkit
