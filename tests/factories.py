"""Tiny offline models for tests: real tokenizers trained here, a small random model of every family in
TINY (llama, mistral, qwen2, gpt2, qwen3, gemma3, gemma2, phi3).

    build_tokenizer(kind, out_dir)          -> saved tokenizer (SentencePiece or byte-level BPE, as the
                                               family's own), chat template included
    build_tiny_model(arch, out_dir, seed=0) -> HF folder: safetensors + config + tokenizer + template

Nothing is downloaded: the tokenizers are trained on CORPUS, a few KB of medical-style text below.
One entry of TINY per model family medkit exports (medkit.convert.arch.supported(); a test checks
they are the same): adding a family is its module in convert/arch/ plus its row in TINY.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CORPUS = """\
The patient is a 45-year-old woman with a three-day history of fever, dry cough and fatigue.
Her temperature was 38.5 degrees Celsius, heart rate 96 beats per minute, blood pressure 128/84 mmHg.
Oxygen saturation was 97% on room air. Chest auscultation revealed fine crackles at the right base.
A chest X-ray showed a right lower lobe infiltrate consistent with community-acquired pneumonia.
She was started on amoxicillin 1 g three times daily for 5 days and advised to drink plenty of fluids.
Type 2 diabetes mellitus is a chronic condition in which the body does not use insulin properly.
Common symptoms include increased thirst, frequent urination, blurred vision and slow-healing wounds.
Treatment usually starts with lifestyle changes: a balanced diet, regular exercise and weight loss.
Metformin is often the first medicine prescribed; the usual starting dose is 500 mg once or twice a day.
HbA1c should be checked every 3 to 6 months; a target below 7% is appropriate for many adults.
Hypertension is defined as a blood pressure of 140/90 mmHg or higher on repeated measurements.
Risk factors include age, obesity, high salt intake, smoking, alcohol and a family history of heart disease.
First-line drugs include ACE inhibitors, calcium channel blockers and thiazide diuretics.
Asthma is a chronic inflammatory disease of the airways that causes wheezing, breathlessness and cough.
An inhaled corticosteroid controls inflammation; a short-acting beta-agonist relieves acute symptoms.
What are the symptoms of migraine? Migraine causes a throbbing headache, often on one side of the head,
with nausea, vomiting and sensitivity to light and sound. Attacks can last from 4 to 72 hours.
What is the ICD-10-CM code for essential hypertension? The code is I10.
The ICD-10-CM code E11.9 means type 2 diabetes mellitus without complications.
J18.9 is pneumonia, unspecified organism; J45.909 is unspecified asthma, uncomplicated.
Anemia is a condition in which the blood lacks enough healthy red blood cells or hemoglobin.
Iron deficiency anemia is treated with oral iron supplements and by correcting the underlying cause.
Chronic kidney disease is staged by the estimated glomerular filtration rate (eGFR) in mL/min/1.73 m2.
Stage 3a corresponds to an eGFR between 45 and 59; stage 5 is below 15 and may require dialysis.
Atrial fibrillation is an irregular and often rapid heart rhythm that increases the risk of stroke.
Anticoagulants such as apixaban or warfarin reduce this risk; the INR target for warfarin is 2.0 to 3.0.
Le patient présente une fièvre à 39 °C, des céphalées et une raideur de la nuque depuis hier soir.
La méningite bactérienne est une urgence médicale : l'antibiothérapie doit débuter sans délai.
El paciente refiere dolor torácico opresivo irradiado al brazo izquierdo desde hace 2 horas.
Der Patient klagt über Übelkeit, Schwindel und Müdigkeit seit drei Tagen.
Always consult a qualified health professional; this information is not a substitute for medical advice.
Question: How is hypothyroidism treated? Answer: with daily levothyroxine, adjusted to the TSH level.
Question: What causes gout? Answer: deposits of uric acid crystals in the joints, often the big toe.
Question: When should a child with fever see a doctor? Answer: if under 3 months old, if the fever
lasts more than 48 hours, or with a rash, stiff neck, trouble breathing or unusual drowsiness.
Vitamin D deficiency is common in winter; a level below 20 ng/mL (50 nmol/L) is usually considered low.
Dehydration in older adults can cause confusion, dizziness, low blood pressure and reduced urine output.
Paracetamol (acetaminophen) 500 mg to 1 g every 4 to 6 hours, no more than 4 g in 24 hours.
Ibuprofen should be avoided in patients with kidney disease, stomach ulcers or severe heart failure.
"""

# Chat templates written for these tests, in the style of the real models' templates.
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' + message['content'] + eos_token + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)
INST_TEMPLATE = (
    "{{ bos_token }}"
    "{% set system = messages[0]['content'] + '\\n\\n' if messages and messages[0]['role'] == 'system' else '' %}"
    "{% for message in messages if message['role'] != 'system' %}"
    "{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + (system if loop.first else '') + message['content'] + ' [/INST]' }}"
    "{% else %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
QWEN3_TEMPLATE = (
    "{%- if messages[0].role == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- set ns = namespace(last_query_index=messages|length - 1) %}"
    "{%- for message in messages[::-1] %}"
    "{%- set index = (messages|length - 1) - loop.index0 %}"
    "{%- if message.role == 'user' and ns.last_query_index == messages|length - 1 %}"
    "{%- set ns.last_query_index = index %}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- for message in messages %}"
    "{%- set content = message.content if message.content is string else '' %}"
    "{%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- elif message.role == 'assistant' %}"
    "{%- set reasoning_content = '' %}"
    "{%- if message.reasoning_content is string %}{%- set reasoning_content = message.reasoning_content %}"
    "{%- elif '</think>' in content %}"
    "{%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{%- endif %}"
    "{%- if loop.index0 > ns.last_query_index and (loop.last or reasoning_content) %}"
    "{{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n'"
    " + content.lstrip('\\n') }}"
    "{%- else %}{{- '<|im_start|>' + message.role + '\\n' + content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)
# Gemma 3 / MedGemma: no system role (folded into the first user turn), `model` turns, <end_of_turn>.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)
# Gemma 2's: Gemma 3's turns, but a system message is refused (medkit folds it into the first user turn)
GEMMA2_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}{{ raise_exception('System role not supported') }}{%- endif -%}"
    "{%- for message in messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)
# Gemma 4 / MedGemma 2: a native system turn, <|turn>role ... <turn|> turns, `model` turns whose thinking
# channel is stripped from history, and (thinking off) an empty thought channel after the generation prompt.
GEMMA4_TEMPLATE = (
    "{%- macro visible(text) -%}{%- set ns = namespace(out='') -%}"
    "{%- for part in text.split('<channel|>') -%}"
    "{%- set ns.out = ns.out + (part.split('<|channel>')[0] if '<|channel>' in part else part) -%}"
    "{%- endfor -%}{{- ns.out | trim -}}{%- endmacro -%}"
    "{{- bos_token -}}{%- set loop_messages = messages -%}"
    "{%- set thinking = enable_thinking is defined and enable_thinking -%}"
    "{%- if thinking or messages[0]['role'] in ['system', 'developer'] -%}{{- '<|turn>system\\n' -}}"
    "{%- if thinking -%}{{- '<|think|>\\n' -}}{%- endif -%}"
    "{%- if messages[0]['role'] in ['system', 'developer'] -%}{{- messages[0]['content'] | trim -}}"
    "{%- set loop_messages = messages[1:] -%}{%- endif -%}{{- '<turn|>\\n' -}}{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{- '<|turn>' + role + '\\n' -}}"
    "{%- if role == 'model' -%}{{- visible(message['content']) -}}{%- else -%}{{- message['content'] | trim -}}"
    "{%- endif -%}{{- '<turn|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|turn>model\\n' -}}"
    "{%- if not thinking -%}{{- '<|channel>thought\\n<channel|>' -}}{%- endif -%}{%- endif -%}"
)
GEMMA4_SPECIALS = ["<|turn>", "<turn|>", "<|think|>", "<|channel>", "<channel|>"]
DIALOGPT_TEMPLATE = "{% for message in messages %}{{ message['content'] + eos_token }}{% endfor %}"
# Phi-3.5-mini / Phi-4-mini: <|role|> headers, turns closed by <|end|>, the eos after a finished conversation.
PHI3_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' and message['content'] %}{{ '<|system|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '<|user|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '<|assistant|>\\n' + message['content'] + '<|end|>\\n' }}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% else %}{{ eos_token }}{% endif %}"
)
PHI3_SPECIALS = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]

# Qwen2's pre-tokenizer split (letters, single digits, punctuation runs, newlines, spaces).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

SPM_VOCAB = 512  # 3 specials + 256 byte pieces + merges; config pads it to the next multiple of 64
BPE_VOCAB = 640  # 256 byte symbols + merges (+ specials)
# Wide enough init that the blocks, not the embedding, decide the next token: greedy output varies.
INIT_STD = 0.2
TIED_EMBED_SCALE = 0.25


def _corpus_lines() -> list[str]:
    return [line for line in CORPUS.splitlines() if line.strip()]


def split_bpe(split: str, specials: list[str]) -> Any:
    """A byte-level BPE (tokenizers' Tokenizer) trained on the test corpus, pre-split by the regex ``split``
    (Llama 3's, Qwen's...) then to bytes, with ``specials`` added after the vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])  # fmt: skip
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=BPE_VOCAB, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)  # fmt: skip
    tk.train_from_iterator(_corpus_lines(), trainer=trainer)
    tk.add_special_tokens(specials)
    return tk


