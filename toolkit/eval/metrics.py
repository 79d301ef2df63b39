"""Metrics for `medkit eval`: the functions, and METRICS, the one registry eval, reports and recipes ask.

Text overlap lives in medkit.eval.overlap (rouge-score, sacrebleu); ICD-10-CM validity and hierarchy
from simple-icd-10-cm. Heavy imports stay inside the functions.

Add a metric: one function over `Scored` (returning {name: value}) and one `Metric` row in METRICS at
the end of this file, plus its test; eval, eval.md/png, the table, the share of the gain kept and the
recipe's eval.task help pick it up from the row.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from medkit.errors import EvalError
from medkit.eval.overlap import bleu, rouge, same_length
from medkit.icd10 import is_billable

TASKS = ("qa", "icd10", "numeric", "text")  # eval.task values (the recipe adds 'auto')

# An ICD-10-CM code: letter, digit, digit-or-letter, then an optional dot and up to 4 more characters.
_ICD = re.compile(r"\b([A-Z][0-9][0-9A-Z])(?:\.?([0-9A-Z]{1,4}))?\b", re.IGNORECASE)
# The first number: sign, thousands separators, decimals, exponent; not the digit inside "HbA1c".
_NUMBER = re.compile(
    r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|(?<![\w.])[-+]?\.\d+"
)


# ---- perplexity ------------------------------------------------------------------------------------


def perplexity(mean_nll: float) -> float:
    """exp(mean token negative log-likelihood), inf when it overflows."""
    try:
        return math.exp(mean_nll)
    except OverflowError:
        return math.inf


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

    if not code:
        return False
    return bool(cm.is_valid_item(normalize_icd(code)) and cm.is_category_or_subcategory(normalize_icd(code)))


def icd_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """exact: answer text equals the reference (trimmed); code_match: first code equals the reference
    code ignoring case, dots and spaces; category_match: same 3-character category; chapter_match: same
    ICD-10-CM chapter; valid_rate: share of answers that are one billable code of the pinned release and
    nothing else (medkit.icd10; case and dot ignored): no prose, no trailing text, no non-billable category."""
    same_length(predictions, references)
    n = len(predictions)
    if n == 0:
        return dict.fromkeys(("exact", "code_match", "category_match", "chapter_match", "valid_rate"), 0.0)
    exact = code = cat = chap = valid = 0
    for pred, ref in zip(predictions, references, strict=True):
        exact += pred.strip() == ref.strip()
        valid += is_billable(pred.strip())
        got, want = extract_icd(pred), extract_icd(ref) or normalize_icd(ref)
        if got is None:
            continue
        code += got == want
        cat += got[:3] == want[:3]
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
    same_length(predictions, references)
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


# ---- the registry -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scored:
    """What one model produced on the eval set: everything a metric function reads."""

    predictions: Sequence[str]
    references: Sequence[str]
    stopped: Sequence[bool] = ()  # per prediction: ended on its own before the token budget
    nll: float = 0.0  # summed negative log-likelihood over the answer tokens
    tokens: int = 0  # answer tokens scored
    row_nll: Sequence[float] = field(default=())  # per tokenized example: its summed NLL ...
    row_tokens: Sequence[int] = field(default=())  # ... over this many answer tokens

    def take(self, answers: Sequence[int], examples: Sequence[int] | None = None) -> Scored:
        """The same model scored on a resample: answers ``answers`` (indices, repeats allowed) and
        tokenized examples ``examples`` (default: the same indices) for the likelihood."""
        at = answers if examples is None else examples
        return Scored(
            [self.predictions[i] for i in answers],
            [self.references[i] for i in answers],
            [self.stopped[i] for i in answers] if self.stopped else (),
            sum(self.row_nll[i] for i in at),
            sum(self.row_tokens[i] for i in at),
            [self.row_nll[i] for i in at],
            [self.row_tokens[i] for i in at],
        )


Value = float | None


@dataclass(frozen=True)
class Metric:
    """One metric: the function computing it (several rows may share one), where it applies and how it
    reads. ``gain``: counted in the share of the fine-tuning gain an export keeps."""

    name: str
    compute: Callable[[Scored], dict[str, Value]]
    tasks: tuple[str, ...]
    higher_is_better: bool
    rate: bool  # a share in [0, 1] (charts use a 0..1 axis)
    fmt: str  # format spec for tables: ".3f"
    help: str
    gain: bool = True

    def show(self, value: Value) -> str:
        if value is None:
            return "-"
        if isinstance(value, float) and math.isinf(value):
            return "inf"
        return format(value, self.fmt)

    @property
    def label(self) -> str:
        return f"{self.name} {'↑' if self.higher_is_better else '↓'}"

    @property
    def direction(self) -> str:
        return "higher is better" if self.higher_is_better else "lower is better"


def _likelihood(s: Scored) -> dict[str, Value]:
    mean = s.nll / s.tokens if s.tokens else None
    return {"loss": mean, "ppl": None if mean is None else perplexity(mean)}


def _rouge(s: Scored) -> dict[str, Value]:
    return dict(rouge(s.predictions, s.references))


def _bleu(s: Scored) -> dict[str, Value]:
    return {"bleu": bleu(s.predictions, s.references)}


def _icd(s: Scored) -> dict[str, Value]:
    return dict(icd_metrics(s.predictions, s.references))


def _numeric(s: Scored) -> dict[str, Value]:
    return numeric_metrics(s.predictions, s.references)


def _stops(s: Scored) -> dict[str, Value]:
    return {"stop_rate": stop_rate(s.stopped)}


_ALL, _QA, _ICD10, _NUM = TASKS, ("qa",), ("icd10",), ("numeric",)
# The order here is the order of the eval table's rows.
METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("loss", _likelihood, _ALL, False, False, ".4f", "mean answer-token NLL"),
        Metric("ppl", _likelihood, _ALL, False, False, ".2f", "perplexity, exp(loss)", gain=False),
        Metric("rouge1", _rouge, _QA, True, True, ".3f", "ROUGE-1 F1"),
        Metric("rouge2", _rouge, _QA, True, True, ".3f", "ROUGE-2 F1"),
        Metric("rougeL", _rouge, _QA, True, True, ".3f", "ROUGE-L F1"),
        Metric("bleu", _bleu, _QA, True, False, ".2f", "corpus BLEU, 0-100"),
        Metric("exact", _icd, _ICD10, True, True, ".3f", "answer equals the reference"),
        Metric("code_match", _icd, _ICD10, True, True, ".3f", "same ICD-10 code"),
        Metric("category_match", _icd, _ICD10, True, True, ".3f", "same 3-character category"),
        Metric("chapter_match", _icd, _ICD10, True, True, ".3f", "same ICD-10-CM chapter"),
        Metric("valid_rate", _icd, _ICD10, True, True, ".3f", "answer is one billable ICD-10-CM code"),
        Metric("mae", _numeric, _NUM, False, False, ".2f", "mean absolute error"),
        Metric("rmse", _numeric, _NUM, False, False, ".2f", "root mean squared error"),
        Metric("r2", _numeric, _NUM, True, False, ".3f", "coefficient of determination"),
        Metric("unparsed", _numeric, _NUM, False, True, ".3f", "share of answers with no number"),
        Metric("stop_rate", _stops, _ALL, True, True, ".3f", "share of answers that ended on their own"),
    )
}


def metric(name: str) -> Metric:
    """The registry row of ``name``; EvalError for a name eval does not know."""
    if name not in METRICS:
        raise EvalError(f"unknown metric '{name}' (metrics: {', '.join(METRICS)})")
    return METRICS[name]


def metrics_for_task(task: str, wanted: Sequence[str] | None = None) -> tuple[str, ...]:
    """The metrics computed for ``task``; asking for one that does not fit raises EvalError."""
    if task not in TASKS:
        raise EvalError(f"unknown eval task '{task}' (tasks: {', '.join(TASKS)})")
    allowed = tuple(name for name, m in METRICS.items() if task in m.tasks)
    if not wanted:
        return allowed
    bad = [m for m in wanted if m not in allowed]
    if bad:
        raise EvalError(
            f"metric '{bad[0]}' does not fit task '{task}'", hint=f"metrics for {task}: {', '.join(allowed)}"
        )
    return tuple(m for m in allowed if m in wanted)


def compute(names: Sequence[str], scored: Scored) -> dict[str, Value]:
    """{name: value} for each of ``names``; a function shared by several rows runs once."""
    done: dict[Callable[[Scored], dict[str, Value]], dict[str, Value]] = {}
    out: dict[str, Value] = {}
    for name in names:
        fn = metric(name).compute
        if fn not in done:
            done[fn] = fn(scored)
        out[name] = done[fn].get(name)
    return out


def task_help() -> str:
    """'qa (rouge1, ...), icd10 (exact, ...), ...; every task: loss, ppl, stop_rate' for the recipe help."""
    common = [name for name, m in METRICS.items() if set(TASKS) <= set(m.tasks)]
    own = {t: [m for m in metrics_for_task(t) if m not in common] for t in TASKS}
    return ", ".join(f"{t} ({', '.join(ms) or 'nothing more'})" for t, ms in own.items()) + (
        f"; every task: {', '.join(common)}"
    )
