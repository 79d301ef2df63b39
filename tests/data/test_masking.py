"""Exact label masking, end-of-turn and BOS handling for every template family, and truncation."""

from __future__ import annotations

import pytest

from medkit.data.tokens import IGNORE, prepare
from medkit.errors import DataError
from medkit.formats.chat_template import TEMPLATES, end_of_turn_token
from tests.data.helpers import assert_exact_masking, make_recipe, qa_rows, trained_ids, write_jsonl

# (tokenizer family, recipe chat_template, expected end-of-turn token)
CASES = [
    ("llama", "auto", "</s>"),  # SentencePiece + the tokenizer's own zephyr template
    ("mistral", "auto", "</s>"),  # SentencePiece + [INST] template with {{ bos_token }} in the text
    ("qwen2", "auto", "<|im_end|>"),  # byte BPE + ChatML
    ("gpt2", "auto", "<|endoftext|>"),  # byte BPE + DialoGPT eos-separated turns
    ("llama", "zephyr", "</s>"),
    ("llama", "mistral", "</s>"),
    ("llama", "alpaca", "</s>"),
    ("mistral", "dialogpt", "</s>"),
    ("qwen2", "chatml", "<|im_end|>"),
    ("qwen2", "zephyr", "<|im_end|>"),
    ("gpt2", "dialogpt", "<|endoftext|>"),
    ("gpt2", "alpaca", "<|endoftext|>"),
    ("gpt2", "mistral", "<|endoftext|>"),
    ("qwen3", "auto", "<|im_end|>"),  # Qwen3's template: the empty think block is part of the prompt
    ("gemma3", "auto", "<end_of_turn>"),  # Gemma 3: system folded into the first user turn, one BOS
    ("gemma4", "auto", "<turn|>"),  # Gemma 4: answer after the generation prompt's empty thought channel
    ("phi3", "auto", "<|end|>"),  # Phi-3.5: <|role|> headers, <|end|> closes turns, then eos; no BOS added
]


@pytest.fixture()
def qa_file(tmp_path):
    return write_jsonl(tmp_path / "qa.jsonl", qa_rows(20))


@pytest.mark.parametrize(("kind", "template", "eot"), CASES, ids=[f"{k}-{t}" for k, t, _ in CASES])
def test_masking_is_exact(kind, template, eot, load_tok, qa_file):
    tok = load_tok(kind)
    recipe = make_recipe(
        qa_file, model={"chat_template": template}, data={"system_prompt": "Answer briefly and kindly."}
    )
    prepared = prepare(recipe, tok)
    assert prepared.eot_token == eot == end_of_turn_token(tok)
    assert prepared.eot_token_id == tok.convert_tokens_to_ids(eot)
    assert assert_exact_masking(prepared, tok) == 20
    if template != "auto":
        assert tok.chat_template == TEMPLATES[template]
    # BOS: SentencePiece tokenizers start every example with exactly one BOS, whether the template
    # writes it (mistral) or the tokenizer adds it (zephyr, alpaca, dialogpt)
    if kind in ("llama", "mistral", "gemma3"):
        for ex in prepared.train:
            assert ex.input_ids[0] == tok.bos_token_id and ex.input_ids[1] != tok.bos_token_id
            assert ex.labels[0] == IGNORE
    # the prompt rendered for generation is exactly the masked part
    conv = prepared.rows["train"][0]
    prompt = tok.apply_chat_template(
        conv.messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )
    n_masked = sum(1 for lab in prepared.train[0].labels if lab == IGNORE)
    assert tok.decode(prepared.train[0].input_ids[:n_masked], skip_special_tokens=False).strip() in (
        prompt.strip(),
        (tok.bos_token or "") + prompt.strip(),
        ((tok.bos_token or "") + " " + prompt).strip(),
    )


