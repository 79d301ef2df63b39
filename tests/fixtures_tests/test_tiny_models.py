"""The tiny random models: they load, tokenize losslessly, render their chat template and generate."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.factories import build_tiny_model, build_tokenizer

ARCHS = (
    "llama",
    "mistral",
    "qwen2",
    "gpt2",
)  # the seed's four fixtures, whose shapes these tests pin; newer families: tests/convert/test_families.py

TEXTS = [
    "Patient: 45 ans, fièvre 38.5°C, naïve café, Übelkeit, dolor torácico.",
    "HbA1c 7.2% -> target < 7%; ICD-10-CM E11.9 & I10 (2024)",
    "emoji 😷🩺💊 and CJK 头痛 and Greek Ωμέγα",
    "two  spaces,\ttab and\nnew lines\n\nend",
]
MESSAGES = [{"role": "user", "content": "What is gout?"}]


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    cache: dict[str, tuple] = {}

    def get(arch: str):
        if arch not in cache:
            folder = tiny_model_dir(arch)
            model = AutoModelForCausalLM.from_pretrained(folder)
            cache[arch] = (folder, AutoTokenizer.from_pretrained(folder), model.eval())
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", ARCHS)
def test_folder_has_hf_files(tiny_model_dir, arch):
    folder = tiny_model_dir(arch)
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "chat_template.jinja" in names or "chat_template" in (folder / "tokenizer_config.json").read_text()
    assert ("tokenizer.model" in names) == (arch in ("llama", "mistral"))
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == arch
    assert "quantization_config" not in config


@pytest.mark.parametrize("arch", ARCHS)
def test_config_shape(loaded, arch):
    _, tok, model = loaded(arch)
    cfg = model.config
    assert cfg.hidden_size == 64 and cfg.num_hidden_layers == 2 and cfg.num_attention_heads == 4
    if arch == "gpt2":
        assert cfg.vocab_size == len(tok)
        assert cfg.tie_word_embeddings
    else:
        assert cfg.num_key_value_heads == 2  # GQA
    if arch == "qwen2":
        assert cfg.vocab_size == len(tok) and cfg.tie_word_embeddings
        assert cfg.rope_parameters["rope_theta"] == 1_000_000.0
    if arch in ("llama", "mistral"):
        assert cfg.vocab_size % 64 == 0 and cfg.vocab_size > len(tok)  # padded vocab
        assert not cfg.tie_word_embeddings
    tied = model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert tied == cfg.tie_word_embeddings


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(loaded, arch, text):
    _, tok, _ = loaded(arch)
    ids = tok.encode(text, add_special_tokens=False)
    assert tok.unk_token_id not in ids or arch == "gpt2"  # byte fallback / byte-level: nothing is unknown
    assert tok.decode(ids) == text


@pytest.mark.parametrize("arch", ["llama", "mistral"])
def test_spm_tokenizer_matches_sentencepiece(loaded, arch):
    import sentencepiece as spm

    folder, tok, _ = loaded(arch)
    sp = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model"))
    assert sp.get_piece_size() == len(tok)
    assert (sp.id_to_piece(0), sp.id_to_piece(1), sp.id_to_piece(2)) == ("<unk>", "<s>", "</s>")
    assert (tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (0, 1, 2)
    for text in TEXTS:
        assert tok.encode(text, add_special_tokens=False) == sp.encode(text)
    assert "<0xF0>" in tok.convert_ids_to_tokens(tok.encode("😷", add_special_tokens=False))
    assert tok("fever").input_ids[0] == tok.bos_token_id


def test_bpe_special_tokens(loaded):
    _, qwen, _ = loaded("qwen2")
    for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"):
        assert len(qwen.encode(special, add_special_tokens=False)) == 1
    assert qwen.eos_token == "<|im_end|>" and qwen.pad_token == "<|endoftext|>"
    assert qwen("fever").input_ids == qwen.encode("fever", add_special_tokens=False)  # no BOS, like Qwen2
    _, gpt2, _ = loaded("gpt2")
    assert gpt2.bos_token == gpt2.eos_token == "<|endoftext|>"


EXPECTED_PROMPT = {
    "llama": "<|user|>\nWhat is gout?</s>\n<|assistant|>\n",
    "mistral": "<s>[INST] What is gout? [/INST]",
    "qwen2": "<|im_start|>user\nWhat is gout?<|im_end|>\n<|im_start|>assistant\n",
    "gpt2": "What is gout?<|endoftext|>",
}


@pytest.mark.parametrize("arch", ARCHS)
def test_chat_template(loaded, arch):
    _, tok, _ = loaded(arch)
    assert (
        tok.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == EXPECTED_PROMPT[arch]
    )
    turn = [*MESSAGES, {"role": "assistant", "content": "Uric acid crystals."}]
    rendered = tok.apply_chat_template(turn, tokenize=False)
    assert rendered.rstrip("\n").endswith("Uric acid crystals." + tok.eos_token)


def test_mistral_template_folds_system_prompt(loaded):
    _, tok, _ = loaded("mistral")
    msgs = [{"role": "system", "content": "Be brief."}, *MESSAGES]
    assert tok.apply_chat_template(msgs, tokenize=False) == "<s>[INST] Be brief.\n\nWhat is gout? [/INST]"


@pytest.mark.parametrize("arch", ARCHS)
def test_generate_is_not_degenerate(loaded, arch):
    _, tok, model = loaded(arch)
    enc = tok.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        logits = model(**enc).logits
        out = model.generate(**enc, max_new_tokens=20, min_new_tokens=20, do_sample=False)
    assert torch.isfinite(logits).all()
    new = out[0, enc["input_ids"].shape[1] :].tolist()
    assert len(new) == 20 and len(set(new)) >= 5, new


def test_same_seed_same_weights(tmp_path):
    a = load_file(build_tiny_model("llama", tmp_path / "a", seed=3) / "model.safetensors")
    b = load_file(build_tiny_model("llama", tmp_path / "b", seed=3) / "model.safetensors")
    c = load_file(build_tiny_model("llama", tmp_path / "c", seed=4) / "model.safetensors")
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["model.embed_tokens.weight"], c["model.embed_tokens.weight"])


def test_fixture_caches_per_call(tiny_model_dir):
    assert tiny_model_dir("gpt2") == tiny_model_dir("gpt2")
    wide = tiny_model_dir("llama", hidden_size=256)
    assert wide != tiny_model_dir("llama") and wide == tiny_model_dir("llama", hidden_size=256)
    assert json.loads((wide / "config.json").read_text())["hidden_size"] == 256
    with pytest.raises(ValueError, match="unknown tiny arch"):
        tiny_model_dir("bloom")


def test_overrides_reach_the_config(tmp_path):
    folder = build_tiny_model("qwen2", tmp_path / "q", hidden_size=128, num_hidden_layers=1)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["hidden_size"] == 128 and cfg["num_hidden_layers"] == 1


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown"):
        build_tokenizer("bert", tmp_path)
    with pytest.raises(ValueError, match="unknown"):
        build_tiny_model("falcon", tmp_path)