def _train_spm(vocab_size: int) -> bytes:
    """A Llama-style SentencePiece BPE model (byte fallback, split digits, identity normalization)."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus_lines()),
        model_writer=model,
        model_type="bpe",
        vocab_size=vocab_size,
        character_coverage=1.0,
        byte_fallback=True,
        split_digits=True,
        normalization_rule_name="identity",
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        allow_whitespace_only_pieces=True,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        hard_vocab_limit=False,
        num_threads=1,
        minloglevel=2,
    )
    return model.getvalue()


def _gemma_tokenizer(out_dir: Path):
    """Gemma's SentencePiece layout: <pad> <eos> <bos> <unk> <mask> ids 0-4, turn markers, no space prefix."""
    import sentencepiece as spm
    from transformers import GemmaTokenizer

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_corpus_lines()), model_writer=model, model_type="bpe", vocab_size=SPM_VOCAB,
        character_coverage=1.0, byte_fallback=True, split_digits=True, normalization_rule_name="identity",
        add_dummy_prefix=False, remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        split_by_whitespace=False, pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>",
        eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=["<mask>", "<start_of_turn>", "<end_of_turn>"], hard_vocab_limit=False,
        num_threads=1, minloglevel=2,
    )  # fmt: skip
    (out_dir / "tokenizer.model").write_bytes(model.getvalue())
    tok = GemmaTokenizer.from_pretrained(str(out_dir), add_bos_token=True, clean_up_tokenization_spaces=False)
    tok.chat_template = GEMMA_TEMPLATE
    return tok


