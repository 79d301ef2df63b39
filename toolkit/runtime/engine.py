"""`medkit.Runtime`: run a GGUF model offline with llama-cpp-python, with live LoRA adapter switching.

    from medkit import Runtime

    rt = Runtime("model.gguf", adapters={"patient": "patient.gguf"})
    for piece in rt.stream([{"role": "user", "content": "What is anaemia?"}]):
        print(piece, end="", flush=True)
    rt.use_adapter("patient")           # switch without reloading the base
    print(rt.chat([{"role": "user", "content": "And its causes?"}]).stats)

The chat template and the stop tokens come from the GGUF. The template is rendered with jinja2 and the
result tokenized here, so BOS is checked on token ids (present exactly once when the vocab wants one).
Nothing here imports torch or transformers.
"""

from __future__ import annotations

import codecs
import ctypes
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from medkit.errors import MedkitError, RuntimeLoadError
from medkit.formats.gguf_header import GGUFInfo, check_adapter_base, check_adapter_fits, read_gguf_info
from medkit.runtime.answer import (
    DEFAULT,
    FALLBACK_TEMPLATE,
    Answer,
    AnswerStats,
    ContextOverflowError,
    EvalStarts,
    RuntimeClosedError,
    check_adapter_name,
    check_messages,
    compile_template,
    default_gpu_layers,
    ensure_single_bos,
)
from medkit.runtime.constrain import check_spelling, parse_spec
from medkit.runtime.sampling import GrammarFirst
from medkit.runtime.structured import grammar_for

Message = Mapping[str, str]

__all__ = [
    "Answer",
    "AnswerStats",
    "ContextOverflowError",
    "GGUFInfo",
    "Runtime",
    "RuntimeClosedError",
    "default_gpu_layers",
    "ensure_single_bos",
    "read_gguf_info",
]


