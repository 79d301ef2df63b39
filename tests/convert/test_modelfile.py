"""Ollama Modelfile: family detection, content, and the Go template rendering what the HF template renders.

Ollama is not installed here, so a small evaluator of the Go text/template subset the templates use
(if / else if / else, range, := and =, eq / and / not, field access) renders them for the comparison.
"""

from __future__ import annotations

import re
import warnings

import pytest

from medkit.convert.modelfile import detect_family, render_modelfile, write_modelfile
from medkit.errors import ConvertError
from tests.factories import CHATML_TEMPLATE, DIALOGPT_TEMPLATE, INST_TEMPLATE, ZEPHYR_TEMPLATE

LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' + m['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
CASES = {  # family: (HF template, eos token, stop tokens)
    "chatml": (CHATML_TEMPLATE, "<|im_end|>", ["<|im_end|>", "<|endoftext|>"]),
    "zephyr": (ZEPHYR_TEMPLATE, "</s>", ["</s>"]),
    "mistral": (INST_TEMPLATE, "</s>", ["</s>"]),
    "llama-3": (LLAMA3_TEMPLATE, "<|eot_id|>", ["<|eot_id|>", "<|end_of_text|>"]),
    "dialogpt": (DIALOGPT_TEMPLATE, "<|endoftext|>", ["<|endoftext|>"]),
}
BOS = {"mistral": "<s>", "llama-3": "<|begin_of_text|>"}


# ---- a tiny Go text/template evaluator (the subset Ollama templates here use) --------------------

_ACTION = re.compile(r"{{(-?)\s*(.*?)\s*(-?)}}", re.S)


def _parse(src: str):
    pos, tokens = 0, []
    for m in _ACTION.finditer(src):
        text = src[pos : m.start()]
        if m.group(1):
            text = text.rstrip()
        if tokens and tokens[-1][0] == "trim_next":
            tokens.pop()
            text = text.lstrip()
        tokens.append(("text", text))
        tokens.append(("action", m.group(2)))
        if m.group(3):
            tokens.append(("trim_next", ""))
        pos = m.end()
    tail = src[pos:]
    if tokens and tokens[-1][0] == "trim_next":
        tokens.pop()
        tail = tail.lstrip()
    tokens.append(("text", tail))
    tree, rest = _block(tokens)
    assert not rest, f"unbalanced template near {rest[:2]}"
    return tree


def _block(tokens):
    out = []
    while tokens:
        kind, val = tokens[0]
        if kind == "text":
            out.append(("text", val))
            tokens = tokens[1:]
            continue
        word = val.split(" ", 1)[0]
        if word in ("end", "else"):
            return out, tokens
        tokens = tokens[1:]
        if word == "if":
            branches, default = [], []
            cond = val[3:]
            while True:
                body, tokens = _block(tokens)
                branches.append((cond, body))
                head = tokens[0][1]
                tokens = tokens[1:]
                if head.startswith("else if "):
                    cond = head[8:]
                    continue
                if head == "else":
                    default, tokens = _block(tokens)
                    tokens = tokens[1:]  # end
                break
            out.append(("if", branches, default))
        elif word == "range":
            body, tokens = _block(tokens)
            tokens = tokens[1:]
            out.append(("range", val[6:], body))
        else:
            out.append(("expr", val))
    return out, tokens


def _split_args(expr: str) -> list[str]:
    args, depth, cur, quote = [], 0, "", False
    for ch in expr:
        if ch == '"':
            quote = not quote
        if ch == " " and depth == 0 and not quote:
            if cur:
                args.append(cur)
            cur = ""
            continue
        depth += (ch == "(") - (ch == ")")
        cur += ch
    return args + ([cur] if cur else [])


