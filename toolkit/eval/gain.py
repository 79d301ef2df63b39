"""The share of the fine-tuning gain an export keeps, and how sure that share is.

``gain_kept``: per metric where fine-tuning improved on the base, (export - base) / (tuned - base).
On a demo's few dozen greedy answers that share moves by several points between two files of equal loss,
so each export also gets a paired bootstrap interval: the eval's examples drawn again with replacement
(the same draw for base, tuned and every export, so what they share cancels), every metric computed again
on the draw, the share kept (and its median over the metrics) taken per draw, and the middle LEVEL of the
draws reported. A target that sits inside an interval is not settled by that eval set.

    kept = gain_kept(report["table"])              # {"q4_0": {"loss": 0.9, "bleu": 1.03, ...}}
    iv = gain_intervals(scored, metrics)           # {"q4_0": {"median": [0.74, 1.06], "loss": [...]}}
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterator, Sequence
from typing import Any

from medkit.eval.metrics import Scored, compute, metric

DRAWS = 1000  # bootstrap resamples (a few seconds for a demo's 35 answers and six exports)
LEVEL = 0.95  # the middle share of the draws an interval spans
SEED = 0
MEDIAN = "median"  # the key of the median-over-metrics interval, beside one per metric


def gain_kept(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """For each model besides base and tuned (the GGUFs): the share of the base -> tuned improvement it
    keeps, per metric where fine-tuning improved on the base (1.0: all of it; 0: none; < 0: worse than
    the base). Empty without both a base and a tuned column."""
    base, tuned = table.get("base"), table.get("tuned")
    if not base or not tuned:
        return {}
    out: dict[str, dict[str, float]] = {}
    for model, row in table.items():
        if model in ("base", "tuned"):
            continue
        kept = {}
        for name, b in base.items():
            m, t, v = metric(name), tuned.get(name), row.get(name)
            if not m.gain or b is None or t is None or v is None or not all(map(math.isfinite, (b, t, v))):
                continue  # e.g. ppl is exp(loss): the loss row says the same on a linear scale
            sign = 1 if m.higher_is_better else -1
            gain = sign * (t - b)
            if gain > 0 and m.show(t) != m.show(b):
                kept[name] = round(sign * (v - b) / gain, 3)
        out[model] = kept
    return out


def median_kept(kept: dict[str, float]) -> float:
    """The share an export keeps over all its improved metrics: their median (the figure eval reports)."""
    return statistics.median(kept.values())


def resamples(rng: Any, n_ans: int, n_ex: int, draws: int) -> Iterator[tuple[list[int], list[int]]]:
    """``draws`` bootstrap draws: the answers' indices and the likelihood examples' (the same draw where the
    two are the same rows, an own draw where the loss is taken on other rows)."""
    for _ in range(draws):
        answers = rng.integers(0, n_ans, n_ans).tolist()
        yield answers, answers if n_ex == n_ans else rng.integers(0, n_ex, n_ex).tolist()


def gain_intervals(
    scored: dict[str, Scored],
    metrics: Sequence[str],
    *,
    draws: int = DRAWS,
    level: float = LEVEL,
    seed: int = SEED,
) -> dict[str, dict[str, list[float]]]:
    """{export: {"median": [lo, hi], metric: [lo, hi], ...}}: the paired bootstrap interval of each
    export's share kept (module docstring). Needs "base" and "tuned" among ``scored``; a metric enters a
    draw only where fine-tuning improved it in that draw (as gain_kept), an interval only from the draws
    that had it. Empty without base, tuned and one export, or for fewer than two examples."""
    import numpy as np

    if "base" not in scored or "tuned" not in scored or len(scored) < 3:
        return {}
    n_ans, n_ex = len(scored["base"].predictions), len(scored["base"].row_nll)
    if n_ans < 2 or any(len(s.predictions) != n_ans or len(s.row_nll) != n_ex for s in scored.values()):
        return {}
    rng = np.random.default_rng(seed)
    got: dict[str, dict[str, list[float]]] = {k: {} for k in scored if k not in ("base", "tuned")}
    for answers, examples in resamples(rng, n_ans, n_ex, draws):
        table = {k: compute(metrics, s.take(answers, examples)) for k, s in scored.items()}
        for model, kept in gain_kept(table).items():
            if not kept:
                continue
            for name, v in [(MEDIAN, median_kept(kept)), *kept.items()]:
                got[model].setdefault(name, []).append(v)
    tail = (1 - level) / 2
    return {
        model: {
            name: [round(float(np.quantile(v, q)), 3) for q in (tail, 1 - tail)] for name, v in per.items()
        }
        for model, per in got.items()
        if per
    }


def paired_rates(
    scored: dict[str, Scored],
    pairs: Sequence[tuple[str, str]],
    metrics: Sequence[str],
    *,
    draws: int = DRAWS,
    level: float = LEVEL,
    seed: int = SEED,
) -> dict[str, dict[str, dict[str, list[float]]]]:
    """Two ways of answering compared on the same examples (e.g. a model unconstrained and constrained):
    for each (free, other) pair of ``scored`` names and each rate metric of ``metrics`` (a share of the
    answers, medkit.eval.metrics' ``rate`` rows; the likelihood and stop rate are left out),
    {free: {metric: {"free": [value, lo, hi], "other": [...], "difference": [other - free, lo, hi]}}}.
    One paired bootstrap over the answers (the same draw for both sides, as gain_intervals), so what the
    two share cancels in the difference. Each rate is a mean over the answers of that answer's own
    score, computed once per answer; the draws only average them."""
    import numpy as np

    rates = [m for m in metrics if metric(m).rate and m != "stop_rate"]
    pairs = [(a, b) for a, b in pairs if a in scored and b in scored]
    if not rates or not pairs:
        return {}
    n = len(scored[pairs[0][0]].predictions)
    if n < 2 or any(len(scored[k].predictions) != n for pair in pairs for k in pair):
        return {}

    def per_answer(s: Scored) -> dict[str, Any]:
        rows = [compute(rates, Scored([s.predictions[i]], [s.references[i]])) for i in range(n)]
        return {m: np.array([float(r[m] or 0.0) for r in rows]) for m in rates}

    rng = np.random.default_rng(seed)
    at = rng.integers(0, n, (draws, n))
    tail = (1 - level) / 2

    def span(values: Any) -> list[float]:
        means = values[at].mean(axis=1)
        return [
            round(float(values.mean()), 3),
            *(round(float(np.quantile(means, q)), 3) for q in (tail, 1 - tail)),
        ]

    out: dict[str, dict[str, dict[str, list[float]]]] = {}
    for free, other in pairs:
        a, b = per_answer(scored[free]), per_answer(scored[other])
        out[free] = {
            m: {"free": span(a[m]), "other": span(b[m]), "difference": span(b[m] - a[m])} for m in rates
        }
    return out


def difference_intervals(
    scored: dict[str, Scored],
    pairs: Sequence[tuple[str, str]],
    metrics: Sequence[str],
    *,
    draws: int = DRAWS,
    level: float = LEVEL,
    seed: int = SEED,
) -> dict[str, dict[str, dict[str, Any]]]:
    """{"a - b": {metric: {"value": a - b, "interval": [lo, hi]}}} for each (a, b) of ``pairs``: the paired
    bootstrap of a metric's difference between two models scored on the same examples (one draw of the
    examples for both, so what they share cancels). A pair missing from ``scored``, a metric that is None
    for either, or fewer than two examples is left out."""
    import numpy as np

    out: dict[str, dict[str, dict[str, Any]]] = {}
    for a, b in pairs:
        if a not in scored or b not in scored:
            continue
        sa, sb = scored[a], scored[b]
        n_ans, n_ex = len(sa.predictions), len(sa.row_nll)
        if n_ans < 2 or len(sb.predictions) != n_ans or len(sb.row_nll) != n_ex:
            continue
        whole_a, whole_b = compute(metrics, sa), compute(metrics, sb)
        whole = {
            m: x - y
            for m in metrics
            if (x := whole_a.get(m)) is not None and (y := whole_b.get(m)) is not None
        }
        names = list(whole)
        rng = np.random.default_rng(seed)
        diffs: dict[str, list[float]] = {m: [] for m in names}
        for answers, examples in resamples(rng, n_ans, n_ex, draws):
            va, vb = compute(names, sa.take(answers, examples)), compute(names, sb.take(answers, examples))
            for m in names:
                x, y = va.get(m), vb.get(m)
                if x is not None and y is not None and math.isfinite(x - y):
                    diffs[m].append(x - y)
        tail = (1 - level) / 2
        out[f"{a} - {b}"] = {
            m: {
                "value": round(whole[m], 4),
                "interval": [round(float(np.quantile(d, q)), 4) for q in (tail, 1 - tail)],
            }
            for m, d in diffs.items()
            if d
        }
    return out
