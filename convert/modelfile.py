"""Ollama Modelfile next to an exported GGUF: FROM, TEMPLATE, stop tokens, parameters, SYSTEM, ADAPTER.

The HF chat template (Jinja) is not run; its family is recognised from the markers it writes and
re-expressed in Ollama's Go template syntax. Known families: chatml, gemma, llama-3, mistral, phi3, phi4-mini, zephyr, dialogpt,
each one row of TEMPLATE_FAMILIES (markers, Go template, default end-of-turn text). Template families
are a property of the tokenizer's chat template, not of the model family (TinyLlama is a llama with a
zephyr template, SmolLM2 a llama with chatml), so they live here rather than in medkit.convert.arch.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkit.errors import ConvertError
from medkit.formats.files import atomic_write_text


@dataclass(frozen=True)
class TemplateFamily:
    """A chat-template family: how to recognise its rendered text, its Ollama Go template, its default
    end-of-turn text (``{EOS}`` in the template when the tokenizer names none)."""

    name: str
    go_template: str
    markers: tuple[str, ...] = ()  # all in the rendered text (none: recognised by shape, see detect_family)
    absent: tuple[str, ...] = ()  # none in the rendered text
    default_eos: str = ""


# Go templates: the system prompt comes from .System, turns from .Messages (user/assistant);
# after the last user turn the assistant header is opened so the model writes the reply.
# Order matters: the first family whose markers match wins.
TEMPLATE_FAMILIES: tuple[TemplateFamily, ...] = (
    TemplateFamily(
        "llama-3",
        "{{ if .System }}<|start_header_id|>system<|end_header_id|>\n\n{{ .System }}<|eot_id|>{{ end }}"
        '{{ range .Messages }}{{ if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>\n\n'
        "{{ .Content }}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        '{{ else if eq .Role "assistant" }}{{ .Content }}<|eot_id|>{{ end }}{{ end }}',
        markers=("<|start_header_id|>", "<|eot_id|>"),
    ),
    # Gemma 3 / MedGemma: no system turn (the system prompt opens the first user turn), `model` replies.
    TemplateFamily(
        "gemma",
        '{{ $first := true }}{{ range .Messages }}{{ if eq .Role "user" }}<start_of_turn>user\n'
        "{{ if and $.System $first }}{{ $.System }}\n\n{{ end }}{{ $first = false }}"
        "{{ .Content }}<end_of_turn>\n<start_of_turn>model\n"
        '{{ else if eq .Role "assistant" }}{{ .Content }}<end_of_turn>\n{{ end }}{{ end }}',
        markers=("<start_of_turn>", "<end_of_turn>"),
    ),
    TemplateFamily(
        "chatml",
        "{{ if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}"
        '{{ range .Messages }}{{ if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
        "<|im_start|>assistant\n"
        '{{ else if eq .Role "assistant" }}{{ .Content }}<|im_end|>\n{{ end }}{{ end }}',
        markers=("<|im_start|>",),
    ),
    # Mistral has no system turn: the system prompt opens the first user instruction.
    TemplateFamily(
        "mistral",
        '{{ $first := true }}{{ range .Messages }}{{ if eq .Role "user" }}[INST] '
        "{{ if and $.System $first }}{{ $.System }}\n\n{{ end }}{{ $first = false }}"
        "{{ .Content }} [/INST]"
        '{{ else if eq .Role "assistant" }}{{ .Content }}{EOS}{{ end }}{{ end }}',
        markers=("[INST]",),
        default_eos="</s>",
    ),
    # Phi-3 / Phi-3.5: zephyr-like <|role|> headers on their own line, every turn closed by <|end|>.
    TemplateFamily(
        "phi3",
        "{{ if .System }}<|system|>\n{{ .System }}<|end|>\n{{ end }}"
        '{{ range .Messages }}{{ if eq .Role "user" }}<|user|>\n{{ .Content }}<|end|>\n<|assistant|>\n'
        '{{ else if eq .Role "assistant" }}{{ .Content }}<|end|>\n{{ end }}{{ end }}',
        markers=("<|user|>\nU1<|end|>", "<|assistant|>"),
    ),
    # Phi-4-mini: the same turns written without newlines.
    TemplateFamily(
        "phi4-mini",
        "{{ if .System }}<|system|>{{ .System }}<|end|>{{ end }}"
        '{{ range .Messages }}{{ if eq .Role "user" }}<|user|>{{ .Content }}<|end|><|assistant|>'
        '{{ else if eq .Role "assistant" }}{{ .Content }}<|end|>{{ end }}{{ end }}',
        markers=("<|user|>U1<|end|>", "<|assistant|>"),
    ),
    TemplateFamily(
        "zephyr",
        "{{ if .System }}<|system|>\n{{ .System }}{EOS}\n{{ end }}"
        '{{ range .Messages }}{{ if eq .Role "user" }}<|user|>\n{{ .Content }}{EOS}\n<|assistant|>\n'
        '{{ else if eq .Role "assistant" }}{{ .Content }}{EOS}\n{{ end }}{{ end }}',
        markers=("<|user|>", "<|assistant|>"),
        absent=("<|end|>",),
        default_eos="</s>",
    ),
    # DialoGPT: turns are plain texts, each closed by the end-of-text token.
    TemplateFamily(
        "dialogpt", "{{ range .Messages }}{{ .Content }}{EOS}{{ end }}", default_eos="<|endoftext|>"
    ),
)
FAMILIES = tuple(sorted(f.name for f in TEMPLATE_FAMILIES))  # for messages
_BY_NAME = {f.name: f for f in TEMPLATE_FAMILIES}
_RAW_TEMPLATE = "{{ if .System }}{{ .System }}\n\n{{ end }}{{ .Prompt }}"
_CONTENT = re.compile(r"message(\.content|\[['\"]content['\"]\])")


_PROBE = [
    {"role": "system", "content": "SYS"},
    {"role": "user", "content": "U1"},
    {"role": "assistant", "content": "A1"},
    {"role": "user", "content": "U2"},
]


def _render(chat_template: str) -> str | None:
    """The template rendered on a probe conversation (with and without a system turn), or None."""
    try:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)

        def raise_exception(message: str) -> None:
            raise ValueError(message)

        env.globals["raise_exception"] = raise_exception
        tmpl = env.from_string(chat_template)
    except Exception:  # jinja2 missing or a syntax error: fall back to the source text
        return None
    for messages in (_PROBE, _PROBE[1:]):
        try:
            return tmpl.render(
                messages=messages, add_generation_prompt=True, bos_token="<BOS>", eos_token="<EOS>"
            )
        except Exception:  # e.g. a template that refuses system turns
            continue
    return None


def _family_of(text: str) -> str | None:
    for fam in TEMPLATE_FAMILIES:
        if fam.markers and all(m in text for m in fam.markers) and not any(a in text for a in fam.absent):
            return fam.name
    return None


def detect_family(chat_template: str | None) -> str | None:
    """The known family a Jinja chat template belongs to (from what it renders), or None."""
    if not chat_template:
        return None
    rendered = _render(chat_template)
    if rendered is not None:
        family = _family_of(rendered)
        plain = rendered.replace("<BOS>", "")
        if family is None and plain in ("SYS<EOS>U1<EOS>A1<EOS>U2<EOS>", "U1<EOS>A1<EOS>U2<EOS>"):
            family = "dialogpt"
        return family
    family = _family_of(chat_template)
    if family is None and _CONTENT.search(chat_template) and "eos_token" in chat_template:
        family = "dialogpt" if "role" not in chat_template else None
    return family


def default_system(chat_template: str | None) -> str | None:
    """A default system prompt baked into a chatml template (SmolLM2 has one), else None."""
    if not chat_template or detect_family(chat_template) != "chatml":
        return None
    m = re.search(r"<\|im_start\|>system\\n(.+?)<\|im_end\|>", chat_template)
    return m.group(1) if m and "{" not in m.group(1) else None


def ollama_template(chat_template: str | None, *, eos_token: str | None = None, strict: bool = False) -> str:
    """The Go template for ``chat_template``; unknown families fall back to a raw prompt (with a warning)."""
    family = detect_family(chat_template)
    if family is None:
        what = "no chat template" if not chat_template else "chat template of an unknown family"
        if strict:
            raise ConvertError(f"cannot translate the {what} to Ollama (known: {', '.join(FAMILIES)})")
        warnings.warn(
            f"{what}: the Modelfile uses a raw prompt template (known families: {', '.join(FAMILIES)})",
            stacklevel=2,
        )
        return _RAW_TEMPLATE
    fam = _BY_NAME[family]
    return fam.go_template.replace("{EOS}", eos_token or fam.default_eos)


def _quote(value: str) -> str:
    """A Modelfile string argument: triple quotes when it spans lines or holds a double quote."""
    if "\n" in value or '"' in value:
        if '"""' in value:
            raise ConvertError('a Modelfile value cannot contain three double quotes (""")')
        return f'"""{value}"""'
    return f'"{value}"'


