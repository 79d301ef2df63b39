"""Calibration data for the importance matrix and GPTQ: the run's own training conversations (prompt and
answer, rendered and tokenized as trained) or a ``--calib`` file, sampled to a token budget.

    seqs, what = run_sequences(run, hf_dir)          # [[token ids], ...] and a line saying what they are
    seqs, what = file_sequences(path, hf_dir)        # JSONL ("text" or "messages") or plain text
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from medkit.errors import ConvertError

DEFAULT_BUDGET = 8192  # calibration tokens: ~1.8 TFLOP through SmolLM2-135M (under 30 s on 2 idle cores);
# 16384 tokens gave q4_0 KL 0.2150 vs 0.2166 at 8192 (SmolLM2, demo rows): twice the time for 1%
MAX_SEQ = 512  # a calibration text longer than this is cut into windows of this many tokens


def sample(seqs: list[list[int]], budget: int = DEFAULT_BUDGET, seed: int = 0) -> list[list[int]]:
    """Rows in a seeded random order, taken until ``budget`` tokens; ConvertError when there are none."""
    seqs = [s for s in seqs if len(s) >= 2]
    if not seqs:
        raise ConvertError("the calibration set is empty (no text of 2 tokens or more)")
    if budget < 2:
        raise ConvertError(f"calibration token budget {budget} is too small (need at least 2)")
    order = list(range(len(seqs)))
    random.Random(seed).shuffle(order)
    out, total = [], 0
    for i in order:
        if total >= budget:
            break
        out.append(seqs[i][: budget - total] if budget - total >= 2 else seqs[i][:2])
        total += len(out[-1])
    return out


def run_sequences(run: Any, hf_dir: Path, budget: int = DEFAULT_BUDGET) -> tuple[list[list[int]], str]:
    """The run's training split as token ids (prompt and answer, as trained), sampled to ``budget``."""
    from transformers import AutoTokenizer

    from medkit.data.tokens import prepare
    from medkit.errors import MedkitError
    from medkit.recipe import load_recipe

    if not run.recipe.is_file():
        raise ConvertError("the run has no recipe.toml to take calibration data from", where=str(run.path))
    try:
        recipe = load_recipe(run.recipe)
        tok = AutoTokenizer.from_pretrained(str(hf_dir))
        prepared = prepare(recipe, tok)
    except MedkitError as exc:
        raise ConvertError(f"cannot read the run's training data for the importance matrix: {exc}") from exc
    seqs = sample([e.input_ids for e in prepared.train], budget, seed=recipe.train.seed)
    what = f"medkit run {run.name}: train split, {len(seqs)} of {len(prepared.train)} rows"
    return seqs, what


# a floor against blank or near-empty files (2 tokens were labelled calibrated), not a quality bar (that
# would take hundreds of tokens): fewer is refused in one line
MIN_TOKENS = 32


def file_sequences(path: Path, hf_dir: Path, budget: int = DEFAULT_BUDGET) -> tuple[list[list[int]], str]:
    """``--calib FILE``: JSONL (a "text" or "messages" field a line), a JSON array (of such objects or of
    strings) or plain text, sampled to ``budget``. Every text longer than MAX_SEQ tokens is cut into
    windows of MAX_SEQ; blank texts are skipped; fewer than MIN_TOKENS tokens in all is a ConvertError."""
    from transformers import AutoTokenizer

    if not Path(path).is_file():
        raise ConvertError("no such calibration file", where=str(path))
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConvertError(f"calibration file is not UTF-8 (offset {exc.start})", where=str(path)) from None
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        rows = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        texts = [_row_text(_parse(line, f"line {n}", path), f"line {n}", path, tok) for n, line in rows]
    elif suffix == ".json":
        data = _parse(text, "the file", path)
        if not isinstance(data, list):
            raise ConvertError(
                "a .json calibration file must hold an array of texts or rows", where=str(path)
            )
        texts = [_row_text(row, f"item {i}", path, tok) for i, row in enumerate(data, 1)]
    else:
        texts = [text]
    seqs = [w for t in texts if t.strip() for ids in [list(tok(t)["input_ids"])] for w in _windows(ids)]
    try:
        seqs = sample(seqs, budget)
    except ConvertError as exc:
        raise ConvertError(exc.message, where=str(path)) from None
    tokens = sum(map(len, seqs))
    if tokens < min(MIN_TOKENS, budget):
        raise ConvertError(
            f"the calibration texts give {tokens} tokens; an importance matrix needs at least {MIN_TOKENS}",
            where=str(path),
        )
    return seqs, f"{Path(path).name}: {len(seqs)} texts"


def _windows(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + MAX_SEQ] for i in range(0, len(ids), MAX_SEQ)]


def _parse(text: str, what: str, path: Path) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConvertError(f"{what} is not JSON ({exc.msg})", where=str(path)) from None


def _row_text(row: Any, what: str, path: Path, tok: Any) -> str:
    """The text of one calibration row: a string, {"text": str}, or {"messages": [{role, content}, ...]}
    rendered by the model's chat template."""
    if isinstance(row, str):
        return row
    if isinstance(row, dict) and "messages" in row:
        msgs = row["messages"]
        ok = isinstance(msgs, list) and msgs and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in msgs
        )  # fmt: skip
        if not ok:
            raise ConvertError(
                f"{what}: 'messages' must be a list of {{role, content}} strings", where=str(path)
            )
        if not tok.chat_template:
            raise ConvertError(f"{what} has 'messages' but the model has no chat template: give 'text' rows",
                               where=str(path))  # fmt: skip
        try:
            return tok.apply_chat_template(msgs, tokenize=False)
        except Exception as exc:  # the template's own checks (roles out of order, ...): jinja2 raises them
            msg = " ".join(str(exc).split())[:120]
            raise ConvertError(
                f"{what}: the chat template refuses its messages ({msg})", where=str(path)
            ) from None
    if isinstance(row, dict) and isinstance(row.get("text"), str):
        return row["text"]
    raise ConvertError(f"{what} has no 'text' string or 'messages' list", where=str(path))