class Runtime:
    """A GGUF chat model on llama.cpp with named LoRA adapters that can be switched live."""

    def __init__(
        self,
        model: str | os.PathLike[str],
        adapters: Mapping[str, str | os.PathLike[str]] | None = None,
        gpu_layers: int | None = None,
        ctx: int = 4096,
        threads: int | None = None,
        system_prompt: str | None = None,
        *,
        seed: int = 0,
        verbose: bool = False,
        enable_thinking: bool = False,
        constrain: str | None = None,
    ):
        self._closed = True  # until llama.cpp has loaded the model
        self.info: GGUFInfo = read_gguf_info(model, what="model")
        import llama_cpp

        self.model_path = self.info.path
        self.system_prompt = system_prompt
        # Qwen3-style templates: off renders the empty think block before the answer, as training does
        self.enable_thinking = bool(enable_thinking)
        self.gpu_layers = default_gpu_layers() if gpu_layers is None else gpu_layers
        try:
            self.llm = llama_cpp.Llama(
                model_path=str(self.model_path),
                n_gpu_layers=self.gpu_layers,
                n_ctx=ctx,
                n_threads=threads,
                n_threads_batch=threads,  # same count for prompt processing (None: llama.cpp's default)
                seed=seed,
                verbose=verbose,
            )
        except (ValueError, RuntimeError) as exc:
            raise RuntimeLoadError(f"llama.cpp could not load the model ({exc})", where=str(model)) from exc
        self._lib = llama_cpp
        self._vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self._buf = ctypes.create_string_buffer(64)
        self._seed = seed
        self._lock = threading.RLock()
        self._cancel = threading.Event()
        self._adapters: dict[str, Any] = {}  # name -> llama_adapter_lora_p
        self._adapter_paths: dict[str, Path] = {}
        self.adapter: str | None = None
        self.adapter_scale = 1.0
        self.last_stats = AnswerStats(n_ctx=self.n_ctx)
        self._template = compile_template(self.info.chat_template or FALLBACK_TEMPLATE)
        self.bos_id = self.llm.token_bos()
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.bos_text = self._piece(self.bos_id)
        self.eos_text = self._piece(self.llm.token_eos())
        self._closed, self._spelled = False, False
        self._starts = EvalStarts()  # a prompt asked again is evaluated from where it was the first time
        self.constrain: str | None = None
        self.set_constrain(constrain)
        for name, path in (adapters or {}).items():
            self.add_adapter(name, path)

    # -- constraints -------------------------------------------------------------------------------
    def set_constrain(self, spec: str | None) -> None:
        """The default constraint of every answer ('icd10', 'icd10:J', 'icd10:<file>'; None: off),
        compiled (or read from the disk cache) and checked against this tokenizer now."""
        spec = parse_spec(spec)
        if spec is not None:
            self.grammar(spec, None, None)
        self.constrain = spec

    def grammar(self, spec: str | None, response_format: Any = None, grammar: str | None = None):
        """The grammar an answer is sampled with (constraint ``spec``, OpenAI ``response_format`` or a GBNF
        ``grammar``; see medkit.runtime.structured), parsed by llama.cpp; None: unconstrained. Raises
        ConstraintError (SchemaError naming the schema keyword) for what llama.cpp cannot enforce."""
        from llama_cpp import LlamaGrammar

        text = self._grammar_text(spec, response_format, grammar)
        return None if text is None else LlamaGrammar.from_string(text, verbose=False)

    def _grammar_text(self, spec: str | None, response_format: Any, grammar: str | None) -> str | None:
        if spec is not None and not self._spelled:  # each code character a token of its own
            ids = lambda ch: self.llm.tokenize(ch.encode(), add_bos=False, special=False)  # noqa: E731
            pieces = lambda: (self._piece_bytes(i).decode("latin-1") for i in range(self.llm.n_vocab()))  # noqa: E731
            check_spelling(
                lambda ch: [self.llm.detokenize([i]).decode() for i in ids(ch)], str(self.model_path), pieces
            )
            self._spelled = True
        return grammar_for(self._vocab, response_format=response_format, grammar=grammar, constrain_spec=spec)

    # -- model facts -------------------------------------------------------------------------------
    @property
    def n_ctx(self) -> int:
        return self.llm.n_ctx()

    @property
    def model_name(self) -> str:
        return self.info.name or self.model_path.stem

    @property
    def adapters(self) -> list[str]:
        return list(self._adapters)

    def _piece_bytes(self, token: int) -> bytes:
        n = self._lib.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, False)
        if n < 0:  # a longer piece than the buffer: grow it once
            self._buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, self._buf, len(self._buf), 0, False)
        return self._buf.raw[:n]

    def _piece(self, token: int) -> str:
        if token < 0:
            return ""
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    # -- adapters ----------------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeClosedError("this Runtime is closed", hint="open a new Runtime to chat again")

    def add_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Load a GGUF LoRA adapter under ``name`` (checked against the base first)."""
        check_adapter_name(name, where=str(path))
        self._check_open()
        info = read_gguf_info(path, what="adapter")
        check_adapter_fits(self.info, info)
        check_adapter_base(self.info, info)
        with self._lock:
            self._check_open()
            ptr = self._lib.llama_adapter_lora_init(self.llm.model, str(info.path).encode())
            if not ptr:
                raise RuntimeLoadError("llama.cpp refused the LoRA adapter", where=str(path))
            old = self._adapters.pop(name, None)
            if old is not None:
                if self.adapter == name:
                    self.use_adapter(None)
                self._lib.llama_adapter_lora_free(old)
            self._adapters[name] = ptr
            self._adapter_paths[name] = info.path

    def use_adapter(self, name: str | None, scale: float = 1.0) -> None:
        """Switch to adapter ``name`` (None: the plain base) and reset the KV cache."""
        if name is not None and name not in self._adapters:
            known = ", ".join(self._adapters) or "none loaded"
            raise RuntimeLoadError(f"unknown adapter '{name}' (adapters: {known})")
        with self._lock:
            self._check_open()
            if name is None:
                self._lib.llama_set_adapters_lora(self.llm.ctx, None, 0, None)
            else:
                arr = (self._lib.llama_adapter_lora_p_ctypes * 1)(self._adapters[name])
                scales = (ctypes.c_float * 1)(scale)
                if self._lib.llama_set_adapters_lora(self.llm.ctx, arr, 1, scales) != 0:
                    raise RuntimeLoadError(f"llama.cpp could not apply adapter '{name}'")
            self.adapter, self.adapter_scale = name, scale
            self.reset()

    def reset(self) -> None:
        """Forget the cached context (KV cache): the next answer recomputes its whole prompt."""
        with self._lock:
            self._check_open()
            self.llm.reset()
            self._starts.clear()
            mem = self._lib.llama_get_memory(self.llm.ctx)
            if mem is not None:
                self._lib.llama_memory_clear(mem, True)

    # -- prompt ------------------------------------------------------------------------------------
    def render(self, messages: Sequence[Message], add_generation_prompt: bool = True) -> str:
        """The chat template applied to ``messages`` (text, BOS as the template writes it)."""

        from medkit.formats.chat_template import fold_system, has_system

        def raise_exception(msg: str) -> None:
            raise MedkitError(f"chat template: {msg}")

        def apply(msgs: list[dict[str, str]]) -> str:
            return self._template.render(
                messages=msgs,
                bos_token=self.bos_text,
                eos_token=self.eos_text,
                add_generation_prompt=add_generation_prompt,
                enable_thinking=self.enable_thinking,
                raise_exception=raise_exception,
                strftime_now=lambda f: time.strftime(f),
            )

        msgs = [dict(m) for m in messages]
        try:
            return apply(msgs)
        except MedkitError:
            if not has_system(msgs):
                raise
            return apply(fold_system(msgs))  # no system role (Gemma 2): as training rendered it

    def tokenize(self, text: str) -> list[int]:
        self._check_open()
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def truncate(self, text: str, max_tokens: int) -> tuple[str, bool]:
        """``text`` cut to at most ``max_tokens`` tokens; the flag says whether it was cut."""
        ids = self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        if len(ids) <= max_tokens:
            return text, False
        cut = self.llm.detokenize(ids[: max(0, max_tokens)]).decode("utf-8", errors="ignore")
        return cut, True

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        """Token ids of the rendered conversation, ready for generation."""
        return ensure_single_bos(self.tokenize(self.render(messages)), self.bos_id, self.add_bos)

    def fit(self, messages: Sequence[Message], max_tokens: int) -> tuple[list[int], int]:
        """Prompt ids that leave room for an answer, dropping the oldest turns (system kept)."""
        msgs = check_messages(messages)
        if self.system_prompt and not (msgs and msgs[0].get("role") == "system"):
            msgs.insert(0, {"role": "system", "content": self.system_prompt})
        head = msgs[:1] if msgs and msgs[0]["role"] == "system" else []
        rest = msgs[len(head) :]
        room = min(max_tokens, self.n_ctx // 4)
        dropped = 0
        while True:
            ids = self.prompt_ids(head + rest)
            if len(ids) + room <= self.n_ctx:
                return ids, dropped
            if len(rest) <= 1:
                raise ContextOverflowError(
                    f"the message needs {len(ids)} tokens, the context holds {self.n_ctx} "
                    f"(with {room} kept for the answer)",
                    hint="shorten it or raise --ctx",
                )
            n = 2 if rest[0]["role"] == "user" and len(rest) > 2 and rest[1]["role"] == "assistant" else 1
            rest, dropped = rest[n:], dropped + n

    # -- generation --------------------------------------------------------------------------------
    def cancel(self) -> None:
        """Stop the running generation (thread-safe); the text so far is kept."""
        self._cancel.set()

    def stream(
        self,
        messages: Sequence[Message],
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_tokens: int = 512,
        seed: int | None = None,
        *,
        top_k: int = 40,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        constrain: str | None | object = DEFAULT,
        response_format: Mapping[str, Any] | None = None,
        grammar: str | None = None,
    ) -> Iterator[str]:
        """Yield the answer as text pieces; ``last_stats`` holds the numbers once it ends. ``constrain``:
        this answer's constraint (None: off); ``response_format``: OpenAI's; ``grammar``: GBNF text."""
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise MedkitError(f"max_tokens must be a whole number of at least 1 (got {max_tokens!r})")
        with self._lock:
            self._check_open()
            spec = self.constrain if constrain is DEFAULT else parse_spec(constrain)  # type: ignore[arg-type]
            text = self._grammar_text(spec, response_format, grammar)
            ids, dropped = self.fit(messages, max_tokens)
            budget = min(max_tokens, self.n_ctx - len(ids))
            stats = AnswerStats(
                prompt_tokens=len(ids), n_ctx=self.n_ctx, dropped_messages=dropped, adapter=self.adapter
            )
            self.last_stats = stats
            self._cancel.clear()
            self.llm.set_seed(seed := self._seed if seed is None else seed)
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            is_eog = self._lib.llama_vocab_is_eog
            sampling: dict[str, Any] = {"top_k": top_k, "top_p": top_p, "min_p": min_p, "temp": temperature}
            sampling["repeat_penalty"] = repeat_penalty
            fast = None if text is None else GrammarFirst(self.llm, text, seed=seed, **sampling)
            if fast is not None:  # the grammar judges the sampled token first (medkit.runtime.sampling)
                self.llm.sample = fast.sample  # type: ignore[method-assign]
            t0 = t_first = time.perf_counter()
            n, started = 0, False
            self.llm.n_tokens = self._starts.start(self.llm.input_ids[: self.llm.n_tokens], ids)
            gen = self.llm.generate(ids, **sampling)
            try:
                for token in gen:
                    if n == 0:
                        t_first = time.perf_counter()
                        stats.ttft_s = t_first - t0
                    if self._cancel.is_set():
                        stats.stop_reason = "cancelled"
                        break
                    if is_eog(self._vocab, token):
                        stats.stop_reason = "eos"
                        break
                    n += 1
                    text = decoder.decode(self._piece_bytes(token))
                    if not started:
                        text = text.lstrip()
                        started = bool(text)
                    if text:
                        yield text
                    if n >= budget:
                        stats.stop_reason = "length"
                        break
                    if self._cancel.is_set():
                        stats.stop_reason = "cancelled"
                        break
                tail = decoder.decode(b"", final=True)
                if tail and started:
                    yield tail
            finally:
                gen.close()
                if fast is not None:
                    del self.llm.sample  # llama-cpp-python's own sampler again
                    fast.close()
                t_end = time.perf_counter()
                stats.completion_tokens = n
                stats.elapsed_s = t_end - t0
                stats.tokens_per_s = (n - 1) / (t_end - t_first) if n > 1 and t_end > t_first else 0.0
                stats.ctx_used = len(ids) + n
                stats.stop_reason = stats.stop_reason or "cancelled"

    def chat(self, messages: Sequence[Message], **params: Any) -> Answer:
        """The whole answer and its stats (same parameters as :meth:`stream`)."""
        text = "".join(self.stream(messages, **params))
        return Answer(text=text, stats=self.last_stats)

    # -- lifetime ----------------------------------------------------------------------------------
    def close(self) -> None:
        """Free the model and its adapters; later calls raise RuntimeClosedError (closing twice is fine)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for ptr in self._adapters.values():
                self._lib.llama_set_adapters_lora(self.llm.ctx, None, 0, None)
                self._lib.llama_adapter_lora_free(ptr)
            self._adapters.clear()
            self.llm.close()

    def __enter__(self) -> Runtime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
