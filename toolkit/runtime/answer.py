"""What goes into a Runtime and what comes out: messages checked, answers with their numbers, the
Runtime's errors, and three small llama.cpp facts (BOS handling, GPU offload, how much of the KV cache a
prompt may reuse). No torch, no model."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from medkit.errors import MedkitError


class ContextOverflowError(MedkitError):
    """The newest message alone does not fit in the context window."""


class RuntimeClosedError(MedkitError):
    """The Runtime was closed: its model is freed and can answer nothing more."""


DEFAULT = object()  # Runtime.stream(constrain=DEFAULT): the Runtime's own constraint
RESERVED_ADAPTER_NAMES = ("base",)  # "base" is the model without adapter (serve's model name, the CLI's)


def check_adapter_name(name: Any, where: str) -> None:
    """An adapter's name must be non-empty text and not a reserved name (RuntimeLoadError otherwise)."""
    from medkit.errors import RuntimeLoadError

    if not isinstance(name, str) or not name.strip() or name.strip() in RESERVED_ADAPTER_NAMES:
        why = "is reserved for the model without adapter" if name in RESERVED_ADAPTER_NAMES else "is empty"
        raise RuntimeLoadError(f"adapter name {name!r} {why}", where=where)


def check_messages(messages: Any) -> list[dict[str, str]]:
    """``messages`` as a list of {role, content: text} dicts; a MedkitError naming the first bad item."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        got = type(messages).__name__
        raise MedkitError(f"messages must be a list of {{'role', 'content'}} dicts, not a {got}")
    if not messages:
        raise MedkitError("messages is empty: give at least one {'role': 'user', 'content': ...}")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise MedkitError(
                f"messages[{i}] must be a dict with 'role' and 'content', not {type(message).__name__}"
            )
        role, content = message.get("role"), message.get("content")
        if not isinstance(role, str) or not role:
            raise MedkitError(f"messages[{i}].role must be a non-empty string (got {role!r:.40})")
        if not isinstance(content, str):
            raise MedkitError(f"messages[{i}].content must be a string (got {type(content).__name__})")
        out.append(dict(message))
    return out


@dataclass
class AnswerStats:
    """Numbers for one answer. Times in seconds."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float = 0.0  # time to first token (includes prompt processing)
    tokens_per_s: float = 0.0  # generation speed after the first token
    elapsed_s: float = 0.0
    ctx_used: int = 0  # prompt + answer tokens in the context
    n_ctx: int = 0
    dropped_messages: int = 0  # oldest turns dropped to fit the context (system prompt kept)
    stop_reason: str = ""  # "eos" | "length" | "cancelled"
    adapter: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Answer:
    text: str
    stats: AnswerStats = field(default_factory=AnswerStats)


def default_gpu_layers() -> int:
    """-1 (offload every layer) when llama.cpp was built with a GPU backend (Metal, CUDA...), else 0."""
    import llama_cpp

    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


class EvalStarts:
    """Where the evaluation of each recent prompt began: how much of the KV cache a prompt may reuse.

    llama.cpp evaluates the uncached rest of a prompt as one batch, and its CPU kernels round a batch of one
    token differently from a longer one. Asked again (the same request, a regenerated answer), a prompt is all
    in the cache and only its last token would be evaluated, so greedy decoding could part from the first
    answer. A prompt seen before therefore starts where its first evaluation started, and temperature 0
    answers it the same; a new one reuses all it shares with the cache (its last token is always evaluated)."""

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self._starts: OrderedDict[tuple[int, ...], int] = OrderedDict()

    def clear(self) -> None:
        self._starts.clear()

    def start(self, cached: Sequence[int], ids: Sequence[int]) -> int:
        """How many cached tokens to keep before evaluating ``ids`` (the cache holds ``cached``)."""
        shared = 0
        for a, b in zip(cached, ids[:-1], strict=False):
            if a != b:
                break
            shared += 1
        key = tuple(ids)
        start = min(self._starts.get(key, shared), shared)  # less where the cache lost what it kept then
        self._starts[key] = start
        self._starts.move_to_end(key)
        while len(self._starts) > self.keep:
            self._starts.popitem(last=False)
        return start


def ensure_single_bos(ids: Sequence[int], bos_id: int, add_bos: bool) -> list[int]:
    """Collapse a leading run of BOS to one; prepend BOS when the vocab wants it and it is missing."""
    out = list(ids)
    if bos_id < 0:
        return out
    while len(out) > 1 and out[0] == bos_id and out[1] == bos_id:
        out.pop(0)
    if add_bos and (not out or out[0] != bos_id):
        out.insert(0, bos_id)
    return out


# Used only when a GGUF carries no tokenizer.chat_template (ChatML, the most common fallback).
FALLBACK_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def compile_template(source: str):
    """A chat template as a sandboxed jinja2 template (Hugging Face's environment settings)."""
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(
        loader=jinja2.BaseLoader(),
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols],
    )
    return env.from_string(source)
