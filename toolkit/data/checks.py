"""What is checked on the mapped rows before they are split and tokenized: ICD-10-CM labels, and the
prompts that one split shares with another (leakage).

    rows = check_icd_labels(recipe, rows, report)     # labels that are not billable codes: malformed rows
    rows = dedupe(rows, report)                       # exact duplicates, across splits too
    splits = prompt_overlap(splits, report, drop)     # held-out prompts also in train, normalized

An ICD-10 recipe (eval.task icd10, or auto with most answers code-shaped) must have labels that are
billable codes of the pinned code table (medkit.icd10). A row whose label is not one is a malformed row:
dropped and reported with the nearest billable codes as hints, counted against data.malformed_threshold
like every other malformed row, so that `medkit data`, `train` and `eval` all refuse or drop it alike.

Exact duplicates are dropped before splitting (dedupe); a prompt that differs only in
case, spacing or punctuation, or is asked again with another answer, is caught here: the number of val
and test rows whose normalized prompt is also a train prompt is reported (`medkit data`, run.json), and
``data.clean.drop_overlap`` drops those train rows (the held-out splits stay as they are).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from medkit.recipe import Recipe

MALFORMED = "malformed"  # reason prefix of rows that count towards data.malformed_threshold
NOT_A_CODE = f"{MALFORMED}: label is not a billable ICD-10-CM code"
OVERLAP = "prompt also in val/test (data.clean.drop_overlap)"
CODE_SHARE = 0.8  # eval.task auto: answers this share code-shaped make an ICD-10 data set
_CODE = re.compile(r"^[A-Z][0-9][0-9A-Z](\.?[0-9A-Z]{1,4})?$", re.IGNORECASE)
_CATEGORY = re.compile(r"^[A-Z][0-9][0-9A-Z]", re.IGNORECASE)  # a code's category: nearest codes exist
_WORD = re.compile(r"[^\w]+")


def _label(answer: str) -> str:
    """The label an answer holds: the answer itself (an ICD-10 recipe's answer template is '{code}')."""
    return answer.strip()


def dedupe(rows: list[dict[str, Any]], report: Any) -> list[dict[str, Any]]:
    """The rows without exact (prompt, answer) duplicates; each one dropped goes to ``report``."""
    seen: set[str] = set()
    out = []
    for row in rows:
        key = json.dumps([row["messages"], row["answer"], row.get("rejected")], sort_keys=True)
        if key in seen:
            report.drop("exact duplicate", f"row {row['row']}: {row['answer'][:60]!r}")
            continue
        seen.add(key)
        out.append(row)
    return out


def is_icd_recipe(recipe: Recipe, rows: list[dict[str, Any]]) -> bool:
    """Whether the rows' answers are ICD-10-CM labels: eval.task icd10, or auto with most code-shaped."""
    task = recipe.eval.task
    if task != "auto" or not rows:
        return task == "icd10"
    shaped = sum(bool(_CODE.match(_label(r["answer"]))) for r in rows)
    return shaped >= CODE_SHARE * len(rows)


def check_icd_labels(recipe: Recipe, rows: list[dict[str, Any]], report: Any) -> list[dict[str, Any]]:
    """The rows whose label is a billable code of the pinned release; the others go to ``report`` as
    malformed, each example naming its row, its label and the nearest billable codes."""
    if not is_icd_recipe(recipe, rows):
        return rows
    from medkit import icd10

    reason = f"{NOT_A_CODE} ({icd10.release()})"
    kept = []
    for r in rows:
        label = _label(r["answer"])
        if icd10.is_billable(label):
            kept.append(r)
            continue
        near = icd10.nearest_codes(label) if _CATEGORY.match(label) else []
        hint = f"; nearest: {', '.join(near)}" if near else "; not code-shaped"
        where = f"row {r['row']}" if r.get("_split", "train") == "train" else f"{r['_split']} row {r['row']}"
        report.drop(reason, f"{where}: {label[:40]!r}{hint}")
    return kept


def prompt_key(row: dict[str, Any]) -> str:
    """A prompt as compared across splits: the user and assistant turns (not the system prompt), case
    folded, every run of punctuation and spacing one space."""
    turns = [m["content"] for m in row.get("messages", []) if m.get("role") != "system"]
    return _WORD.sub(" ", "\n".join(turns).casefold()).strip()


def prompt_overlap(
    splits: dict[str, list[dict[str, Any]]], report: Any, drop: bool
) -> dict[str, list[dict[str, Any]]]:
    """Count the val/test rows whose prompt_key is also a train row's (report.overlap); with ``drop``,
    remove those train rows (each reported) so that no held-out prompt was trained on."""
    train = splits.get("train", [])
    train_keys = {prompt_key(r) for r in train if r.get("messages")}
    held: set[str] = set()
    for s in ("val", "test"):
        keys = [prompt_key(r) for r in splits.get(s, []) if r.get("messages")]
        report.overlap[s] = sum(k in train_keys for k in keys)
        held.update(keys)
    if not drop or not held & train_keys:
        return splits
    kept = []
    for r in train:
        if r.get("messages") and prompt_key(r) in held:
            report.drop(OVERLAP, f"row {r['row']}: {prompt_key(r)[:60]!r}")
        else:
            kept.append(r)
    return {**splits, "train": kept}