def _format_param(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return _quote(value)
    return str(value)


def render_modelfile(
    gguf_name: str,
    *,
    chat_template: str | None,
    stop_tokens: Iterable[str],
    params: Mapping[str, object] | None = None,
    system: str | None = None,
    adapter_name: str | None = None,
    eos_token: str | None = None,
    strict: bool = False,
) -> str:
    """The text of a Modelfile whose paths are relative to the folder it is written in."""
    stops = [s for s in dict.fromkeys(stop_tokens) if s]
    eos = eos_token or (stops[0] if stops else None)
    template = ollama_template(chat_template, eos_token=eos, strict=strict)
    if system is None:
        system = default_system(chat_template)
    lines = [
        "# Written by medkit. Build it with: ollama create <name> -f Modelfile",
        f"FROM {_dot(gguf_name)}",
    ]
    if adapter_name:
        lines.append(f"ADAPTER {_dot(adapter_name)}")
    lines.append(f'TEMPLATE """{template}"""')
    if system:
        lines.append(f"SYSTEM {_quote(system)}")
    for stop in stops:
        lines.append(f"PARAMETER stop {_quote(stop)}")
    for key, value in (params or {}).items():
        if value is not None:
            lines.append(f"PARAMETER {key} {_format_param(value)}")
    return "\n".join(lines) + "\n"


def _dot(ref: str) -> str:
    return ref if ref.startswith(("./", "../", "/")) else f"./{ref}"


def _relative(path: str | Path, modelfile: Path) -> str:
    rel = Path(os.path.relpath(Path(path).resolve(), modelfile.resolve().parent)).as_posix()
    if " " in rel or '"' in rel:
        raise ConvertError(f"Ollama cannot read a FROM/ADAPTER path with spaces or quotes: {rel}")
    return _dot(rel)


def write_modelfile(
    gguf_path: str | Path,
    out_path: str | Path,
    *,
    chat_template: str | None,
    stop_tokens: Iterable[str],
    params: Mapping[str, object] | None = None,
    system: str | None = None,
    adapter_path: str | Path | None = None,
    eos_token: str | None = None,
    strict: bool = False,
) -> Path:
    """Write an Ollama Modelfile for ``gguf_path`` (and an optional LoRA ``adapter_path``) at ``out_path``.

    ``params`` holds Ollama parameters such as temperature, top_p, num_ctx. Paths are written relative
    to the Modelfile's folder (``./model.gguf``, ``../_bases/base.gguf``), as Ollama resolves them there.
    """
    out = Path(out_path)
    text = render_modelfile(
        _relative(gguf_path, out),
        chat_template=chat_template,
        stop_tokens=stop_tokens,
        params=params,
        system=system,
        adapter_name=_relative(adapter_path, out) if adapter_path else None,
        eos_token=eos_token,
        strict=strict,
    )
    atomic_write_text(out, text)
    return out


def write_for_export(
    hf_dir: Path, out_dir: Path, gguf_path: Path, recipe: Path | None, log: Callable[[str], Any]
) -> None:
    """`medkit export`'s Modelfile: out_dir/Modelfile for ``gguf_path``, its template, stop tokens and
    context from the HF folder ``hf_dir``, a run's ``recipe`` (when there is one) giving the chat defaults."""
    import json

    from medkit.convert.gguf.vocab import chat_template, end_of_turn, load_vocab, token_text, tokenizer_config

    cfg = tokenizer_config(hf_dir)
    template = chat_template(hf_dir)
    config = json.loads((hf_dir / "config.json").read_text(encoding="utf-8"))
    vocab = load_vocab(hf_dir)
    eot = end_of_turn(template, vocab.tokens, vocab.types, cfg)
    eos = token_text(cfg.get("eos_token"))
    stops = list(dict.fromkeys(t for t in (vocab.tokens[eot] if eot is not None else None, eos) if t))
    n_ctx = int(config.get("max_position_embeddings") or config.get("n_positions") or 2048)
    params: dict[str, object] = {"num_ctx": min(n_ctx, 4096)}
    system = None
    if recipe is not None and recipe.is_file():  # the recipe's chat defaults
        from medkit.recipe import load_section

        exp = load_section(recipe, "export")
        params = {"temperature": exp.temperature, "top_p": exp.top_p, "num_ctx": min(exp.num_ctx, n_ctx)}
        system = load_section(recipe, "data").system_prompt or None
    path = write_modelfile(
        gguf_path,
        out_dir / "Modelfile",
        chat_template=template,
        stop_tokens=stops,
        params=params,
        system=system,
        eos_token=eos,
    )
    log(f"wrote {path}")
