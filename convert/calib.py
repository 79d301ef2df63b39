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


def file_sequences(path: Path, hf_dir: Path, budget: int = DEFAULT_BUDGET) -> tuple[list[list[int]], str]:
    """``--calib FILE``: JSONL (a "text" or "messages" field a line) or plain text, sampled to ``budget``."""
    from transformers import AutoTokenizer

    if not Path(path).is_file():
        raise ConvertError("no such calibration file", where=str(path))
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConvertError(f"calibration file is not UTF-8 (offset {exc.start})", where=str(path)) from None
    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    seqs: list[list[int]] = []
    if Path(path).suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                seqs.append(list(tok(_jsonl_text(line, n, path, tok))["input_ids"])[:MAX_SEQ])
    else:
        ids = list(tok(text)["input_ids"])
        seqs = [ids[i : i + MAX_SEQ] for i in range(0, len(ids), MAX_SEQ)]
    try:
        seqs = sample(seqs, budget)
    except ConvertError as exc:
        raise ConvertError(exc.message, where=str(path)) from None
    return seqs, f"{Path(path).name}: {len(seqs)} texts"


def _jsonl_text(line: str, n: int, path: Path, tok: Any) -> str:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ConvertError(f"line {n} is not JSON ({exc.msg})", where=str(path)) from None
    if isinstance(row, dict) and isinstance(row.get("messages"), list) and tok.chat_template:
        return tok.apply_chat_template(row["messages"], tokenize=False)
    if isinstance(row, dict) and isinstance(row.get("text"), str):
        return row["text"]
    raise ConvertError(f"line {n} has no 'text' string or 'messages' list", where=str(path))
