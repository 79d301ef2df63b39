"""Text overlap for `medkit eval` (medkit.eval.metrics' free-text rows): ROUGE-1/2/L and corpus BLEU from
the maintained packages (rouge-score, sacrebleu), each answer's scores kept, since eval's bootstrap
intervals (medkit.eval.gain) score the same answers hundreds of times. Imported inside the functions."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from medkit.errors import EvalError


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (rouge-score, Porter stemmer), in [0, 1]."""
    same_length(predictions, references)
    totals = [0.0, 0.0, 0.0]
    for pred, ref in zip(predictions, references, strict=True):
        for i, v in enumerate(_rouge_pair(ref, pred)):
            totals[i] += v
    n = max(len(predictions), 1)
    return {k: v / n for k, v in zip(_ROUGE_KEYS, totals, strict=True)}


_ROUGE_KEYS = ("rouge1", "rouge2", "rougeL")


@functools.lru_cache(maxsize=1)
def _rouge_scorer() -> Any:
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(_ROUGE_KEYS), use_stemmer=True)


@functools.lru_cache(maxsize=2**16)
def _rouge_pair(reference: str, prediction: str) -> tuple[float, ...]:
    """One answer's ROUGE-1/2/L F1 (kept: eval's intervals score the same pairs hundreds of times)."""
    scores = _rouge_scorer().score(reference, prediction)  # (target, prediction)
    return tuple(scores[k].fmeasure for k in _ROUGE_KEYS)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenizer, exp smoothing), in [0, 100]: sacrebleu's own
    corpus score from the sum of each answer's n-gram counts (kept per answer, as ROUGE's)."""
    from sacrebleu.metrics import BLEU

    same_length(predictions, references)
    if not predictions:
        return 0.0
    stats = [_bleu_pair(ref, pred) for pred, ref in zip(predictions, references, strict=True)]
    correct = [sum(x[0][i] for x in stats) for i in range(4)]
    total = [sum(x[1][i] for x in stats) for i in range(4)]
    sys_len, ref_len = sum(x[2] for x in stats), sum(x[3] for x in stats)
    return float(BLEU.compute_bleu(correct, total, sys_len, ref_len, smooth_method="exp").score)


@functools.lru_cache(maxsize=1)
def _bleu_metric() -> Any:
    from sacrebleu.metrics import BLEU

    return BLEU()


@functools.lru_cache(maxsize=2**16)
def _bleu_pair(reference: str, prediction: str) -> tuple[tuple[int, ...], tuple[int, ...], int, int]:
    """One answer's BLEU statistics: (matching n-grams, n-grams, its length, the reference's length)."""
    s = _bleu_metric().corpus_score([prediction], [[reference]])
    return tuple(s.counts), tuple(s.totals), int(s.sys_len), int(s.ref_len)


def same_length(predictions: Sequence[str], references: Sequence[str]) -> None:
    """EvalError unless there is one prediction per reference."""
    if len(predictions) != len(references):
        raise EvalError(f"{len(predictions)} predictions for {len(references)} references")
