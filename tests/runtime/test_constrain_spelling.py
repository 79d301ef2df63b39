"""Issue 33's bad input: `constrain` on a model whose tokenizer cannot spell a code.

Every llama.cpp model medkit writes can (byte-level BPE has every byte; a SentencePiece vocabulary has its
bare pieces and byte tokens, test_constrain's tiny SPM llama), so the SmolLM2 GGUF is made to read '.' as
' .' (its piece and its detokenized text): the library, the command line and the server must each refuse
in one line before answering anything.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from medkit.runtime.constrain import ConstraintError

pytest.importorskip("llama_cpp")
pytest.importorskip("simple_icd_10_cm")

NEEDLE = "this model's tokenizer cannot spell ICD-10 codes: no token for '.'"
# applied in this process (monkeypatch) and in a `medkit` child process (the same lines, run first)
NO_DOT = """
import llama_cpp
from medkit.runtime.engine import Runtime
_detok, _piece = llama_cpp.Llama.detokenize, Runtime._piece_bytes
_dot = lambda b: b" ." if b == b"." else b
llama_cpp.Llama.detokenize = lambda self, tokens, *a, **k: _dot(_detok(self, tokens, *a, **k))
Runtime._piece_bytes = lambda self, token: _dot(_piece(self, token))
"""


@pytest.fixture
def no_dot(monkeypatch):
    import llama_cpp

    from medkit.runtime.engine import Runtime

    detok, piece = llama_cpp.Llama.detokenize, Runtime._piece_bytes

    def dot(b: bytes) -> bytes:
        return b" ." if b == b"." else b

    monkeypatch.setattr(llama_cpp.Llama, "detokenize", lambda self, t, *a, **k: dot(detok(self, t, *a, **k)))
    monkeypatch.setattr(Runtime, "_piece_bytes", lambda self, token: dot(piece(self, token)))


def test_the_library_refuses_at_open_and_per_call(no_dot, smollm2_gguf):
    from medkit.runtime.engine import Runtime
    from medkit.runtime.serve import ApiError, request_grammar

    with pytest.raises(ConstraintError) as info:
        Runtime(smollm2_gguf, ctx=256, threads=1, gpu_layers=0, constrain="icd10")
    assert info.value.one_line() == f"{smollm2_gguf}: {NEEDLE}"
    with Runtime(smollm2_gguf, ctx=256, threads=1, gpu_layers=0) as rt:  # unconstrained: it opens
        with pytest.raises(ConstraintError, match=NEEDLE):
            rt.chat([{"role": "user", "content": "Code?"}], constrain="icd10", max_tokens=4)
        with pytest.raises(ApiError) as api:  # what serve answers a request asking for the constraint
            request_grammar(rt, {"constrain": "icd10:J"}, None)
        assert api.value.status == 422 and api.value.param == "constrain" and NEEDLE in api.value.message
        assert rt.chat([{"role": "user", "content": "Hi"}], max_tokens=4).text  # still answers


@pytest.mark.parametrize("verb", ["chat", "serve"])
def test_the_command_line_refuses_in_one_line(smollm2_gguf, tmp_path, verb):
    db = ["--db", str(tmp_path / "h.db")] if verb == "chat" else []
    args = [verb, str(smollm2_gguf), "--constrain", "icd10", *db]  # refused before serving or drawing
    code = NO_DOT + f"from medkit.cli import main\nmain({args!r})\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert errors == [f"error: {smollm2_gguf}: {NEEDLE}"]
