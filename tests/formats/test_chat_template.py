"""Named templates, apply_template and the end-of-turn probe."""

from __future__ import annotations

import pytest

from medkit.errors import DataError
from medkit.formats.chat_template import TEMPLATES, apply_template, end_of_turn_id, end_of_turn_token
from tests.data.helpers import make_recipe


def test_the_named_templates_are_the_documented_ones():
    assert set(TEMPLATES) == {"chatml", "zephyr", "mistral", "llama3", "alpaca", "dialogpt"}


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_generation_prompt_is_a_prefix_and_never_ends_with_a_space(name, load_tok):
    tok = load_tok("qwen2")
    tok.add_special_tokens(
        {"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
    )
    tok.chat_template = TEMPLATES[name]
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is gout?"}]
    prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": "Crystals."}], tokenize=False)
    assert full.startswith(prompt) and not prompt.endswith(" ")
    assert "Be brief." in prompt  # the system prompt is rendered, not dropped
    assert end_of_turn_token(tok) in full[len(prompt) :]


def test_apply_template_sets_named_and_keeps_auto(load_tok):
    tok = load_tok("llama")
    own = tok.chat_template
    apply_template(tok, make_recipe("some/hub-dataset"))
    assert tok.chat_template == own
    apply_template(tok, make_recipe("some/hub-dataset", model={"chat_template": "alpaca"}))
    assert tok.chat_template == TEMPLATES["alpaca"]


def test_apply_template_from_a_jinja_file(load_tok, tmp_path):
    path = tmp_path / "mine.jinja"
    path.write_text(
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '<|endoftext|>' }}{% endfor %}"
    )
    tok = load_tok("qwen2")
    apply_template(tok, make_recipe("some/hub-dataset", model={"chat_template": str(path)}))
    assert end_of_turn_token(tok) == "<|endoftext|>"  # found by rendering, not assumed to be eos
    assert tok.eos_token == "<|im_end|>"


def test_auto_without_a_template_names_the_named_ones(load_tok):
    tok = load_tok("gpt2")
    tok.chat_template = None
    with pytest.raises(DataError) as err:
        apply_template(tok, make_recipe("some/hub-dataset"))
    msg = err.value.one_line()
    assert "model.chat_template" in msg and "no chat template" in msg
    assert all(name in msg for name in TEMPLATES)


def test_end_of_turn_must_be_one_token(load_tok):
    tok = load_tok("llama")
    tok.chat_template = TEMPLATES["chatml"]  # <|im_end|> is not in a Llama-2 style vocabulary
    with pytest.raises(DataError, match=r"'<\|im_end\|>'.*not one token"):
        end_of_turn_token(tok)


def test_template_that_never_closes_the_turn_is_refused(load_tok):
    tok = load_tok("qwen2")
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    with pytest.raises(DataError, match="never learn to stop"):
        end_of_turn_token(tok)


def test_template_that_cannot_render_is_one_line(load_tok):
    tok = load_tok("qwen2")
    tok.chat_template = "{{ raise_exception('system role not supported') }}"
    with pytest.raises(DataError, match="cannot render these messages: system role not supported"):
        end_of_turn_token(tok)


def test_end_of_turn_id_matches_vocab(load_tok):
    tok = load_tok("mistral")
    assert end_of_turn_id(tok) == tok.eos_token_id
