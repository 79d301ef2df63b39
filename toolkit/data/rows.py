"""Dataset rows -> mapped, cleaned, split conversations (the part of the data pipeline before tokens).

Rows come from `medkit.data.files.load_split` (a hub id through `datasets`, a local file with no
network); the columns of a known layout (or the recipe's `fields` / templates) are mapped onto one user
turn and one answer, cleaned, de-duplicated and split with a seed. Every dropped row is counted by reason
with two examples; nothing goes silently.
"""

from __future__ import annotations

import html
import json
import random
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medkit.data.checks import MALFORMED, check_icd_labels, dedupe, prompt_overlap
from medkit.data.files import header_hint, load_split
from medkit.errors import DataError

if TYPE_CHECKING:  # the schema, for annotations only (no import cycle at run time)
    from medkit.recipe import Recipe

SPLITS = ("train", "val", "test")
ROLE_NAMES = {
    "human": "user",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "patient": "user",
}


@dataclass(frozen=True)
class Layout:
    """A known row layout: roles -> candidate column names, and how roles make the two turns."""

    required: dict[str, tuple[str, ...]]
    optional: dict[str, tuple[str, ...]] = field(default_factory=dict)
    prompt: str = ""
    answer: str = ""


_Q = ("question", "query", "questions")
_A = ("answer", "response", "output", "answers")
LAYOUTS: dict[str, Layout] = {
    # preference pairs (train.method dpo/orpo): the chosen answer is the row's answer, so eval and export
    # read a pair file like any other; medkit.data.pairs also tokenizes the rejected one
    "preference": Layout({"prompt": ("prompt", "messages", "question", "dialogue"), "chosen": ("chosen",),
                          "rejected": ("rejected",)}, prompt="{prompt}", answer="{chosen}"),
    "messages": Layout({"messages": ("messages", "conversations", "conversation")},
                       {"answer": ("diagnosis", "code", "icd10", "answer", "label")}),
    "cot": Layout({"question": _Q, "cot": ("complex_cot", "cot", "reasoning", "chain_of_thought"), "answer": _A},
                  prompt="{question}", answer="{cot}\n\n{answer}"),
    "alpaca": Layout({"instruction": ("instruction",), "output": ("output",)}, {"input": ("input",)},
                     prompt="{instruction}", answer="{output}"),
    "prompt_completion": Layout({"prompt": ("prompt",), "completion": ("completion",)},
                                prompt="{prompt}", answer="{completion}"),
    "dialogue": Layout({"dialogue": ("dialogue", "transcript", "conversation"),
                        "code": ("code", "icd10", "icd10_code", "icd_code", "diagnosis")},
                       prompt="{dialogue}", answer="{code}"),
    "qa": Layout({"question": _Q, "answer": _A}, prompt="{question}", answer="{answer}"),
    "text": Layout({"text": ("text", "content")}),
}  # fmt: skip


@dataclass
class RowReport:
    """What happened to the source rows: kept per split, dropped per reason (two examples each)."""

    source_rows: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)
    layout: str = ""
    columns: list[str] = field(default_factory=list)
    overlap: dict[str, int] = field(default_factory=dict)  # val/test rows whose prompt is also in train

    def drop(self, reason: str, example: Any) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < 2:
            text = (
                example if isinstance(example, str) else json.dumps(example, default=str, ensure_ascii=False)
            )
            shown.append(text if len(text) <= 160 else text[:157] + "...")

    @property
    def malformed(self) -> int:
        return sum(n for r, n in self.dropped.items() if r.startswith(MALFORMED))


# ---- mapping & cleaning --------------------------------------------------------------------------

_TAG = re.compile(r"</?[A-Za-z][^<>]*>")
_SPACES = re.compile(r"[ \t\f\v\u00a0]+")
_BLANKS = re.compile(r"\n{3,}")


def clean_text(text: str, *, strip_html: bool, collapse: bool) -> str:
    if strip_html:
        text = html.unescape(_TAG.sub(" ", text))
    if collapse:
        text = _SPACES.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))
        text = "\n".join(line.strip() for line in text.split("\n"))
        text = _BLANKS.sub("\n\n", text)
    return text.strip()