def _eval(expr: str, dot, root, env):
    expr = expr.strip()
    m = re.fullmatch(r"(\$\w*) :?= (.+)", expr)
    if m:
        env[m.group(1)] = _eval(m.group(2), dot, root, env)
        return ""
    args = _split_args(expr)
    if len(args) > 1:
        fn, vals = args[0], [_eval(a, dot, root, env) for a in args[1:]]
        return {"eq": lambda: vals[0] == vals[1], "and": lambda: all(vals), "not": lambda: not vals[0]}[fn]()
    if expr.startswith("("):
        return _eval(expr[1:-1], dot, root, env)
    if expr.startswith('"'):
        return expr[1:-1]
    if expr in ("true", "false"):
        return expr == "true"
    if expr.startswith("$."):
        return root.get(expr[2:], "")
    if expr.startswith("$"):
        return env[expr]
    if expr.startswith("."):
        return dot.get(expr[1:], "")
    raise AssertionError(f"unsupported expression {expr!r}")


def _run(tree, dot, root, env) -> str:
    out = ""
    for node in tree:
        if node[0] == "text":
            out += node[1]
        elif node[0] == "expr":
            value = _eval(node[1], dot, root, env)
            out += "" if value is True or value is False else str(value)
        elif node[0] == "if":
            for cond, body in node[1]:
                if _eval(cond, dot, root, env):
                    out += _run(body, dot, root, env)
                    break
            else:
                out += _run(node[2], dot, root, env)
        else:
            for item in _eval(node[1], dot, root, env):
                out += _run(node[2], item, root, env)
    return out


def render_go(template: str, messages: list[dict], system: str = "") -> str:
    data = {"System": system, "Messages": [{"Role": m["role"], "Content": m["content"]} for m in messages]}
    return _run(_parse(template), data, data, {})


def render_hf(template: str, messages: list[dict], eos: str, bos: str = "<s>") -> str:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    return env.from_string(template).render(
        messages=messages, add_generation_prompt=True, bos_token=bos, eos_token=eos
    )


def go_template_of(modelfile: str) -> str:
    return re.search(r'TEMPLATE """(.*?)"""', modelfile, re.S).group(1)


# ---- tests -----------------------------------------------------------------------------------------

CONVERSATIONS = [
    [{"role": "user", "content": "What is a normal resting heart rate?"}],
    [
        {"role": "user", "content": "I have a cough."},
        {"role": "assistant", "content": "How long have you had it?"},
        {"role": "user", "content": "Three days, with a mild fever."},
    ],
]


@pytest.mark.parametrize("family", list(CASES))
def test_go_template_renders_like_the_hf_template(family):
    template, eos, stops = CASES[family]
    assert detect_family(template) == family
    text = render_modelfile("m.gguf", chat_template=template, stop_tokens=stops, params={})
    go = go_template_of(text)
    for system in ("", "You answer in plain language."):
        if family == "dialogpt" and system:
            continue  # DialoGPT has no system turn
        for conv in CONVERSATIONS:
            sys_msgs = [{"role": "system", "content": system}] if system else []
            want = render_hf(template, sys_msgs + conv, eos, bos=BOS.get(family, ""))
            want = want.removeprefix(BOS.get(family, ""))  # llama.cpp / Ollama add BOS themselves
            if family == "dialogpt":
                want += ""  # the next reply simply follows the last EOS
            assert render_go(go, conv, system) == want, family
            # Ollama may also list the system turn among the messages: it must not be written twice
            assert render_go(go, sys_msgs + conv, system) == want, family


@pytest.mark.parametrize("family", list(CASES))
def test_modelfile_lines(family, tmp_path):
    template, _, stops = CASES[family]
    gguf = tmp_path / "model-q4_0.gguf"
    gguf.write_bytes(b"GGUF")
    out = write_modelfile(
        gguf, tmp_path / "Modelfile", chat_template=template, stop_tokens=stops,
        params={"temperature": 0.7, "top_p": 0.9, "num_ctx": 2048}, system="Be brief.\nNo advice.",
    )  # fmt: skip
    text = out.read_text()
    lines = text.splitlines()
    assert "FROM ./model-q4_0.gguf" in lines and not any(line.startswith("ADAPTER") for line in lines)
    assert [line for line in lines if line.startswith("PARAMETER stop")] == [
        f'PARAMETER stop "{s}"' for s in stops
    ]
    assert {"PARAMETER temperature 0.7", "PARAMETER top_p 0.9", "PARAMETER num_ctx 2048"} <= set(lines)
    assert 'SYSTEM """Be brief.\nNo advice."""' in text
    assert text.count('TEMPLATE """') == 1 and "{{ .Content }}" in text