def _gemma2_tokenizer(out_dir: Path):
    tok = _gemma_tokenizer(out_dir)
    tok.chat_template = GEMMA2_TEMPLATE
    return tok


def _gemma4_tokenizer(out_dir: Path):
    """Gemma 4's layout: tokenizer.json only (BPE over SentencePiece pieces, byte fallback, spaces as ▁),
    <pad> <eos> <bos> <unk> <mask> ids 0-4, its turn and channel markers special, Gemma 4's template."""
    tok = _gemma_tokenizer(out_dir)
    (out_dir / "tokenizer.model").unlink()  # Gemma 4 ships tokenizer.json alone
    tok.add_special_tokens({"additional_special_tokens": GEMMA4_SPECIALS})
    tok.chat_template = GEMMA4_TEMPLATE
    return tok


def _qwen3_tokenizer(out_dir: Path):
    """Qwen2's byte-level BPE plus Qwen3's <think> markers (added tokens, not special), Qwen3's template."""
    tok = _bpe_tokenizer("qwen2")
    tok.add_tokens(["<think>", "</think>"])
    tok.chat_template = QWEN3_TEMPLATE
    return tok


def _phi3_tokenizer(out_dir: Path):
    """Phi-3.5-mini's layout: Llama's SentencePiece, its turn markers added after the vocabulary as
    special tokens, eos <|endoftext|>, no BOS added (add_bos_token false), Phi-3's template."""
    tok = _spm_tokenizer(PHI3_TEMPLATE, out_dir, add_bos_token=False)
    tok.add_special_tokens({"eos_token": "<|endoftext|>", "additional_special_tokens": PHI3_SPECIALS[1:]})
    return tok


