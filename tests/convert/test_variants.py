"""Variants the four tiny fixtures do not cover: a Llama-3 style model (byte-level BPE with the
llama-bpe split, BOS added, llama3 rope scaling -> rope_freqs tensor) and a SmolLM-style
pre-tokenizer (single digits, then GPT-2's ByteLevel regex)."""

from __future__ import annotations

from pathlib import Path

import pytest

from medkit.convert.gguf.writer import write_gguf
from medkit.convert.verify import MIXED_TEXT, verify
from tests.convert.conftest import THREADS, load_llama

LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _bpe(pre, specials: list[str], bos: str | None):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from tests.factories import CORPUS

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tk.train_from_iterator([ln for ln in CORPUS.splitlines() if ln.strip()], trainer=trainer)
    tk.add_special_tokens(specials)
    if bos:
        tk.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, tk.token_to_id(bos))]
        )
    return PreTrainedTokenizerFast(tokenizer_object=tk, clean_up_tokenization_spaces=False)


def _llama_model(tok, out: Path, **config) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        initializer_range=0.2, tie_word_embeddings=True, **config,
    )  # fmt: skip
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg, dtype=torch.float32).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory) -> Path:
    from tokenizers import Regex, pre_tokenizers

    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    tok = _bpe(pre, specials, bos="<|begin_of_text|>")
    tok.bos_token, tok.eos_token = "<|begin_of_text|>", "<|eot_id|>"
    tok.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['role'] + ':\\n' + m['content'] + '<|eot_id|>' }}{% endfor %}"
    rope = {
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64,
    }  # fmt: skip
    return _llama_model(
        tok,
        tmp_path_factory.mktemp("llama3"),
        rope_scaling=rope,
        rope_theta=500000.0,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )


def test_llama3_style_model(llama3_dir, tmp_path):
    import gguf
    from transformers import AutoTokenizer

    out = write_gguf(llama3_dir, tmp_path / "l3-f32.gguf", "f32").path
    reader = gguf.GGUFReader(str(out))
    assert reader.get_field("tokenizer.ggml.pre").contents() == "llama-bpe"
    assert "rope_freqs.weight" in {t.name for t in reader.tensors}
    tokens = reader.get_field("tokenizer.ggml.tokens").contents()
    assert tokens[reader.get_field("tokenizer.ggml.eot_token_id").contents()] == "<|eot_id|>"
    tok = AutoTokenizer.from_pretrained(llama3_dir)
    llm = load_llama(out)
    assert llm.tokenize(MIXED_TEXT.encode(), add_bos=True, special=True) == tok(MIXED_TEXT)["input_ids"]
    (res,) = verify([out], llama3_dir, threads=THREADS)  # rope scaling wrong -> logits far off
    assert res.passed and res.agreement >= 0.99 and res.max_logit_diff < 0.05


def test_smollm_style_pretokenizer(tmp_path):
    import gguf
    from tokenizers import pre_tokenizers
    from transformers import AutoTokenizer

    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok = _bpe(pre, ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], bos=None)
    folder = _llama_model(tok, tmp_path / "smol")
    out = write_gguf(folder, tmp_path / "smol-f16.gguf", "f16").path
    assert gguf.GGUFReader(str(out)).get_field("tokenizer.ggml.pre").contents() == "smollm"
    text = MIXED_TEXT + " 2024-11-23 at 08:15, 1234567 mg"
    hf = AutoTokenizer.from_pretrained(folder)(text)["input_ids"]
    assert load_llama(out).tokenize(text.encode(), add_bos=True, special=True) == hf


def test_gpt2_with_slow_tokenizer_files_only(tiny_model_dir, tmp_path):
    """DialoGPT-style folders ship vocab.json + merges.txt and no tokenizer.json."""
    import json
    import shutil

    import gguf
    from transformers import GPT2Tokenizer

    folder = Path(shutil.copytree(tiny_model_dir("gpt2"), tmp_path / "gpt2"))
    model = json.loads((folder / "tokenizer.json").read_text())["model"]
    (folder / "vocab.json").write_text(json.dumps(model["vocab"]))
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer.json").unlink()
    out = write_gguf(folder, tmp_path / "gpt2-f16.gguf", "f16")
    reader = gguf.GGUFReader(str(out.path))
    assert reader.get_field("tokenizer.ggml.pre").contents() == "gpt-2"
    tokens = reader.get_field("tokenizer.ggml.tokens").contents()
    assert tokens[out.eot_token_id] == "<|endoftext|>"
    slow = GPT2Tokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    assert (
        load_llama(out.path).tokenize(MIXED_TEXT.encode(), add_bos=True, special=True)
        == slow(MIXED_TEXT)["input_ids"]
    )
