"""Grammar-constrained sampling that checks one token first, as llama.cpp's own common sampler does.

llama-cpp-python puts the grammar inside the sampler chain, so every token costs a grammar check of the
whole vocabulary (49k pieces for SmolLM2, against every alternative the grammar has open: 26 at the start
of an ICD-10 code). Here the chain samples first, without the grammar; the grammar then judges that one
token. Only when it refuses is the whole vocabulary checked and the token sampled again from what the
grammar allows. Greedy decoding picks exactly what a full check would pick (the best token, if allowed,
is the best allowed token); sampling keeps the constrained distribution, as llama.cpp's
``common_sampler_sample`` does (top-k/top-p/min-p cut before the grammar on the first try).

`Runtime.stream` installs ``GrammarFirst.sample`` as its Llama's sampler for one answer
(``Llama.generate`` calls ``self.sample``), so llama-cpp-python's prompt cache and evaluation stay as they are.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np


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
        self._data["id"] = np.arange(self.n_vocab, dtype=np.intc)
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
            logits = lib.llama_get_logits_ith(llm.ctx, ridx)
            self._data["logit"] = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
            self._data["p"] = 0.0
            arr = self._array(self._data.ctypes.data_as(lib.llama_token_data_p), self.n_vocab)
            lib.llama_sampler_apply(self.grammar, ctypes.byref(arr))
            lib.llama_sampler_apply(self.chain, ctypes.byref(arr))
            token = int(arr.data[arr.selected].id)
        lib.llama_sampler_accept(self.grammar, token)
        self.sampled += 1
        return token

    def close(self) -> None:
        for sampler in (self.grammar, self.chain):
            if sampler:
                self._lib.llama_sampler_free(sampler)
        self.grammar = self.chain = None
