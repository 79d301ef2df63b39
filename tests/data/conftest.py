"""Tokenizers for the data-pipeline tests: one per family (SPM llama/mistral, byte-BPE qwen2/gpt2).

Trained once per session by tests/factories.py (nothing downloaded) and saved to a folder, then loaded
with AutoTokenizer as a real checkpoint would be. Tokenizers only: no model weights are needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import factories


@pytest.fixture(scope="session")
def tokenizer_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tokenizers")
    dirs = {}
    for kind in factories.ARCHS:
        dirs[kind] = root / kind
        factories.build_tokenizer(kind, dirs[kind])
        # enough of a model folder for medkit.models.resolve_base (the data verb loads only the tokenizer)
        (dirs[kind] / "config.json").write_text(json.dumps({"model_type": kind}))
    return dirs


@pytest.fixture()
def load_tok(tokenizer_dirs):
    """A fresh tokenizer of one family (tests may change its chat template)."""
    from transformers import AutoTokenizer

    def load(kind: str):
        tok = AutoTokenizer.from_pretrained(str(tokenizer_dirs[kind]))
        assert len(tok.encode("Hello patient", add_special_tokens=False)) > 1, f"{kind} tokenizer is empty"
        return tok

    return load
