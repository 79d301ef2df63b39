"""GGUF -> HF on tiny GGUFs (written by medkit.convert): exact round trip, cache once, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from medkit import models
from medkit.errors import ModelError

ARCHS = (
    "llama",
    "mistral",
    "qwen2",
    "gpt2",
)  # transformers' GGUF loader (gguf_file=) knows these; it has no qwen3/gemma3 mapping

TEXT = "Patient: fièvre 38.5°C, naïve café 😷 — HbA1c 7%"


@pytest.fixture(scope="module")
def tiny_gguf(tiny_model_dir, tmp_path_factory):
    writer = pytest.importorskip("medkit.convert.gguf.writer")
    made: dict[str, Path] = {}

    def make(arch: str) -> Path:
        if arch not in made:
            out = tmp_path_factory.mktemp(f"gguf-{arch}") / f"tiny-{arch}.f32.gguf"
            writer.write_gguf(tiny_model_dir(arch), out, "f32")
            made[arch] = out
        return made[arch]

    return make


@pytest.mark.parametrize("arch", ARCHS)
def test_round_trip_is_exact(arch, tiny_model_dir, tiny_gguf, tmp_path):
    out = models.dequantize_gguf_to_hf(tiny_gguf(arch), tmp_path / "hf")
    assert (out / "model.safetensors").is_file() and (out / models.DONE_MARKER).is_file()
    original, restored = tiny_model_dir(arch), out
    tok_a, tok_b = AutoTokenizer.from_pretrained(original), AutoTokenizer.from_pretrained(restored)
    ids = tok_a.encode(TEXT)
    assert tok_b.encode(TEXT) == ids and tok_b.decode(ids, skip_special_tokens=True) == TEXT
    assert tok_b.chat_template == tok_a.chat_template
    a = AutoModelForCausalLM.from_pretrained(original).eval()
    b = AutoModelForCausalLM.from_pretrained(restored).eval()
    # GGUF has no mistral arch: llama.cpp files store Mistral as llama, which is what comes back
    assert b.config.model_type == ("llama" if arch == "mistral" else arch)
    assert b.config.vocab_size == a.config.vocab_size
    assert b.config.tie_word_embeddings == a.config.tie_word_embeddings
    with torch.no_grad():
        assert torch.equal(a(torch.tensor([ids])).logits, b(torch.tensor([ids])).logits)


def test_cache_builds_once_and_load_model_uses_it(monkeypatch, tmp_path, tiny_gguf):
    monkeypatch.setenv("MEDKIT_CACHE", str(tmp_path / "cache"))
    gguf = tiny_gguf("qwen2")
    calls = []
    real = models.dequantize_gguf_to_hf
    monkeypatch.setattr(models, "dequantize_gguf_to_hf", lambda *a: calls.append(a) or real(*a))
    first = models.ensure_dequantized(gguf)
    second = models.ensure_dequantized(gguf)
    assert first == second == models.dequantized_dir(gguf) and len(calls) == 1
    assert first.parent == tmp_path / "cache" / "dequantized"
    model = models.load_model(gguf, dtype="float32")
    assert model.name_or_path == str(first) and len(calls) == 1
    assert models.load_tokenizer(str(gguf)).eos_token == "<|im_end|>"


def test_failed_build_leaves_nothing(monkeypatch, tmp_path, tiny_gguf):
    monkeypatch.setenv("MEDKIT_CACHE", str(tmp_path / "cache"))

    def broken(*args):
        raise ModelError("logits differ (simulated)")

    monkeypatch.setattr(models, "_check_same_logits", broken)
    with pytest.raises(ModelError, match="simulated"):
        models.ensure_dequantized(tiny_gguf("llama"))
    left = [p.name for p in (tmp_path / "cache" / "dequantized").iterdir() if not p.name.endswith(".lock")]
    assert left == []


def test_incomplete_cache_folder_is_rebuilt(monkeypatch, tmp_path, tiny_gguf):
    monkeypatch.setenv("MEDKIT_CACHE", str(tmp_path / "cache"))
    gguf = tiny_gguf("gpt2")
    target = models.dequantized_dir(gguf)
    target.mkdir(parents=True)
    (target / "model.safetensors").write_bytes(b"half written")  # a crash before the marker
    assert models.ensure_dequantized(gguf) == target
    assert (target / models.DONE_MARKER).is_file()
    assert AutoModelForCausalLM.from_pretrained(target).config.model_type == "gpt2"


def test_tokenizer_of_a_gguf_base_needs_no_dequantized_model(monkeypatch, tmp_path, tiny_gguf):
    """medkit.models.load_tokenizer is the one loader (train, data, eval, merge): a .gguf base's tokenizer
    is read from the GGUF once, then from its cache, and the weights are never dequantized for it."""
    monkeypatch.setenv("MEDKIT_CACHE", str(tmp_path / "cache"))
    gguf = tiny_gguf("qwen2")

    def no_dequantize(*args):
        raise AssertionError("a tokenizer load dequantized the model")

    monkeypatch.setattr(models, "ensure_dequantized", no_dequantize)
    first = models.load_tokenizer(gguf)
    cached = list((tmp_path / "cache" / "tokenizers").iterdir())
    assert [p.name.startswith(".") for p in cached] == [False]
    assert (cached[0] / "tokenizer_config.json").is_file()
    second = models.load_tokenizer(str(gguf), chat_template="{{ 'x' }}")
    assert second.encode(TEXT) == first.encode(TEXT) and first.eos_token == "<|im_end|>"
    assert second.chat_template == "{{ 'x' }}"