def resolve_layout(recipe: Recipe, columns: list[str]) -> tuple[str, dict[str, str]]:
    """The row layout and role -> column map for these columns; DataError naming what is missing."""
    fields = dict(recipe.data.fields)
    src = recipe.data.source
    by_lower = {c.lower(): c for c in columns}
    for role, col in fields.items():
        if col not in columns:
            raise DataError(f"column {col!r} (role {role!r}) is not in {src}; it has: {', '.join(columns)}",
                            where=f"data.fields.{role}")  # fmt: skip

    def find(layout: Layout) -> dict[str, str] | None:
        found = dict(fields)
        for role, cands in {**layout.required, **layout.optional}.items():
            if role in found:
                continue
            col = next((by_lower[c] for c in (role, *cands) if c in by_lower), None)
            if col is not None:
                found[role] = col
            elif role in layout.required:
                return None
        return found

    name = recipe.data.format
    if name != "auto":
        mapping = find(LAYOUTS[name])
        if mapping is None:
            req = LAYOUTS[name].required
            missing = [
                r for r, c in req.items() if r not in fields and not any(x in by_lower for x in (r, *c))
            ]
            raise DataError(f"format {name!r} needs column(s) for {', '.join(missing)}; the dataset has: "
                            f"{', '.join(columns)} (in {src})", where="data.fields", hint=header_hint(src))  # fmt: skip
        return name, mapping
    if recipe.data.prompt_template and recipe.data.answer_template:
        return "custom", {**{c: c for c in columns}, **fields}
    for name, layout in LAYOUTS.items():
        mapping = find(layout)
        if mapping is not None:
            return name, mapping
    raise DataError(f"cannot tell the row layout from the columns: {', '.join(columns)} (in {src})",
                    where="data.format", hint=header_hint(src) or f"set data.format ({', '.join(LAYOUTS)}) "
                    "and data.fields, or prompt/answer_template")  # fmt: skip


class _Bad(Exception):
    """A malformed row: the reason (after 'malformed: ') is the message."""


