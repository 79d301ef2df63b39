"""Tiny offline SmolLM3 and Qwen3.5 models (issue 35): tokenizers and configs for tests/factories.py TINY.

The templates are written for these tests in the style of the real models' templates (ChatML turns, a
think block the ``enable_thinking`` switch decides), not copied from the hub.
"""

from __future__ import annotations

from typing import Any

# SmolLM3's layout: ChatML turns; with thinking off (enable_thinking false, or /no_think in the system
# prompt) the assistant turn opens with an empty think block, in the generation prompt and in the
# conversation alike, so a prompt stays a prefix of its conversation.
SMOLLM3_TEMPLATE = (
    "{%- set think = not (enable_thinking is defined and enable_thinking is false) -%}"
    "{%- if messages and messages[0].role == 'system' -%}"
    "{%- if '/no_think' in messages[0].content -%}{%- set think = false -%}{%- endif -%}"
    "{{- '<|im_start|>system\\n' + messages[0].content.replace('/no_think', '').replace('/think', '').strip()"
    " + '<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{%- set opener = '' if think else '<think>\\n\\n</think>\\n' -%}"
    "{%- for message in messages if message.role != 'system' -%}"
    "{%- if message.role == 'user' -%}{{- '<|im_start|>user\\n' + message.content + '<|im_end|>\\n' -}}"
    "{%- else -%}{{- '<|im_start|>assistant\\n' + opener + message.content + '<|im_end|>\\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' + opener -}}{%- endif -%}"
)
SMOLLM3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|im_start|>", "<|im_end|>"]


def llama3_bpe(specials: list[str], added: tuple[str, ...] = ()) -> Any:
    """A byte-level BPE trained on the test corpus, split like Llama 3 (llama.cpp's `llama-bpe`), with
    ``specials`` after the vocabulary and ``added`` as plain added tokens; no BOS added."""
    from transformers import PreTrainedTokenizerFast

    from tests.factories import LLAMA3_SPLIT, split_bpe

    tk = split_bpe(LLAMA3_SPLIT, specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token=specials[1],
                                  clean_up_tokenization_spaces=False)  # fmt: skip
    tok.add_tokens(list(added))
    return tok


def smollm3_tokenizer(out_dir: Any) -> Any:
    """SmolLM3's tokenizer layout: Llama 3's byte-level BPE, <|im_start|>/<|im_end|> specials, <think>
    markers as added tokens, eos <|im_end|>, no BOS."""
    tok = llama3_bpe(SMOLLM3_SPECIALS, ("<think>", "</think>"))
    tok.chat_template = SMOLLM3_TEMPLATE
    return tok


def smollm3_config(tok: Any, overrides: dict[str, Any]) -> Any:
    """SmolLM3-3B's shape scaled down: 4 layers (the 4th without rope), GQA 4 over 2, rope 5e6, tied."""
    from transformers import SmolLM3Config

    from tests.factories import _common

    ids = tok.convert_tokens_to_ids
    kw = _common(
        vocab_size=len(tok), num_hidden_layers=4, tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0},
        bos_token_id=None, eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|end_of_text|>"),
    )  # fmt: skip
    return SmolLM3Config(**{**kw, **overrides})


# Qwen3.5's split regex (tokenizer.json): marks (\p{M}) join letters, single digits (llama.cpp's `qwen35`)
QWEN35_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}"
    r"| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def qwen35_template() -> str:
    """Qwen3's template with Qwen3.5's generation prompt: thinking on (the default) opens a think block the
    model fills; off writes the empty block, as Qwen3's does."""
    from tests.factories import QWEN3_TEMPLATE

    off = "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}"
    assert off in QWEN3_TEMPLATE
    return QWEN3_TEMPLATE.replace(off, off + "{%- else %}{{- '<think>\\n' }}")


def qwen35_tokenizer(out_dir: Any) -> Any:
    """Qwen3.5's tokenizer layout: byte-level BPE split by its regex, <|endoftext|> <|im_start|> <|im_end|>
    after the vocabulary, <think> markers as added tokens, eos <|im_end|>, no BOS."""
    from transformers import PreTrainedTokenizerFast

    from tests.factories import split_bpe

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tk = split_bpe(QWEN35_SPLIT, specials)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  additional_special_tokens=specials[1:], clean_up_tokenization_spaces=False)  # fmt: skip
    tok.add_tokens(["<think>", "</think>"])
    tok.chat_template = qwen35_template()
    return tok


def qwen35_config(tok: Any, overrides: dict[str, Any]) -> Any:
    """Qwen3.5-2B's shape scaled down: 3 Gated DeltaNet layers then 1 gated full-attention layer, 4 V heads
    over 2 K heads (llama.cpp reorders them), head_dim 32 with a quarter rotary (8 dims, mrope sections
    [2, 1, 1]), one MTP layer declared (the weights get one: see build_qwen35_mtp), tied embeddings."""
    from transformers import Qwen3_5TextConfig

    from tests.factories import _common

    ids = tok.convert_tokens_to_ids
    kw = _common(
        vocab_size=len(tok), num_hidden_layers=4, head_dim=32, tie_word_embeddings=True,
        linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
        linear_num_value_heads=4, mtp_num_hidden_layers=1,
        rope_parameters={"rope_type": "default", "rope_theta": 10_000_000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [2, 1, 1], "mrope_interleaved": True},
        bos_token_id=None, eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
    )  # fmt: skip
    return Qwen3_5TextConfig(**{**kw, **overrides})


def qwen35_finish(folder: Any, seed: int) -> None:
    """What a random Qwen3.5 from transformers lacks against a released checkpoint: norms that are not all
    zero (HF computes x * (1 + w); llama.cpp gets w + 1, but the gated DeltaNet norm as is), A_log and
    dt_bias off their init, and the MTP block (``mtp.*``: fc over [embedding; hidden], its two input norms,
    one full-attention decoder layer and its final norm), which transformers does not load."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    path = folder / "model.safetensors"
    weights = load_file(str(path))
    rng = np.random.default_rng(seed + 35)
    for name, w in weights.items():
        if name.endswith(("norm.weight", ".A_log", ".dt_bias")):
            weights[name] = (w + rng.normal(0.0, 0.3, w.shape)).astype(w.dtype)
    full = next(int(n.split(".")[2]) for n in weights if ".self_attn.q_proj." in n)
    n_embd = weights["model.embed_tokens.weight"].shape[1]
    mtp = {"mtp.fc.weight": (n_embd, 2 * n_embd)}
    mtp.update(
        {f"mtp.{n}.weight": (n_embd,) for n in ("pre_fc_norm_embedding", "pre_fc_norm_hidden", "norm")}
    )
    for name, w in weights.items():
        if name.startswith(f"model.layers.{full}."):
            mtp["mtp.layers.0." + name.split(".", 3)[3]] = w.shape
    for name, shape in mtp.items():
        weights[name] = rng.normal(0.0, 0.2, shape).astype(np.float32)
    save_file(weights, str(path), metadata={"format": "pt"})
