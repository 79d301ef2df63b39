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
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from tests.factories import BPE_VOCAB, LLAMA3_SPLIT, _corpus_lines

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    tk.train_from_iterator(_corpus_lines(), trainer=trainer)
    tk.add_special_tokens(specials)
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
