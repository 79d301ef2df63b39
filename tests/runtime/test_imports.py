"""The chat extra needs no torch: the runtime, the app, the server and `medkit chat --help` import none."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
{body}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
print("HEAVY", heavy)
"""


def _heavy(body: str) -> str:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(body=body)], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_runtime_app_and_serve_import_no_torch():
    assert (
        _heavy("import medkit.runtime.engine, medkit.tui.app, medkit.runtime.serve, medkit.runtime.history")
        == "HEAVY []"
    )


def test_chat_and_serve_help_import_no_torch():
    body = """
from medkit.cli import main
for verb in ("chat", "serve"):
    try:
        main([verb, "--help"])
    except SystemExit as e:
        assert e.code in (0, None), e.code
"""
    assert _heavy(body) == "HEAVY []"


def test_runtime_loads_a_model_without_torch(smollm2_gguf):
    body = f"""
from medkit.runtime.engine import Runtime
rt = Runtime({str(smollm2_gguf)!r}, ctx=256, threads=1, gpu_layers=0)
assert rt.chat([{{"role": "user", "content": "hi"}}], max_tokens=2).stats.completion_tokens >= 1
"""
    assert _heavy(body) == "HEAVY []"
