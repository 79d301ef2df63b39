"""`medkit eval` under the ICD-10 constraint: every model scored a second time with answers limited to the
billable codes, so base, tuned and every GGUF are compared under equal conditions.

The transformers side walks the same automaton as llama.cpp's grammar (medkit.runtime.constrain): at
each step a row may only take tokens whose text continues a code from where its answer stands, and the
end-of-turn tokens once the answer is a whole code. A token's text is its vocabulary entry when that is
made of code characters only (byte-level BPE and SentencePiece pieces without their space marker), which
is what llama.cpp's grammar admits too: no leading space, no prose. GGUFs go through
`Runtime(constrain=...)`. The constrained columns are named '<model>+icd10'.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from medkit.errors import EvalError
from medkit.runtime.constrain import (
    ALPHABET,
    Automaton,
    ConstraintError,
    automaton,
    check_spelling,
    code_set,
    parse_spec,
)

SUFFIX = "+icd10"


def constrained_spec(setting: str, task: str, tokenizer: Any = None) -> str | None:
    """The recipe's ``eval.constrain`` for this task: 'auto' is icd10 for icd10 tasks (else off),
    'none' is off, anything else a constraint spec (icd10, icd10:J, icd10:FILE). The code set, and
    whether ``tokenizer`` can spell its codes, are checked before any model is scored (EvalError)."""
    spec = ("icd10" if task == "icd10" else None) if setting == "auto" else setting
    try:
        spec = parse_spec(spec)
        if spec is not None:
            automaton(spec)  # the code set checked (and built)
            if tokenizer is not None:
                IcdLogits(tokenizer, spec, 0, [])
    except ConstraintError as exc:
        raise EvalError(f"eval.constrain: {exc.message}", where=exc.where, hint=exc.hint) from None
    return spec


class IcdLogits:
    """A transformers logits processor: rows of a left-padded batch held to the code set.

    ``prompt_width`` is the padded prompt length (generated tokens start there); ``stops`` are the ids
    that end an answer (the template's end of turn, EOS). A row that has stopped is left alone."""

    def __init__(self, tokenizer: Any, spec: str, prompt_width: int, stops: list[int]):
        self.auto: Automaton = automaton(spec)
        self.width, self.stops = prompt_width, list(stops)
        vocab = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        self.pieces = {i: t for i, t in enumerate(vocab) if isinstance(t, str) and t and set(t) <= ALPHABET}
        single = set(self.pieces.values())
        check_spelling(
            lambda ch: [ch] if ch in single else [], where=getattr(tokenizer, "name_or_path", None)
        )
        self._allowed: dict[int, Any] = {}
        self._rows: dict[int, tuple[int, int]] = {}  # row -> (tokens read, state); state -1: stopped

    def allowed(self, state: int, device: Any):
        """The ids a row in ``state`` may take next (a cached tensor)."""
        import torch

        if state not in self._allowed:
            ids = [i for i, text in self.pieces.items() if self.auto.walk(state, text) >= 0]
            if self.auto.final[state]:
                ids += self.stops
            self._allowed[state] = torch.tensor(sorted(set(ids)), dtype=torch.long)
        return self._allowed[state].to(device)

    def _state(self, row: int, generated: list[int]) -> int:
        seen, state = self._rows.get(row, (0, 0))
        for token in generated[seen:]:
            if state < 0:
                break
            state = -1 if token in self.stops else self.auto.walk(state, self.pieces.get(token, "\x00"))
        self._rows[row] = (len(generated), state)
        return state

    def __call__(self, input_ids, scores):
        import torch

        masked = torch.full_like(scores, float("-inf"))
        for row in range(scores.shape[0]):
            state = self._state(row, input_ids[row, self.width :].tolist())
            if state < 0:  # stopped (padding follows): anything, the row is finished
                masked[row] = scores[row]
                continue
            keep = self.allowed(state, scores.device)
            masked[row, keep] = scores[row, keep]
        return masked


def processors(tokenizer: Any, evset: Any, prompt_width: int, stops: list[int]) -> list[Any]:
    """The logits processors of a constrained batch (none when the eval set is not constrained)."""
    spec = getattr(evset, "constrain", None)
    return [IcdLogits(tokenizer, spec, prompt_width, stops)] if spec else []


def score_constrained(score_hf, score_gguf, *, run, recipe, tokenizer, evset, spec, want_base, want_tuned,
                      ggufs, say, free=None, others=()) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Each model of the table again, constrained to ``spec``: columns '<name>+icd10'. ``ggufs`` is
    [(column name, path)], ``others`` other runs' adapters [(column name, folder)]; ``score_hf`` /
    ``score_gguf`` are medkit.eval.score's scorers; ``free`` the unconstrained results already scored,
    whose likelihood rows are reused (the same references)."""
    # a constrained answer is at most the longest code and its end token: a smaller budget would only cut codes
    budget = max(evset.max_new_tokens, max(len(c) for c in code_set(spec).codes) + 1)
    known = {name: list(zip(r["rows"]["nll"], r["rows"]["tokens"], strict=True))
             for name, r in (free or {}).items() if "rows" in r}  # fmt: skip
    constrained = dataclasses.replace(evset, constrain=spec, max_new_tokens=budget, likelihoods=known)
    out: dict[str, dict[str, Any]] = {}
    if want_base or want_tuned:
        for name, result in score_hf(
            run, recipe, tokenizer, constrained, want_base, want_tuned, say, others
        ).items():
            out[name + SUFFIX] = {**result, "constrain": spec}
    for name, path in ggufs:
        say(f"scoring {name}{SUFFIX} ({path.name}, constrained to {spec}) on {len(evset.examples)} examples")
        out[name + SUFFIX] = {
            "kind": "gguf",
            "source": str(path),
            "constrain": spec,
            **score_gguf(path, constrained, name),
        }
    return out
