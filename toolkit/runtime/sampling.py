"""Grammar-constrained sampling that checks one token first, as llama.cpp's own common sampler does.

llama-cpp-python puts the grammar inside the sampler chain, so every token costs a grammar check of the
whole vocabulary (49k pieces for SmolLM2, against every alternative the grammar has open: 26 at the start
of an ICD-10 code). Here the chain samples first, without the grammar; the grammar then judges that one
token. Only when it refuses is the token sampled again from what the grammar allows, checking the
pieces best logit first, 512 at a time, until the chain has what it keeps (one for greedy, top-k). Greedy decoding picks exactly what a full check would pick (the best token, if allowed,
is the best allowed token); sampling keeps the constrained distribution, as llama.cpp's
``common_sampler_sample`` does (top-k/top-p/min-p cut before the grammar on the first try).

`Runtime.stream` installs ``GrammarFirst.sample`` as its Llama's sampler for one answer
(``Llama.generate`` calls ``self.sample``), so llama-cpp-python's prompt cache and evaluation stay as they are.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np

CHUNK = 512  # pieces checked at a time on a refused step, best logits first


class GrammarFirst:
    """One answer's sampler: the plain chain (penalties, top-k, top-p, min-p, temperature, dist/greedy)
    and the grammar, kept in step. ``full_checks`` of ``sampled`` tokens were refused at first."""

    def __init__(self, llm: Any, grammar: str, *, top_k: int, top_p: float, min_p: float, temp: float,
                 repeat_penalty: float, seed: int, logits_hook: Any = None):  # fmt: skip
        import llama_cpp

        self._lib, self._llm = llama_cpp, llm
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
        self.grammar = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode("utf-8"), b"root")
        if not self.grammar:
            raise ValueError("llama.cpp cannot parse the grammar")  # callers parse it first (structured)
        self.chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = lambda s: llama_cpp.llama_sampler_chain_add(self.chain, s)  # noqa: E731
        if repeat_penalty != 1.0:
            add(llama_cpp.llama_sampler_init_penalties(self.n_vocab, 64, repeat_penalty, 0.0, 0.0))
        if temp <= 0.0:
            add(llama_cpp.llama_sampler_init_greedy())
        else:
            add(llama_cpp.llama_sampler_init_top_k(top_k))
            add(llama_cpp.llama_sampler_init_top_p(top_p, 1))
            add(llama_cpp.llama_sampler_init_min_p(min_p, 1))
            add(llama_cpp.llama_sampler_init_temp(temp))
            add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        dtype = np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True)
        self._data = np.zeros(self.n_vocab, dtype=dtype)
        # candidates a refused step needs: 1 (greedy) or top_k; 0: all (a repeat penalty, or no top-k)
        self.need = (
            0 if repeat_penalty != 1.0 or (temp > 0.0 and top_k <= 0) else (1 if temp <= 0.0 else top_k)
        )
        self._one = (llama_cpp.llama_token_data * 1)()
        self.full_checks = self.sampled = 0
        self.hook = logits_hook  # called with the logits (a numpy view, changed in place) before sampling

    def _array(self, ptr: Any, n: int):
        return self._lib.llama_token_data_array(data=ptr, size=n, selected=-1, sorted=False)

    def allows(self, token: int) -> bool:
        """Whether the grammar, where it stands, accepts ``token`` next."""
        self._one[0].id, self._one[0].logit, self._one[0].p = token, 0.0, 0.0
        arr = self._array(ctypes.cast(self._one, self._lib.llama_token_data_p), 1)
        self._lib.llama_sampler_apply(self.grammar, ctypes.byref(arr))
        return bool(np.isfinite(self._one[0].logit))

    def sample(self, *args: Any, idx: int | None = None, **kwargs: Any) -> int:
        """``Llama.sample``'s place: the next token of the answer, accepted by the grammar."""
        lib, llm = self._lib, self._llm
        ridx = idx - llm.n_tokens if idx is not None else -1
        if self.hook is not None:
            self.hook(np.ctypeslib.as_array(lib.llama_get_logits_ith(llm.ctx, ridx), shape=(self.n_vocab,)))
        token = lib.llama_sampler_sample(self.chain, llm.ctx, ridx)  # also accepted by the chain
        if not self.allows(token):
            self.full_checks += 1
            logits = np.ctypeslib.as_array(lib.llama_get_logits_ith(llm.ctx, ridx), shape=(self.n_vocab,))
            data = self._candidates(logits)
            arr = self._array(data.ctypes.data_as(lib.llama_token_data_p), len(data))
            lib.llama_sampler_apply(self.chain, ctypes.byref(arr))
            token = int(arr.data[arr.selected].id)
        lib.llama_sampler_accept(self.grammar, token)
        self.sampled += 1
        return token

    def _candidates(self, logits: np.ndarray) -> np.ndarray:
        """What the grammar allows, best first, as many as the chain can use: the first allowed token for
        greedy, the first ``top_k`` for sampling (what top-k keeps of the allowed set), so the grammar
        checks a few hundred pieces instead of the whole vocabulary. With a repeat penalty (it reorders the
        logits before top-k) or no top-k, every piece is checked."""
        need = self.need if self.need > 0 else self.n_vocab
        kept: list[np.ndarray] = []
        found, chunk = 0, CHUNK if need < self.n_vocab else self.n_vocab
        order: np.ndarray | None = None  # the whole ranking, sorted once when the first chunk is not enough
        for start in range(0, self.n_vocab, chunk):
            if start == 0:
                ids = _best(logits, 0, chunk)
            else:
                order = _best(logits, 0, self.n_vocab) if order is None else order
                ids = order[start : start + chunk]
            data = self._data[: len(ids)]
            data["id"], data["logit"], data["p"] = ids, logits[ids], 0.0
            arr = self._array(data.ctypes.data_as(self._lib.llama_token_data_p), len(ids))
            self._lib.llama_sampler_apply(self.grammar, ctypes.byref(arr))
            ok = data[np.isfinite(data["logit"])].copy()
            kept.append(ok)
            found += len(ok)
            if found >= need:
                break
        return np.concatenate(kept)

    def close(self) -> None:
        for sampler in (self.grammar, self.chain):
            if sampler:
                self._lib.llama_sampler_free(sampler)
        self.grammar = self.chain = None


def _best(logits: np.ndarray, start: int, n: int) -> np.ndarray:
    """Token ids ranked ``start`` to ``start + n`` by logit, best first (ties: the lower id first, as
    llama.cpp's greedy picks); the first chunk without sorting the whole vocabulary. A caller walking
    past the first chunk asks for the whole ranking once (each later call sorts all of it)."""
    if start == 0 and n < len(logits):
        top = np.argpartition(-logits, n)[:n]
        return top[np.lexsort((top, -logits[top]))]
    order = np.lexsort((np.arange(len(logits)), -logits))
    return order[start : start + n]
