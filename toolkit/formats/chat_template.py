"""Named chat templates for bases without one, and the end-of-turn token a template really uses.

`apply_template(tokenizer, recipe)` sets ``tokenizer.chat_template`` from ``recipe.model.chat_template``
('auto' keeps the tokenizer's own). `end_of_turn_token(tokenizer)` renders a probe conversation and
returns the token that closes the assistant turn: the token training must teach and the runtime stops on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkit.errors import DataError

if TYPE_CHECKING:  # the schema, for annotations only (no import cycle at run time)
    from medkit.recipe import Recipe

# Each template: system/user/assistant turns, `add_generation_prompt` opens the assistant turn, and the
# assistant turn is closed by one token. The generation prompt never ends with a space, so the prompt's
# token ids stay a prefix of the full conversation's ids.
TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for m in messages %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    # TinyLlama-1.1B-Chat / Zephyr: <|role|> headers, turns closed by the eos token.
    "zephyr": (
        "{% for m in messages %}"
        "{{ '<|' + m['role'] + '|>\\n' + m['content'] + eos_token + '\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    ),
    # Mistral-Instruct: [INST] ... [/INST] answer</s>; a system prompt goes into the first user turn.
    "mistral": (
        "{{ bos_token }}"
        "{% set ns = namespace(system='') %}"
        "{% for m in messages %}"
        "{% if m['role'] == 'system' %}{% set ns.system = m['content'] + '\\n\\n' %}"
        "{% elif m['role'] == 'user' %}{{ '[INST] ' + ns.system + m['content'] + ' [/INST]' }}"
        "{% set ns.system = '' %}"
        "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}"
        "{% endfor %}"
    ),
    "llama3": (
        "{{ bos_token }}"
        "{% for m in messages %}"
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "alpaca": (
        "{% for m in messages %}"
        "{% if m['role'] == 'system' %}{{ m['content'] + '\\n\\n' }}"
        "{% elif m['role'] == 'user' %}{{ '### Instruction:\\n' + m['content'] + '\\n\\n' }}"
        "{% else %}{{ '### Response:\\n' + m['content'] + eos_token + '\\n\\n' }}{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
    ),
    # DialoGPT: turns are plain text separated by the eos token (<|endoftext|>).
    "dialogpt": "{% for m in messages %}{{ m['content'] + eos_token }}{% endfor %}",
}

PROBE_USER = "Probe question 17?"
PROBE_ANSWER = "Probe answer 42."


def template_name(recipe: Recipe) -> str:
    """The recipe's template as a short name for messages ('auto', a named one, or the .jinja file)."""
    name = recipe.model.chat_template
    return Path(name).name if name.endswith(".jinja") else name


def apply_template(tokenizer: Any, recipe: Recipe) -> None:
    """Set ``tokenizer.chat_template`` per ``recipe.model.chat_template``; error if none would be set."""
    name = recipe.model.chat_template
    if name == "auto":
        if not getattr(tokenizer, "chat_template", None):
            raise DataError(
                f"the tokenizer of {recipe.model.base} has no chat template",
                where="model.chat_template",
                hint=f"set it to one of {', '.join(TEMPLATES)} or a .jinja file",
            )
        return
    if name in TEMPLATES:
        tokenizer.chat_template = TEMPLATES[name]
        return
    path = Path(name).expanduser()
    if path.suffix == ".jinja" and path.is_file():
        tokenizer.chat_template = path.read_text()
        return
    raise DataError(
        f"{name!r} is neither a named template ({', '.join(TEMPLATES)}) nor a .jinja file",
        where="model.chat_template",
    )


def has_system(messages: list[dict[str, str]]) -> bool:
    return bool(messages) and messages[0].get("role") == "system"


def fold_system(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """The system message folded into the first user turn ("system\n\nuser"), as Gemma 3's own template
    does: what training and the runtime both render when a template refuses a system role (Gemma 2)."""
    if not has_system(messages) or len(messages) < 2 or messages[1].get("role") != "user":
        return messages
    first = {**messages[1], "content": f"{messages[0]['content']}\n\n{messages[1]['content']}"}
    return [first, *messages[2:]]


def render(
    tokenizer: Any,
    messages: list[dict[str, str]],
    *,
    generation_prompt: bool,
    where: str = "",
    enable_thinking: bool = False,
) -> str:
    """Render ``messages`` to text through the active chat template; DataError if the template fails.

    ``enable_thinking`` is passed to templates that read it (Qwen3): off, the generation prompt holds the
    empty think block the template writes before a final answer, so the prompt stays masked and the
    trained span is the answer alone; the runtime renders its prompts the same way."""

    def apply(msgs: list[dict[str, str]]) -> Any:
        return tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=generation_prompt, enable_thinking=enable_thinking
        )

    try:
        try:
            text = apply(messages)
        except Exception:
            if not has_system(messages):
                raise
            text = apply(fold_system(messages))  # a template without a system role (Gemma 2)
    except Exception as exc:  # jinja errors, raise_exception() in templates, missing variables
        first = (str(exc).strip() or type(exc).__name__).splitlines()[0]
        raise DataError(
            f"the chat template cannot render these messages: {first}", where=where or None
        ) from None
    if not isinstance(text, str):  # a batch of one
        text = text[0]
    return text


def end_of_turn_token(tokenizer: Any) -> str:
    """The token that closes an assistant turn under the active template, checked to be one vocab id."""
    probe = [{"role": "user", "content": PROBE_USER}, {"role": "assistant", "content": PROBE_ANSWER}]
    text = render(tokenizer, probe, generation_prompt=False, where="chat template probe")
    at = text.rfind(PROBE_ANSWER)
    if at < 0:
        raise DataError("the chat template drops the assistant's message (probe answer not in the rendering)")
    suffix = text[at + len(PROBE_ANSWER) :].strip()
    if not suffix:
        raise DataError(
            "the chat template ends the assistant turn with nothing: the model would never learn to stop",
            hint=f"pick a template that closes turns with a token, e.g. {', '.join(TEMPLATES)}",
        )
    candidates = [suffix] + ([suffix.split()[0]] if suffix.split()[0] != suffix else [])
    for cand in candidates:
        if _single_id(tokenizer, cand) is not None:
            return cand
    eos = getattr(tokenizer, "eos_token", None)
    raise DataError(
        f"the chat template ends assistant turns with {suffix!r}, which is not one token of this tokenizer",
        hint=f"use a template that ends turns with its eos token {eos!r} (zephyr, mistral, alpaca, dialogpt)",
    )


def end_of_turn_id(tokenizer: Any) -> int:
    token = end_of_turn_token(tokenizer)
    token_id = _single_id(tokenizer, token)
    assert token_id is not None
    return token_id


def _single_id(tokenizer: Any, text: str) -> int | None:
    """The id of ``text`` when it is exactly one (non-unknown) token of the vocabulary, else None."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        return None
    unk = getattr(tokenizer, "unk_token_id", None)
    if ids[0] == unk and text != getattr(tokenizer, "unk_token", None):
        return None
    return int(ids[0])
