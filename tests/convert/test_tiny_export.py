"""Each tiny architecture: export -> llama.cpp loads it -> same tokens, same greedy text, right metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medkit.convert.verify import MIXED_TEXT
from tests.convert.conftest import load_llama
from tests.factories import ARCHS, TINY

PROMPT = "The patient has a fever of 38.5 degrees and a dry cough; the doctor"


def _llama(path, n_ctx=256):
    return load_llama(path, n_ctx=n_ctx, logits_all=True)


def _field(reader, key):
    f = reader.get_field(key)
    return None if f is None else f.contents()


_HF: dict = {}


def _hf(folder):
    """(tokenizer, float32 model) for a tiny folder, loaded once per session."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if folder not in _HF:
        tok = AutoTokenizer.from_pretrained(folder)
        _HF[folder] = tok, AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return _HF[folder]


def _hf_greedy(model, ids, n):
    import torch

    ids = list(ids)
    logits = []
    with torch.no_grad():
        for _ in range(n):
            out = model(torch.tensor([ids])).logits[0, -1].numpy()
            logits.append(out)
            ids.append(int(out.argmax()))
    return ids, logits


def _gguf_greedy(llm, ids, n):
    llm.reset()
    llm.eval(ids)
    ids = list(ids)
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        ids.append(nxt)
        llm.eval([nxt])
    return ids


@pytest.mark.parametrize("arch", ARCHS)
def test_tokenization_matches_transformers(arch, tiny_model_dir, tiny_gguf):
    tok, _ = _hf(tiny_model_dir(arch))
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "Fièvre 39 °C?"}, {"role": "assistant", "content": "Drink water 💧."}],
        tokenize=False,
    )
    texts = [MIXED_TEXT]
    if arch in ("qwen2", "gpt2", "qwen3", "gemma3", "gemma2", "smollm3", "qwen35"):
        # llama.cpp tokenizes SentencePiece like the sentencepiece library (a space prefix on text at
        # the start and after every special token); transformers' legacy=False Llama tokenizer does
        # not for text that starts with a space or follows a special token, so those cases are BPE-only.
        texts += [chat, "  leading spaces\n\n\ttabs and 1234567 digits"]
    llm = _llama(tiny_gguf(arch, "f16"))
    for text in texts:
        assert llm.tokenize(text.encode(), add_bos=True, special=True) == tok(text)["input_ids"], text


@pytest.mark.parametrize("ftype", ["f32", "f16"])
@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_continuation_matches_transformers(arch, ftype, tiny_model_dir, tiny_gguf):
    tok, model = _hf(tiny_model_dir(arch))
    prompt = tok(PROMPT)["input_ids"]
    want, hf_logits = _hf_greedy(model, prompt, 32)
    got = _gguf_greedy(_llama(tiny_gguf(arch, ftype)), prompt, 32)
    assert len(set(want[len(prompt) :])) > 3, "the tiny model should not just repeat one token"
    if got != want:  # only a numerical near-tie in transformers' own logits may flip a choice
        i = next(k for k, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
        step = hf_logits[i - len(prompt)]
        margin = float(step[want[i]] - step[got[i]])
        assert margin < (1e-4 if ftype == "f32" else 2e-3), f"diverged at {i}: margin {margin}"


@pytest.mark.parametrize("arch", ARCHS)
def test_metadata_vocab_and_end_of_turn(arch, tiny_model_dir, tiny_gguf):
    import gguf
    import llama_cpp

    folder = tiny_model_dir(arch)
    config = json.loads((folder / "config.json").read_text())
    path = tiny_gguf(arch, "f16")
    reader = gguf.GGUFReader(str(path))
    tokens = _field(reader, "tokenizer.ggml.tokens")
    assert _field(reader, "general.architecture") == (
        "gpt2" if arch == "gpt2" else arch.replace("mistral", "llama")
    )
    assert len(tokens) == config["vocab_size"]  # SPM vocabularies are padded up to the embedding size
    eot = _field(reader, "tokenizer.ggml.eot_token_id")
    assert tokens[eot] == TINY[arch].end_of_turn
    assert _field(reader, "tokenizer.chat_template") == _hf(folder)[0].chat_template
    names = {t.name for t in reader.tensors}
    tied = config.get("tie_word_embeddings", arch == "gpt2")
    assert ("output.weight" in names) is (not tied)
    spm = ("llama", "mistral", "gemma3", "gemma2", "phi3")
    want_model = "llama" if arch in spm else "gemma4" if arch == "gemma4" else "gpt2"
    assert _field(reader, "tokenizer.ggml.model") == want_model
    if arch in ("qwen2", "gpt2", "qwen3"):
        assert (
            _field(reader, "tokenizer.ggml.pre")
            == {"qwen2": "qwen2", "gpt2": "gpt-2", "qwen3": "qwen2"}[arch]
        )
    llm = _llama(path)
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    assert llama_cpp.llama_vocab_is_eog(vocab, eot)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_end_of_turn_token_stops_generation(arch, tiny_gguf):
    """Once the model emits its end-of-turn token, llama.cpp ends the completion there."""
    import gguf

    path = tiny_gguf(arch, "f16")
    eot = _field(gguf.GGUFReader(str(path)), "tokenizer.ggml.eot_token_id")
    llm = _llama(path)
    calls = []

    def force_eot_at_third(ids, scores):
        calls.append(1)
        if len(calls) == 3:
            scores[:] = -1e9
            scores[eot] = 1e9
        return scores

    out = llm.create_completion(
        "Hello doctor", max_tokens=20, temperature=0.0, logits_processor=[force_eot_at_third]
    )
    assert out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["completion_tokens"] <= 3
