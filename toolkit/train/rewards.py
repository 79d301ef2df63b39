"""Verifiable rewards for GRPO (train.method = "grpo"), combined by the weights in `train.rewards`.

A reward maps (completion text, reference answer, whether the completion ended at the end-of-turn token)
to a float. Built-in ones score what medkit's eval measures, with its own parsers (medkit.eval.metrics,
the one home of ICD-10 and number parsing):

    icd10_exact     1 when the first code in the completion is the reference code
    icd10_category  1 same code, 0.5 same 3-character category, 0.25 same chapter (partial credit)
    icd10_valid     1 when the first code is a real ICD-10-CM code
    numeric         1 when the first number is within train.reward_tolerance (relative) of the reference
    format          1 when the answer ended at the end-of-turn token with nothing after it
    length          -(completion tokens / max_new_tokens): a penalty on long answers

A user reward is a function named by a dotted path ("mypkg.rewards.fn") with the same signature; it is
imported (running its module's code) only when the recipe says `trust_reward_code = true`. A reward that
raises or returns a non-finite number stops training with one line naming it, the row and the completion
(each reward is first tried on a reference answer, before anything is written).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from medkit.errors import RecipeError, TrainError

Reward = Callable[..., float]


@dataclass(frozen=True)
class Sample:
    """What a reward sees of one completion."""

    text: str  # the completion, decoded without special tokens
    reference: str  # the row's answer
    stopped: bool  # ended at the end-of-turn token, nothing after it
    tokens: int  # completion tokens generated
    budget: int  # max new tokens
    tolerance: float = 0.05


def icd10_exact(s: Sample) -> float:
    from medkit.eval.metrics import extract_icd, normalize_icd

    got = extract_icd(s.text)
    return float(got is not None and got == (extract_icd(s.reference) or normalize_icd(s.reference)))


def icd10_category(s: Sample) -> float:
    from medkit.eval.metrics import extract_icd, icd_chapter, normalize_icd

    got, want = extract_icd(s.text), extract_icd(s.reference) or normalize_icd(s.reference)
    if got is None:
        return 0.0
    if got == want:
        return 1.0
    if got[:3] == want[:3]:
        return 0.5
    chapter = icd_chapter(got)
    return 0.25 if chapter is not None and chapter == icd_chapter(want) else 0.0


def icd10_valid(s: Sample) -> float:
    from medkit.eval.metrics import extract_icd, is_valid_icd

    return float(is_valid_icd(extract_icd(s.text)))


def numeric(s: Sample) -> float:
    from medkit.eval.metrics import parse_number

    got, want = parse_number(s.text), parse_number(s.reference)
    if got is None or want is None:
        return 0.0
    return float(abs(got - want) <= s.tolerance * max(abs(want), 1e-9))


def format_reward(s: Sample) -> float:
    return float(s.stopped)


def length(s: Sample) -> float:
    return -s.tokens / max(s.budget, 1)


BUILTIN: dict[str, Reward] = {
    "icd10_exact": icd10_exact, "icd10_category": icd10_category, "icd10_valid": icd10_valid,
    "numeric": numeric, "format": format_reward, "length": length,
}  # fmt: skip


def resolve(weights: dict[str, float], *, trust: bool) -> dict[str, tuple[Reward, float]]:
    """name -> (function, weight) for `train.rewards`; RecipeError naming the key for an unknown name, a
    dotted path without trust_reward_code, or one that does not import to a function."""
    if not weights:
        raise RecipeError(["train.rewards: GRPO needs at least one reward, e.g. {icd10_exact = 1.0}"])
    out: dict[str, tuple[Reward, float]] = {}
    for name, weight in weights.items():
        where = f"train.rewards.{name}"
        if name in BUILTIN:
            out[name] = (BUILTIN[name], float(weight))
            continue
        if "." not in name:
            import difflib

            close = difflib.get_close_matches(name, BUILTIN, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise RecipeError([f"{where}: no reward named '{name}'{hint}; built in: {', '.join(BUILTIN)}"])
        if not trust:
            raise RecipeError(
                [f"{where}: a user reward runs Python code; set train.trust_reward_code = true"]
            )
        module, _, attr = name.rpartition(".")
        try:
            fn = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise RecipeError([f"{where}: cannot import {name}: {exc}"]) from None
        if not callable(fn):
            raise RecipeError([f"{where}: {name} is not a function"])
        out[name] = (fn, float(weight))
    return out


def score(rewards: dict[str, tuple[Reward, float]], sample: Sample, where: str) -> dict[str, float]:
    """Each reward's value on one sample (unweighted); TrainError naming the reward and the sample when
    one raises or is not a finite number."""
    values = {}
    for name, (fn, _) in rewards.items():
        try:
            value = float(fn(sample))
        except Exception as exc:  # a user's function: any failure is theirs to see in one line
            raise TrainError(f"reward '{name}' raised {type(exc).__name__}: {exc} on {sample.text[:60]!r}",
                             where=where) from None  # fmt: skip
        if not math.isfinite(value):
            raise TrainError(f"reward '{name}' returned {value} on {sample.text[:60]!r}", where=where)
        values[name] = value
    return values


def probe(rewards: dict[str, tuple[Reward, float]], row: Any, train: Any) -> None:
    """Each reward on a row's own reference answer (a perfect completion): a reward that fails there fails
    before training starts, in one line."""
    sample = Sample(row.answer, row.answer, True, 1, train.max_new_tokens, train.reward_tolerance)
    score(rewards, sample, where=f"train row {row.row} (its reference answer)")
