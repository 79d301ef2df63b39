"""`medkit serve`'s worker: one llama-cpp-python call in a thread, its output handed to the event loop,
stopped within a token when its client goes away (grammar or not)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Generator
from typing import Any

import click

END = object()  # the worker thread's last item


class BadBias(ValueError):
    """logit_bias names a token the model does not have."""


class Job:
    """One llama-cpp-python call in a worker thread; its chunks (or answer) come back through an asyncio
    queue. Set ``cancelled`` to stop it within a token; ``on_done`` runs once the thread left the model."""

    def __init__(self, llm: Any, method: str, kwargs: dict[str, Any], on_done: Callable):
        from llama_cpp import LogitsProcessorList

        self.loop = asyncio.get_running_loop()
        self.queue: asyncio.Queue = asyncio.Queue()
        self.cancelled = threading.Event()
        self.tokens, self._on_done = 0, on_done
        self._bias = _bias_map(kwargs.pop("logit_bias", None), llm.n_vocab())
        processors = kwargs.get("logits_processor") or []
        kwargs["logits_processor"] = LogitsProcessorList([*processors, self._watch])
        self._model = _Stoppable(llm, self.cancelled, self._watch)
        call = getattr(self._model, method)
        self.thread = threading.Thread(target=self._run, args=(call, kwargs), daemon=True)

    def _watch(self, input_ids, scores):
        """Counts tokens and applies logit_bias (a cancelled job stops through its stopping criterion)."""
        self.tokens += 1
        for token, bias in self._bias.items():
            scores[token] += bias
        return scores

    def _soon(self, fn: Callable, *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone (shutdown): nobody is listening
            self.loop.call_soon_threadsafe(fn, *args)

    def _run(self, call: Callable[..., Any], kwargs: dict[str, Any]) -> None:
        try:
            result = call(**kwargs)
            if isinstance(result, Generator):
                try:
                    for chunk in result:
                        self._soon(self.queue.put_nowait, chunk)
                        if self.cancelled.is_set():
                            break
                finally:
                    result.close()
            else:
                self._soon(self.queue.put_nowait, result)
        except Exception as exc:  # reported to the client by the route
            self._soon(self.queue.put_nowait, exc)
        finally:
            self._model.release()
            gone = self.cancelled.is_set()  # before END: a finished stream is cancelled after it
            self._soon(self.queue.put_nowait, END)
            if gone:
                click.echo(f"medkit serve: client went away; stopped after {self.tokens} tokens", err=True)
            self._soon(self._on_done)


class _Stoppable:
    """The model as llama-cpp-python's chat handlers see it, with one difference: every completion also
    stops once ``cancelled`` is set, right after the token just sampled. Forcing end-of-sequence instead
    (through the logits) kills the process when a grammar forbids it there ("Unexpected empty grammar
    stack"): the stopping criterion ends any answer, grammar or not, within a token."""

    def __init__(self, llm: Any, cancelled: threading.Event, watch: Callable):
        self._llm, self._cancelled, self._watch = llm, cancelled, watch
        self._fast: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._llm, name)

    def create_completion(self, *args: Any, stopping_criteria=None, **kwargs: Any):
        from llama_cpp import StoppingCriteriaList

        def cancelled(input_ids, logits) -> bool:
            return self._cancelled.is_set()

        stops = StoppingCriteriaList([*(stopping_criteria or []), cancelled])
        if kwargs.get("grammar") is not None and _plain_sampling(kwargs):
            from medkit.runtime.sampling import GrammarFirst

            self._fast = GrammarFirst(
                self._llm,
                kwargs.pop("grammar")._grammar,
                top_k=kwargs.get("top_k", 40),
                top_p=kwargs.get("top_p", 0.95),
                min_p=kwargs.get("min_p", 0.05),
                temp=kwargs.get("temperature", 0.8),
                repeat_penalty=kwargs.get("repeat_penalty", 1.0),
                seed=kwargs["seed"] if kwargs.get("seed") is not None else 0xFFFFFFFF,  # None: a random seed
                logits_hook=lambda scores: self._watch(None, scores),  # logit_bias, the token count
            )
            self._llm.sample = self._fast.sample  # Llama.generate samples through it (sampling.py)
        return self._llm.create_completion(*args, stopping_criteria=stops, **kwargs)

    def release(self) -> None:
        """The model's own sampler again, once the worker left it."""
        if self._fast is not None:
            del self._llm.sample
            self._fast.close()
            self._fast = None

    def create_chat_completion(self, **kwargs: Any):
        from llama_cpp import Llama

        return Llama.create_chat_completion(self, **kwargs)  # its handler calls our create_completion


def _bias_map(logit_bias: dict | None, n_vocab: int) -> dict[int, float]:
    """Applied by Job._watch: llama-cpp-python drops its own logit_bias processor when a request also has
    a logits_processor (``LogitsProcessorList.extend`` returns None)."""
    try:
        bias = {int(k): float(v) for k, v in (logit_bias or {}).items()}
    except (TypeError, ValueError):
        bias = {-1: 0.0}
    if any(not 0 <= token < n_vocab for token in bias):
        raise BadBias(f"logit_bias: keys must be token ids below {n_vocab}")
    return bias


def _plain_sampling(kwargs: dict[str, Any]) -> bool:
    """Whether GrammarFirst's chain is this request's (no mirostat, typical-p, tfs, frequency/presence
    penalties, no other logits processor than Job._watch): else llama-cpp-python's chain checks the grammar."""
    return (
        not kwargs.get("mirostat_mode")
        and kwargs.get("typical_p", 1.0) == 1.0
        and kwargs.get("tfs_z", 1.0) == 1.0
        and not kwargs.get("frequency_penalty")
        and not kwargs.get("presence_penalty")
        and len(kwargs.get("logits_processor") or []) <= 1
    )