class _Row:
    """Role and column values of one row, cleaned on access; missing/wrong-typed values raise _Bad."""

    def __init__(self, row: Mapping[str, Any], mapping: dict[str, str], clean: Any):
        self.row, self.mapping, self.clean = row, mapping, clean

    def names(self) -> set[str]:
        return set(self.mapping) | set(self.row) | {c.lower() for c in self.row}

    def raw(self, name: str) -> Any:
        if name in self.mapping:
            return self.row.get(self.mapping[name])
        if name in self.row:
            return self.row[name]
        return next((v for k, v in self.row.items() if k.lower() == name), None)

    def __getitem__(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            raise _Bad(f"missing field '{name}'")
        if isinstance(value, list) and value and all(isinstance(v, (str, int, float)) for v in value):
            value = ", ".join(map(str, value))  # e.g. several codes in one cell
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise _Bad(f"field '{name}' is {type(value).__name__}, not text")
        text = clean_text(
            str(value), strip_html=self.clean.strip_html, collapse=self.clean.collapse_whitespace
        )
        if not text:
            raise _Bad(f"empty field '{name}'")
        return text


class _Namespace(dict):
    def __init__(self, row: _Row):
        super().__init__()
        self.row = row

    def __missing__(self, key: str) -> str:
        return self.row[key]


def template_names(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f]


def _turns(value: Any, row: _Row) -> list[dict[str, str]]:
    """A `messages` cell as role/content turns (OpenAI or ShareGPT keys); _Bad when it is not one."""
    if isinstance(value, str):
        return [{"role": "user", "content": row["messages"]}]
    if not isinstance(value, list) or not value:
        raise _Bad("field 'messages' is not a list of turns")
    turns = []
    for t in value:
        if not isinstance(t, Mapping):
            raise _Bad("a turn in 'messages' is not a table")
        role, content = t.get("role", t.get("from")), t.get("content", t.get("value"))
        if not isinstance(role, str) or not isinstance(content, str):
            raise _Bad("a turn in 'messages' lacks a text role/content")
        text = clean_text(content, strip_html=row.clean.strip_html, collapse=row.clean.collapse_whitespace)
        if not text:
            raise _Bad("empty turn in 'messages'")
        turns.append({"role": ROLE_NAMES.get(role.lower(), role.lower()), "content": text, "speaker": role})
    return turns


def map_row(row: Mapping[str, Any], layout: str, mapping: dict[str, str], recipe: Recipe) -> dict[str, Any]:
    """One source row -> {'messages': system+user turns, 'answer': str}; raises _Bad when malformed."""
    d = recipe.data
    r = _Row(row, mapping, d.clean)
    spec = LAYOUTS.get(layout, Layout({}))
    system = [{"role": "system", "content": d.system_prompt}] if d.system_prompt else []
    if layout == "text":
        return {"messages": [], "answer": r["text"]}
    if layout == "messages" and not d.prompt_template:
        turns = _turns(r.raw("messages"), r)
        if "answer" in mapping or d.answer_template:  # a transcript to label: one user turn
            if len(turns) > 1:
                transcript = "\n".join(f"{t['speaker'].capitalize()}: {t['content']}" for t in turns)
                turns = [{"role": "user", "content": transcript}]
            answer = (d.answer_template or "{answer}").format_map(_Namespace(r))
        else:
            if turns[-1]["role"] != "assistant":
                raise _Bad("the last turn in 'messages' is not the assistant's")
            answer = turns.pop()["content"]
        if not turns or turns[-1]["role"] != "user":
            raise _Bad("'messages' does not end with a user turn before the answer")
        if turns[0]["role"] == "system":
            system = []
        return {
            "messages": system + [{"role": t["role"], "content": t["content"]} for t in turns],
            "answer": answer,
        }
    if layout == "preference":
        return _pair(r, d, system)
    prompt = (d.prompt_template or spec.prompt).format_map(_Namespace(r))
    if layout == "alpaca" and not d.prompt_template and r.raw("input") not in (None, ""):
        prompt += "\n\n" + r["input"]
    answer = (d.answer_template or spec.answer).format_map(_Namespace(r))
    return {"messages": system + [{"role": "user", "content": prompt}], "answer": answer.strip()}


def _pair(r: _Row, d: Any, system: list[dict[str, str]]) -> dict[str, Any]:
    """A preference row: the prompt (text, a template, or chat turns ending with the user's), the chosen
    answer as 'answer' and the rejected one (each text, or one assistant turn as chat turns)."""
    raw = r.raw("prompt")
    if isinstance(raw, list) and not d.prompt_template:
        turns = _turns(raw, r)
        if turns[-1]["role"] != "user":
            raise _Bad("the prompt's turns do not end with a user turn")
        messages = (system if turns[0]["role"] != "system" else []) + [
            {"role": t["role"], "content": t["content"]} for t in turns
        ]
    else:
        prompt = (d.prompt_template or "{prompt}").format_map(_Namespace(r))
        messages = system + [{"role": "user", "content": prompt}]
    sides = {}
    for side in ("chosen", "rejected"):
        value = r.raw(side)
        if isinstance(value, list) and len(value) == 1 and isinstance(value[0], Mapping):
            turn = _turns(value, r)[0]  # conversational pairs: one assistant turn
            if turn["role"] != "assistant":
                raise _Bad(f"the turn in '{side}' is not the assistant's")
            sides[side] = turn["content"]
        else:
            sides[side] = r[side]
    if sides["chosen"] == sides["rejected"]:
        raise _Bad("chosen and rejected are the same text")
    return {"messages": messages, "answer": sides["chosen"], "rejected": sides["rejected"]}


def _check_templates(recipe: Recipe, layout: str, names: set[str]) -> None:
    for key in ("prompt_template", "answer_template"):
        tmpl = getattr(recipe.data, key)
        if not tmpl:
            continue
        try:
            unknown = [n for n in template_names(tmpl) if n not in names]
        except ValueError as exc:
            raise DataError(f"not a valid format string: {exc}", where=f"data.{key}") from None
        if unknown:
            raise DataError(f"unknown field(s) {', '.join(unknown)}; available: {', '.join(sorted(names))}",
                            where=f"data.{key}")  # fmt: skip


def map_rows(ds: Any, recipe: Recipe, report: RowReport, split: str = "train") -> list[dict[str, Any]]:
    """Map and clean one split's rows; malformed/filtered rows go to ``report``."""
    if not len(ds):  # nothing to tell a layout from (every line of the file may have been malformed)
        return []
    columns = list(ds.column_names)
    layout, mapping = resolve_layout(recipe, columns)
    report.layout, report.columns = layout, columns
    _check_templates(recipe, layout, _Row(ds[0], mapping, recipe.data.clean).names())
    c = recipe.data.clean
    numbers = getattr(ds, "numbers", None)  # line numbers of a JSON Lines file's rows
    out = []
    for i, row in enumerate(ds):
        report.source_rows += 1
        n = numbers[i] if numbers else i + 1
        where = f"row {n}" if split == "train" else f"{split} row {n}"
        try:
            mapped = map_row(row, layout, mapping, recipe)
        except _Bad as exc:
            report.drop(f"{MALFORMED}: {exc}", f"{where}: {_short(row)}")
            continue
        chars = sum(len(m["content"]) for m in mapped["messages"]) + len(mapped["answer"])
        if len(mapped["answer"]) < c.min_chars:
            report.drop(f"answer shorter than {c.min_chars} chars", f"{where}: {mapped['answer']!r}")
        elif c.max_chars and chars > c.max_chars:
            report.drop(f"longer than {c.max_chars} chars", f"{where}: {chars} chars")
        else:
            mapped["row"], mapped["_split"] = n, split
            out.append(mapped)
    return out


def _short(row: Mapping[str, Any]) -> str:
    text = json.dumps(dict(row), default=str, ensure_ascii=False)
    return text if len(text) <= 140 else text[:137] + "..."


# ---- splitting & the table -----------------------------------------------------------------------


def carve(rows: list[dict[str, Any]], ratios: dict[str, float], seed: int) -> dict[str, list[dict[str, Any]]]:
    """Shuffle ``rows`` with ``seed`` and cut them by ``ratios`` (normalised); every named split with a
    positive ratio gets at least one row when there are enough rows."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    total = sum(ratios.values()) or 1.0
    n = len(rows)
    sizes = {}
    for name, ratio in ratios.items():
        if name == "train":
            continue
        k = round(n * ratio / total)
        sizes[name] = max(k, 1) if ratio > 0 and n >= len(ratios) else k
    sizes["train"] = n - sum(sizes.values())
    out, at = {}, 0
    for name in ratios:
        out[name] = [rows[i] for i in order[at : at + sizes[name]]]
        at += sizes[name]
    return out


def load_rows(recipe: Recipe) -> tuple[dict[str, list[dict[str, Any]]], RowReport]:
    """Rows per split (train/val/test) after mapping, cleaning, de-duplication and splitting."""
    d = recipe.data
    report = RowReport()
    named = {"train": d.train_split, "val": d.val_split, "test": d.test_split}
    mapped: list[dict[str, Any]] = []
    for split, name in named.items():
        if name:
            mapped += map_rows(load_split(recipe, name, report), recipe, report, split)
    if not report.source_rows:
        raise DataError(f"{d.source} has no rows (a header alone?)", where="data.source")
    mapped = check_icd_labels(recipe, mapped, report)  # labels that are not codes count as malformed
    if report.source_rows and report.malformed / report.source_rows > d.malformed_threshold:
        worst = max((r for r in report.dropped if r.startswith(MALFORMED)), key=report.dropped.__getitem__)
        raise DataError(
            f"{report.malformed} of {report.source_rows} rows are malformed, above data.malformed_threshold="
            f"{d.malformed_threshold:g}; most common: {worst} (x{report.dropped[worst]}), e.g. {report.examples[worst][0]}",
            where=d.source,
        )
    pool = dedupe(mapped, report)  # across splits too, so that they stay disjoint
    if not pool:
        raise DataError(f"no rows left after cleaning ({_drops(report)})", where=d.source)
    by_split: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS if named[s]}
    for r in pool:
        by_split[r.pop("_split")].append(r)
    train = by_split["train"]
    random.Random(d.seed).shuffle(train)
    if d.max_samples:
        train = train[: d.max_samples]
    ratios = dict(zip(SPLITS, d.split_ratios, strict=True))
    carve_from = {s: ratios[s] for s in SPLITS if s == "train" or s not in by_split}
    splits = carve(train, carve_from, d.seed) if len(carve_from) > 1 else {"train": train}
    for s in ("val", "test"):
        splits.setdefault(s, by_split.get(s, []))
    splits = prompt_overlap(splits, report, d.clean.drop_overlap)
    n, (lo, hi) = len(splits["train"]), d.train_part  # a seeded part of the train split (val, test whole)
    splits["train"] = splits["train"][round(lo * n) : round(hi * n)]
    if not splits["train"]:
        raise DataError(
            f"the train split is empty after cleaning and splitting ({_drops(report)})", where=d.source
        )
    report.kept = {s: len(splits[s]) for s in SPLITS}
    return splits, report


def _drops(report: RowReport) -> str:
    parts = [f"{r}: {n}" for r, n in report.dropped.items()]
    return f"{report.source_rows} rows read" + ("; dropped " + ", ".join(parts) if parts else "")


def load_table(recipe: Recipe):
    """Raw rows after mapping and cleaning as a `datasets.DatasetDict` with train/val/test splits
    (columns: messages = system+user turns, answer, row = 1-based row number in the source)."""
    import datasets

    splits, _ = load_rows(recipe)
    features = datasets.Features(
        {
            "messages": [{"role": datasets.Value("string"), "content": datasets.Value("string")}],
            "answer": datasets.Value("string"),
            "row": datasets.Value("int64"),
        }
    )
    return datasets.DatasetDict({s: datasets.Dataset.from_list(splits[s], features=features) for s in SPLITS})