def test_llama3_template_with_its_special_tokens(load_tok, qa_file):
    tok = load_tok("qwen2")
    tok.add_special_tokens(
        {"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
    )
    prepared = prepare(make_recipe(qa_file, model={"chat_template": "llama3"}), tok)
    assert prepared.eot_token == "<|eot_id|>"
    assert assert_exact_masking(prepared, tok) == 20


def test_train_on_prompt_trains_everything_but_bos(load_tok, qa_file):
    tok = load_tok("llama")
    prepared = prepare(make_recipe(qa_file, data={"train_on_prompt": True}), tok)
    for ex in prepared.train:
        assert ex.labels[0] == IGNORE and ex.labels[1:] == ex.input_ids[1:]
    assert prepared.stats.trained_share > 0.95


def test_trained_share_and_lengths_are_counted(load_tok, qa_file):
    tok = load_tok("qwen2")
    prepared = prepare(make_recipe(qa_file), tok)
    s = prepared.stats
    total = sum(len(e.input_ids) for sp in ("train", "val", "test") for e in prepared.split(sp))
    trained = sum(len(trained_ids(e)) for sp in ("train", "val", "test") for e in prepared.split(sp))
    assert (s.total_tokens, s.trained_tokens) == (total, trained)
    assert 0 < s.trained_share < 1
    pct = s.percentiles()
    assert (
        pct["min"]
        <= pct["p50"]
        <= pct["p90"]
        <= pct["max"]
        == max(len(e.input_ids) for e in prepared.train + prepared.val + prepared.test)
    )


def _long_answer_rows():
    rows = qa_rows(10)
    for r in rows[:3]:
        r["answer"] = r["answer"] + " " + " ".join(["The patient should rest and drink fluids."] * 12)
    return rows


def test_truncation_drop_counts_and_drops(load_tok, tmp_path):
    tok = load_tok("qwen2")
    src = write_jsonl(tmp_path / "long.jsonl", _long_answer_rows())
    full = prepare(make_recipe(src), tok)
    limit = 100
    n_long = sum(len(e.input_ids) > limit for sp in ("train", "val", "test") for e in full.split(sp))
    assert n_long == 3
    prepared = prepare(make_recipe(src, data={"max_seq_len": limit, "truncation": "drop"}), tok)
    assert prepared.stats.truncated == 3
    assert prepared.stats.rows.dropped["answer cut by max_seq_len (dropped)"] == 3
    assert sum(prepared.stats.examples.values()) == 7
    assert assert_exact_masking(prepared, tok) == 7


def test_truncation_keep_keeps_the_cut_answer(load_tok, tmp_path):
    tok = load_tok("qwen2")
    src = write_jsonl(tmp_path / "long.jsonl", _long_answer_rows())
    prepared = prepare(make_recipe(src, data={"max_seq_len": 100, "truncation": "keep"}), tok)
    assert prepared.stats.truncated == 3
    assert sum(prepared.stats.examples.values()) == 10
    cut = [e for sp in ("train", "val", "test") for e in prepared.split(sp) if len(e.input_ids) == 100]
    assert len(cut) == 3
    for e in cut:  # cut answers keep their trained part but have lost the end-of-turn token
        assert trained_ids(e) and trained_ids(e)[-1] != prepared.eot_token_id


def test_prompt_longer_than_budget_is_dropped_even_with_keep(load_tok, tmp_path):
    tok = load_tok("qwen2")
    rows = qa_rows(10)
    rows[0]["question"] = " ".join(["Describe the history of this chronic cough in detail."] * 20)
    src = write_jsonl(tmp_path / "p.jsonl", rows)
    prepared = prepare(make_recipe(src, data={"max_seq_len": 64, "truncation": "keep"}), tok)
    assert prepared.stats.rows.dropped["prompt alone exceeds max_seq_len"] == 1
    assert sum(prepared.stats.examples.values()) == 9


def test_answer_holding_the_end_of_turn_text_is_dropped(load_tok, tmp_path):
    tok = load_tok("qwen2")
    rows = qa_rows(10)
    rows[2]["answer"] = "Rest.<|im_end|> Then drink water."
    src = write_jsonl(tmp_path / "eot.jsonl", rows)
    prepared = prepare(make_recipe(src), tok)
    reason = "answer contains the end-of-turn token <|im_end|>"
    assert prepared.stats.rows.dropped[reason] == 1
    assert assert_exact_masking(prepared, tok) == 9


def test_fingerprint_is_stable_and_tracks_the_data(load_tok, qa_file, tmp_path):
    tok = load_tok("gpt2")
    a = prepare(make_recipe(qa_file), tok).fingerprint
    b = prepare(make_recipe(qa_file), tok).fingerprint
    c = prepare(make_recipe(qa_file, data={"seed": 7}), tok).fingerprint
    assert a == b and a != c and len(a) == 64


def test_no_examples_fit_is_an_error(load_tok, qa_file):
    tok = load_tok("qwen2")
    with pytest.raises(DataError, match="max_seq_len"):
        prepare(make_recipe(qa_file, data={"max_seq_len": 16}), tok)


def test_plain_text_documents_train_on_every_token_and_end_with_eos(load_tok, tmp_path):
    tok = load_tok("llama")
    (tmp_path / "notes.txt").write_text(
        "".join(f"Clinical note {i}: the patient is stable.\n" for i in range(10))
    )
    prepared = prepare(make_recipe(tmp_path / "notes.txt"), tok)
    assert prepared.stats.rows.layout == "text" and prepared.eot_token == tok.eos_token
    for ex, conv in zip(prepared.train, prepared.rows["train"], strict=True):
        assert ex.input_ids[0] == tok.bos_token_id and ex.labels[0] == IGNORE
        assert ex.labels[1:] == ex.input_ids[1:] and ex.input_ids[-1] == tok.eos_token_id
        assert tok.decode(ex.input_ids[1:-1]).strip() == conv.answer and conv.messages == []


def test_template_putting_the_system_prompt_on_the_last_user_turn_is_refused(load_tok, qa_file):
    """Such a template renders the system prompt in the generation prompt but not in the full
    conversation, so the answer cannot be isolated: a clear error, not silently wrong labels."""
    tok = load_tok("mistral")
    tok.chat_template = (
        "{% set sys = messages[0]['content'] if messages[0]['role'] == 'system' else none %}"
        "{{ bos_token }}{% for m in messages if m['role'] != 'system' %}"
        "{% if m['role'] == 'user' %}{{ '[INST] ' + (sys + '\\n\\n' if sys and loop.last else '') + m['content'] + '[/INST]' }}"
        "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}{% endfor %}"
    )
    with pytest.raises(DataError, match="not a prefix of the full conversation"):
        prepare(make_recipe(qa_file, data={"system_prompt": "Be brief."}), tok)
    assert assert_exact_masking(prepare(make_recipe(qa_file), tok), tok) == 20  # fine without one


@pytest.mark.parametrize("thinking", [False, True])
def test_enable_thinking_recipe_key_decides_what_qwen3_trains_on(thinking, load_tok, qa_file):
    """model.enable_thinking = false (the default): the empty think block Qwen3's template writes is part
    of the masked prompt and the trained span is the answer alone. true: the generation prompt opens
    the assistant turn only, so the think block the template writes is trained (the model learns to think)."""
    tok = load_tok("qwen3")
    model = {"enable_thinking": True} if thinking else {}
    prepared = prepare(make_recipe(qa_file, model=model), tok)
    assert prepared.eot_token == "<|im_end|>"
    for ex, conv in zip(prepared.train, prepared.rows["train"], strict=True):
        n = len(trained_ids(ex))
        prompt = tok.decode(ex.input_ids[:-n], skip_special_tokens=False)
        trained = tok.decode(trained_ids(ex)[:-1], skip_special_tokens=False)
        if thinking:
            assert prompt.endswith("<|im_start|>assistant\n") and "<think>" not in prompt
            assert trained.startswith("<think>") and trained.endswith(conv.answer)
        else:
            assert prompt.endswith("<think>\n\n</think>\n\n") and trained.strip() == conv.answer


@pytest.mark.parametrize("thinking", [False, True])
def test_eval_prompt_is_the_training_prompt_in_both_thinking_modes(thinking, load_tok, qa_file):
    """medkit eval renders each held-out prompt with the recipe's model.enable_thinking, so the ids it
    generates from are exactly the masked prompt training saw (with thinking on, no empty think block)."""
    from medkit.eval.score import _prompt_ids

    tok = load_tok("qwen3")
    prepared = prepare(make_recipe(qa_file, model={"enable_thinking": True} if thinking else {}), tok)
    for ex, conv in zip(prepared.train[:5], prepared.rows["train"][:5], strict=True):
        n = len(trained_ids(ex))
        assert _prompt_ids(tok, conv.messages, thinking) == list(ex.input_ids[:-n])
        assert _prompt_ids(tok, conv.messages, not thinking) != list(ex.input_ids[:-n])