def _spm_tokenizer(template: str, out_dir: Path, add_bos_token: bool = True):
    from transformers import LlamaTokenizer

    (out_dir / "tokenizer.model").write_bytes(_train_spm(SPM_VOCAB))
    # transformers turns the SentencePiece BPE model into its fast (byte-fallback BPE) tokenizer.
    tok = LlamaTokenizer.from_pretrained(
        str(out_dir),
        add_bos_token=add_bos_token,
        add_eos_token=False,
        legacy=False,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = template
    return tok


def _bpe_tokenizer(kind: str):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind == "gpt2":
        specials = ["<|endoftext|>"]
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    else:
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
        pre = pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=BPE_VOCAB,
        special_tokens=specials if kind == "gpt2" else [],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tk.train_from_iterator(_corpus_lines(), trainer=trainer)
    if kind == "qwen2":  # Qwen2 keeps its special tokens after the BPE vocabulary
        tk.add_special_tokens(specials)
    if kind == "gpt2":
        tok = PreTrainedTokenizerFast(
            tokenizer_object=tk,
            bos_token="<|endoftext|>",
            eos_token="<|endoftext|>",
            unk_token="<|endoftext|>",
            clean_up_tokenization_spaces=False,
        )
        tok.chat_template = DIALOGPT_TEMPLATE
    else:
        tok = PreTrainedTokenizerFast(
            tokenizer_object=tk,
            eos_token="<|im_end|>",
            pad_token="<|endoftext|>",
            additional_special_tokens=["<|im_start|>", "<|im_end|>"],
            clean_up_tokenization_spaces=False,
        )
        tok.chat_template = CHATML_TEMPLATE
    return tok


def _gpt2_config(tok, overrides: dict[str, Any]):
    from transformers import GPT2Config

    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    kw: dict[str, Any] = dict(
        vocab_size=len(tok), n_embd=64, n_layer=2, n_head=4, n_inner=256, n_positions=1024,
        initializer_range=INIT_STD, bos_token_id=eos, eos_token_id=eos, tie_word_embeddings=True,
    )  # fmt: skip
    return GPT2Config(**{**kw, **overrides})


def _common(**kw: Any) -> dict[str, Any]:
    """A Llama-style decoder: 2 layers, 4 heads over 2 KV heads, 64 wide."""
    common: dict[str, Any] = dict(
        hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512, rms_norm_eps=1e-6, initializer_range=INIT_STD,
    )  # fmt: skip
    return {**common, **kw}


def _qwen2_config(tok, overrides: dict[str, Any]):
    from transformers import Qwen2Config

    ids = tok.convert_tokens_to_ids
    kw = _common(
        vocab_size=len(tok), tie_word_embeddings=True, rope_theta=1_000_000.0,
        bos_token_id=ids("<|endoftext|>"), eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
        use_sliding_window=False,
    )  # fmt: skip
    return Qwen2Config(**{**kw, **overrides})


def _qwen3_config(tok, overrides: dict[str, Any]):
    """Qwen3-4B's shape scaled down: head_dim wider than hidden / heads (32 x 4 over 64), q/k norms, tied."""
    from transformers import Qwen3Config

    ids = tok.convert_tokens_to_ids
    kw = _common(
        vocab_size=len(tok), head_dim=32, tie_word_embeddings=True, rope_theta=1_000_000.0,
        attention_bias=False, use_sliding_window=False, bos_token_id=ids("<|endoftext|>"),
        eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"),
    )  # fmt: skip
    return Qwen3Config(**{**kw, **overrides})


def _gemma3_config(tok, overrides: dict[str, Any]):
    """Gemma-3-4B's shape scaled down: 5 sliding + 1 global layer, window 16 (shorter than the test
    texts), rope 1e6 with linear x8 on global layers and 1e4 on sliding ones, q/k norms, tied."""
    from transformers import Gemma3TextConfig

    kw = _common(
        vocab_size=len(tok), num_hidden_layers=6, head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, final_logit_softcapping=None, attn_logit_softcapping=None,
        rope_parameters={
            "full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1_000_000.0},
            "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        },
    )  # fmt: skip
    return Gemma3TextConfig(**{**kw, **overrides})


def _gemma2_config(tok, overrides: dict[str, Any]):
    """Gemma-2-2B's shape scaled down: sliding and global layers alternating, window 16 (shorter than the
    test texts), attention soft-cap 50 and final soft-cap 30 (Gemma 2's), q scaled by head_dim, tied."""
    from transformers import Gemma2Config

    kw = _common(
        vocab_size=len(tok), num_hidden_layers=4, head_dim=16, query_pre_attn_scalar=16, sliding_window=16,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
    )  # fmt: skip
    return Gemma2Config(**{**kw, **overrides})


def _gemma4_config(tok, overrides: dict[str, Any]):
    """Gemma-4-E2B's shape scaled down: per-layer input embeddings (8 wide), 4 sliding + 2 full layers with
    head sizes 16 / 32, window 16 (shorter than the test texts), proportional rope (a quarter of the full
    heads turns), the last 2 layers reading the k/v of layers 2 and 3 with double-wide MLPs, tied."""
    from transformers import Gemma4TextConfig

    kw = _common(
        vocab_size=len(tok), num_hidden_layers=6, head_dim=16, global_head_dim=32, sliding_window=16,
        layer_types=["sliding_attention"] * 3 + ["full_attention", "sliding_attention", "full_attention"],
        hidden_size_per_layer_input=8, vocab_size_per_layer_input=len(tok), num_kv_shared_layers=2,
        use_double_wide_mlp=True, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.convert_tokens_to_ids("<turn|>"), pad_token_id=tok.pad_token_id,
        final_logit_softcapping=None, initializer_range=0.1,
    )  # fmt: skip
    return Gemma4TextConfig(**{**kw, **overrides})


PHI3_LONGROPE = {"rope_type": "longrope", "rope_theta": 10000.0, "partial_rotary_factor": 0.75,
                 "short_factor": [1.0, 1.02, 1.05, 1.1, 1.2, 1.4], "long_factor": [1.0, 1.5, 2.5, 4.0, 6.5, 9.0],
                 "original_max_position_embeddings": 4096}  # fmt: skip


def _phi3_config(tok, overrides: dict[str, Any]):
    """Phi-4-mini's shape scaled down: GQA (4 over 2 heads), 0.75 partial rotary (12 of 16 dims), LongRoPE
    (131072 over 4096 positions: attention factor 1.19, six short/long factors), fused qkv / gate_up, tied.
    ``rope_parameters={"rope_type": "default", ...}`` gives Phi-3-mini-4k's plain rope."""
    from transformers import Phi3Config

    ids = tok.convert_tokens_to_ids
    kw = _common(
        vocab_size=64 * (len(tok) // 64 + 1), tie_word_embeddings=True, max_position_embeddings=131072,
        original_max_position_embeddings=4096, partial_rotary_factor=0.75, rope_parameters=dict(PHI3_LONGROPE),
        sliding_window=None, bos_token_id=tok.bos_token_id, eos_token_id=ids("<|endoftext|>"),
        pad_token_id=ids("<|endoftext|>"),
    )  # fmt: skip
    return Phi3Config(**{**kw, **overrides})


def _spm_decoder_config(config_class: str, **extra: Any) -> Callable[[Any, dict[str, Any]], Any]:
    def make(tok, overrides: dict[str, Any]):
        import transformers

        kw = _common(
            vocab_size=64 * (len(tok) // 64 + 1),  # padded above the tokenizer, as real SPM checkpoints often are
            tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **extra,
        )  # fmt: skip
        return getattr(transformers, config_class)(**{**kw, **overrides})

    return make


def _later(name: str) -> Callable[..., Any]:
    """A builder of tests/tiny_late.py (SmolLM3, Qwen3.5: the families of issue 35), imported when called."""

    def call(*args: Any) -> Any:
        from tests import tiny_late

        return getattr(tiny_late, name)(*args)

    return call


@dataclass(frozen=True)
class Tiny:
    """How to build the tiny offline model of one family: its tokenizer and its config."""

    tokenizer: Callable[[Path], Any]  # out_dir -> tokenizer (saved by build_tokenizer)
    config: Callable[[Any, dict[str, Any]], Any]  # (tokenizer, overrides) -> transformers config
    end_of_turn: str  # the token its chat template closes assistant turns with
    finish: Callable[[Path, int], None] | None = None  # (saved folder, seed): weights transformers leaves out


TINY: dict[str, Tiny] = {
    "llama": Tiny(lambda d: _spm_tokenizer(ZEPHYR_TEMPLATE, d), _spm_decoder_config("LlamaConfig"), "</s>"),
    "mistral": Tiny(
        lambda d: _spm_tokenizer(INST_TEMPLATE, d),
        _spm_decoder_config("MistralConfig", sliding_window=None),
        "</s>",
    ),
    "qwen2": Tiny(lambda d: _bpe_tokenizer("qwen2"), _qwen2_config, "<|im_end|>"),
    "gpt2": Tiny(lambda d: _bpe_tokenizer("gpt2"), _gpt2_config, "<|endoftext|>"),
    "qwen3": Tiny(_qwen3_tokenizer, _qwen3_config, "<|im_end|>"),
    "gemma3": Tiny(_gemma_tokenizer, _gemma3_config, "<end_of_turn>"),
    "gemma2": Tiny(_gemma2_tokenizer, _gemma2_config, "<end_of_turn>"),
    "phi3": Tiny(_phi3_tokenizer, _phi3_config, "<|end|>"),
    "gemma4": Tiny(_gemma4_tokenizer, _gemma4_config, "<turn|>"),
    "smollm3": Tiny(_later("smollm3_tokenizer"), _later("smollm3_config"), "<|im_end|>"),
    "qwen35": Tiny(
        _later("qwen35_tokenizer"), _later("qwen35_config"), "<|im_end|>", _later("qwen35_finish")
    ),
}
ARCHS = tuple(TINY)


LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
]


def build_llama32(out_dir: str | Path, seed: int = 0) -> Path:
    """A tiny model with Llama-3.2-1B's config shape: llama3 rope scaling (factor 32, original 8192 positions,
    theta 500000), tied embeddings, GQA, and its tokenizer's layout: byte-level BPE split like Llama 3's,
    <|begin_of_text|> added once by the tokenizer, turns closed by <|eot_id|> (the llama3 template)."""
    import torch
    from tokenizers import processors
    from transformers import AutoModelForCausalLM, LlamaConfig, PreTrainedTokenizerFast

    from medkit.formats.chat_template import TEMPLATES

    out_dir = Path(out_dir)
    tk = split_bpe(LLAMA3_SPLIT, LLAMA3_SPECIALS)
    bos = tk.token_to_id("<|begin_of_text|>")
    tk.post_processor = processors.TemplateProcessing(
        single="<|begin_of_text|> $A", pair="<|begin_of_text|> $A <|begin_of_text|> $B",
        special_tokens=[("<|begin_of_text|>", bos)],
    )  # fmt: skip
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
        clean_up_tokenization_spaces=False,
    )  # fmt: skip
    tok.chat_template = TEMPLATES["llama3"]
    tok.save_pretrained(str(out_dir))
    ids = tok.convert_tokens_to_ids
    config = LlamaConfig(**_common(
        vocab_size=len(tok), head_dim=16, tie_word_embeddings=True, max_position_embeddings=131072,
        rope_theta=500_000.0, bos_token_id=bos, eos_token_id=[ids("<|end_of_text|>"), ids("<|eot_id|>")],
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
    ))  # fmt: skip
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(TIED_EMBED_SCALE)
    model.save_pretrained(str(out_dir))
    return out_dir


def build_tokenizer(kind: str, out_dir: str | Path):
    """Train and save the tokenizer for ``kind`` (an arch name) into ``out_dir``; returns it."""
    if kind not in ARCHS:
        raise ValueError(f"unknown tokenizer kind {kind!r}; expected one of {', '.join(ARCHS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = TINY[kind].tokenizer(out_dir)
    tok.save_pretrained(str(out_dir))
    return tok


def build_tiny_model(arch: str, out_dir: str | Path, seed: int = 0, **overrides: Any) -> Path:
    """Write a tiny random ``arch`` model with its tokenizer to ``out_dir``; returns the folder.

    ``overrides`` go to the config (e.g. ``hidden_size=256`` for K-quant friendly rows).
    """
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    if arch not in ARCHS:
        raise ValueError(f"unknown tiny arch {arch!r}; expected one of {', '.join(ARCHS)}")
    out_dir = Path(out_dir)
    tok = build_tokenizer(arch, out_dir)
    config = TINY[arch].config(tok, dict(overrides))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if config.tie_word_embeddings and "initializer_range" not in overrides:
        with torch.no_grad():  # a tied random model otherwise echoes its input token back
            model.get_input_embeddings().weight.mul_(TIED_EMBED_SCALE)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else config.eos_token_id,
    )
    model.save_pretrained(str(out_dir))
    if TINY[arch].finish is not None:
        TINY[arch].finish(out_dir, seed)
    return out_dir