def test_adapter_modelfile_and_paths(tmp_path):
    base, adapter = tmp_path / "base-q4_0.gguf", tmp_path / "patient.gguf"
    out = write_modelfile(
        base, tmp_path / "Modelfile", chat_template=CHATML_TEMPLATE, stop_tokens=["<|im_end|>"], params={},
        adapter_path=adapter,
    )  # fmt: skip
    lines = out.read_text().splitlines()
    assert lines[1:3] == ["FROM ./base-q4_0.gguf", "ADAPTER ./patient.gguf"]
    shared = write_modelfile(  # several audience adapters share one base GGUF written elsewhere
        tmp_path / "_bases" / "base-q4_0.gguf", tmp_path / "patient" / "Modelfile", chat_template=CHATML_TEMPLATE,
        stop_tokens=["<|im_end|>"], adapter_path=tmp_path / "patient" / "adapter.gguf",
    )  # fmt: skip
    assert shared.read_text().splitlines()[1:3] == ["FROM ../_bases/base-q4_0.gguf", "ADAPTER ./adapter.gguf"]
    with pytest.raises(ConvertError, match="spaces"):
        write_modelfile(
            tmp_path / "my model.gguf", tmp_path / "Modelfile", chat_template=None, stop_tokens=[]
        )


def test_unknown_template_falls_back_with_a_warning_or_errors_when_strict():
    odd = "{% for m in messages %}### {{ m['role'] }}: {{ m['content'] }}\n{% endfor %}### assistant:"
    assert detect_family(odd) is None
    with pytest.warns(UserWarning, match="unknown family"):
        text = render_modelfile("m.gguf", chat_template=odd, stop_tokens=["</s>"])
    assert go_template_of(text) == "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}"
    with pytest.raises(ConvertError, match="known: chatml"):
        render_modelfile("m.gguf", chat_template=odd, stop_tokens=[], strict=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        render_modelfile("m.gguf", chat_template=CHATML_TEMPLATE, stop_tokens=[])  # no warning when known


def test_default_system_prompt_of_a_chatml_template_is_kept():
    template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
        "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )
    text = render_modelfile("m.gguf", chat_template=template, stop_tokens=["<|im_end|>"])
    assert 'SYSTEM "You are a helpful AI assistant named SmolLM, trained by Hugging Face"' in text
    assert 'SYSTEM "Mine"' in render_modelfile(
        "m.gguf", chat_template=template, stop_tokens=[], system="Mine"
    )
    go = go_template_of(text)
    conv = CONVERSATIONS[1]
    want = render_hf(template, conv, "<|im_end|>")
    assert render_go(go, conv, "You are a helpful AI assistant named SmolLM, trained by Hugging Face") == want


@pytest.mark.slow
def test_smollm2_real_template(smollm2_hf):
    import json

    cfg = json.loads((smollm2_hf / "tokenizer_config.json").read_text())
    template = cfg.get("chat_template") or (smollm2_hf / "chat_template.jinja").read_text()
    assert detect_family(template) == "chatml"
    text = render_modelfile(
        "smollm2.gguf", chat_template=template, stop_tokens=["<|im_end|>"], system="Be careful."
    )
    for conv in CONVERSATIONS:
        msgs = [{"role": "system", "content": "Be careful."}] + conv
        assert render_go(go_template_of(text), conv, "Be careful.") == render_hf(template, msgs, "<|im_end|>")
