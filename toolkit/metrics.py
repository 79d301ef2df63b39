"""Metric functions for `medkit eval`: each takes predictions and references, returns plain floats.

Text overlap comes from maintained packages (rouge-score, sacrebleu); ICD-10-CM validity and hierarchy
from simple-icd-10-cm. Heavy imports stay inside the functions.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from medkit.errors import EvalError

TASK_METRICS: dict[str, tuple[str, ...]] = {
    "qa": ("loss", "ppl", "rouge1", "rouge2", "rougeL", "bleu", "stop_rate"),
    "text": ("loss", "ppl", "stop_rate"),
    "icd10": (
        "loss",
        "ppl",
        "exact",
        "code_match",
        "category_match",
        "chapter_match",
        "valid_rate",
        "stop_rate",
    ),
    "numeric": ("loss", "ppl", "mae", "rmse", "r2", "unparsed", "stop_rate"),
}
# Which way is better, for the table and the chart.
HIGHER_IS_BETTER = {
    "loss": False, "ppl": False, "rouge1": True, "rouge2": True, "rougeL": True, "bleu": True,
    "exact": True, "code_match": True, "category_match": True, "chapter_match": True, "valid_rate": True,
    "mae": False, "rmse": False, "r2": True, "unparsed": False, "stop_rate": True,
}  # fmt: skip
GENERATION_METRICS = frozenset(m for ms in TASK_METRICS.values() for m in ms) - {"loss", "ppl"}

# An ICD-10-CM code: letter, digit, digit-or-letter, then an optional dot and up to 4 more characters.
_ICD = re.compile(r"\b([A-Z][0-9][0-9A-Z])(?:\.?([0-9A-Z]{1,4}))?\b", re.IGNORECASE)
# The first number: sign, thousands separators, decimals, exponent; not the digit inside "HbA1c".
_NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|(?<![\w.])[-+]?\.\d+"
)


def metrics_for_task(task: str, wanted: Sequence[str] | None = None) -> tuple[str, ...]:
    """The metrics computed for ``task``; asking for one that does not fit raises EvalError."""
    if task not in TASK_METRICS:
        raise EvalError(f"unknown eval task '{task}' (tasks: {', '.join(TASK_METRICS)})")
    allowed = TASK_METRICS[task]
    if not wanted:
        return allowed
    bad = [m for m in wanted if m not in allowed]
    if bad:
        raise EvalError(
            f"metric '{bad[0]}' does not fit task '{task}'", hint=f"metrics for {task}: {', '.join(allowed)}"
        )
    return tuple(m for m in allowed if m in wanted)


# ---- perplexity ------------------------------------------------------------------------------------


def perplexity(mean_nll: float) -> float:
    """exp(mean token negative log-likelihood), inf when it overflows."""
    try:
        return math.exp(mean_nll)
    except OverflowError:
        return math.inf


# ---- free text -------------------------------------------------------------------------------------


def rouge(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L F1 (rouge-score, Porter stemmer), in [0, 1]."""
    from rouge_score import rouge_scorer

    _same_length(predictions, references)
    keys = ("rouge1", "rouge2", "rougeL")
    scorer = rouge_scorer.RougeScorer(list(keys), use_stemmer=True)
    totals = dict.fromkeys(keys, 0.0)
    for pred, ref in zip(predictions, references, strict=True):
        scores = scorer.score(ref, pred)  # (target, prediction)
        for k in keys:
            totals[k] += scores[k].fmeasure
    n = max(len(predictions), 1)
    return {k: v / n for k, v in totals.items()}


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (sacrebleu defaults: 13a tokenizer, exp smoothing), in [0, 100]."""
    import sacrebleu

    _same_length(predictions, references)
    return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)


# ---- ICD-10-CM -------------------------------------------------------------------------------------


def normalize_icd(code: str) -> str:
    """Upper case, no dots, no whitespace: ' e11.9 ' -> 'E119'."""
    return re.sub(r"[\s.]", "", code).upper()


def extract_icd(text: str) -> str | None:
    """The first ICD-10-CM-shaped code in ``text``, normalized (no dot); None when there is none."""
    m = _ICD.search(text)
    if m is None:
        return None
    return normalize_icd(m.group(1) + (m.group(2) or ""))


def icd_chapter(code: str) -> str | None:
    """The ICD-10-CM chapter of ``code`` (e.g. '4' for E11.9); None for an invalid code."""
    import simple_icd_10_cm as cm

    code = normalize_icd(code)
    if not code or not cm.is_valid_item(code):
        return None
    ancestors = cm.get_ancestors(code)
    return ancestors[-1] if ancestors else (code if cm.is_chapter(code) else None)


def is_valid_icd(code: str | None) -> bool:
    """Whether ``code`` is a real ICD-10-CM category or subcategory."""
    import simple_icd_10_cm as cm

    return (
        bool(code)
        and cm.is_valid_item(normalize_icd(code))
        and cm.is_category_or_subcategory(normalize_icd(code))
    )


def icd_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """exact: answer text equals the reference (trimmed); code_match: first code equals the reference
    code ignoring case, dots and spaces; category_match: same 3-character category; chapter_match: same
    ICD-10-CM chapter; valid_rate: share of answers whose first code is a real ICD-10-CM code."""
    _same_length(predictions, references)
    n = len(predictions)
    if n == 0:
        return dict.fromkeys(("exact", "code_match", "category_match", "chapter_match", "valid_rate"), 0.0)
    exact = code = cat = chap = valid = 0
    for pred, ref in zip(predictions, references, strict=True):
        exact += pred.strip() == ref.strip()
        got, want = extract_icd(pred), extract_icd(ref) or normalize_icd(ref)
        if got is None:
            continue
        code += got == want
        cat += got[:3] == want[:3]
        valid += is_valid_icd(got)
        got_ch = icd_chapter(got)
        chap += got_ch is not None and got_ch == icd_chapter(want)
    return {
        "exact": exact / n,
        "code_match": code / n,
        "category_match": cat / n,
        "chapter_match": chap / n,
        "valid_rate": valid / n,
    }


# ---- numeric ---------------------------------------------------------------------------------------


def parse_number(text: str) -> float | None:
    """The first number in ``text`` ('about 1,250.5 mg' -> 1250.5); None when there is none."""
    m = _NUMBER.search(text)
    if m is None:
        return None
    try:
        value = float(m.group(0).replace(",", ""))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def numeric_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | None]:
    """MAE, RMSE and R2 over answers with a parseable number; ``unparsed`` is the share without one.

    R2 = 1 - SS_res / SS_tot over the parsed pairs (None when fewer than 2 pairs or constant references).
    """
    _same_length(predictions, references)
    pairs: list[tuple[float, float]] = []
    unparsed = 0
    for pred, ref in zip(predictions, references, strict=True):
        y = parse_number(ref)
        if y is None:
            raise EvalError(
                f"reference answer has no number: {ref[:60]!r}", hint="task 'numeric' needs numeric answers"
            )
        p = parse_number(pred)
        if p is None:
            unparsed += 1
        else:
            pairs.append((p, y))
    n = len(predictions)
    out: dict[str, float | None] = {
        "mae": None,
        "rmse": None,
        "r2": None,
        "unparsed": unparsed / n if n else 0.0,
    }
    if not pairs:
        return out
    errors = [p - y for p, y in pairs]
    out["mae"] = sum(abs(e) for e in errors) / len(errors)
    out["rmse"] = math.sqrt(sum(e * e for e in errors) / len(errors))
    ys = [y for _, y in pairs]
    mean_y = sum(ys) / len(ys)
    ss_tot = sum((y - mean_y) ** 2 for y in ys)
    if len(pairs) >= 2 and ss_tot > 0:
        out["r2"] = 1.0 - sum(e * e for e in errors) / ss_tot
    return out


# ---- generation behaviour --------------------------------------------------------------------------


def stop_rate(stopped: Sequence[bool]) -> float:
    """Share of generations that ended on their own (end-of-turn) before the token budget."""
    return sum(bool(s) for s in stopped) / len(stopped) if stopped else 0.0


# ---- task detection --------------------------------------------------------------------------------


def guess_task(references: Sequence[str]) -> str:
    """'icd10' when every reference is an ICD-10 code, 'numeric' when every one is a number, else 'qa'."""
    refs = [r.strip() for r in references if r.strip()]
    if not refs:
        return "qa"
    if all(_ICD.fullmatch(r) for r in refs):
        return "icd10"
    if all(_NUMBER.fullmatch(r.rstrip(" %")) for r in refs):
        return "numeric"
    return "qa"


def check_references(task: str, references: Sequence[str], *, where: str = "") -> None:
    """EvalError when the references cannot be scored by ``task`` (no code for icd10, no number for numeric)."""
    parse = {"icd10": extract_icd, "numeric": parse_number}.get(task)
    if parse is None:
        return
    for i, ref in enumerate(references):
        if parse(ref) is None:
            what = "ICD-10 code" if task == "icd10" else "number"
            raise EvalError(
                f"task '{task}' does not fit this data: reference {i} has no {what} ({ref[:60]!r})",
                where=where or None,
                hint="set eval.task to qa or text",
            )


def task_metrics(task: str, predictions: Sequence[str], references: Sequence[str]) -> dict[str, float | None]:
    """The generation metrics of ``task`` (no loss/ppl, no stop rate)."""
    if task == "qa":
        return {**rouge(predictions, references), "bleu": bleu(predictions, references)}
    if task == "icd10":
        return dict(icd_metrics(predictions, references))
    if task == "numeric":
        return numeric_metrics(predictions, references)
    return {}


def _same_length(predictions: Sequence[str], references: Sequence[str]) -> None:
    if len(predictions) != len(references):
        raise EvalError(f"{len(predictions)} predictions for {len(references)} references")
