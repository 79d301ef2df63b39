"""Small builders shared by the data-pipeline tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medkit.data.tokens import IGNORE, Prepared
from medkit.recipe import Recipe, recipe_from_dict

QA_ROWS = [
    {"question": "What is asthma?", "answer": "Asthma is a chronic disease of the airways.", "topic": "resp"},
    {"question": "What causes gout?", "answer": "Uric acid crystals that settle in the joints.", "topic": "joint"},
    {"question": "How is hypothyroidism treated?", "answer": "With daily levothyroxine tablets.", "topic": "endo"},
    {"question": "What is anemia?", "answer": "A lack of healthy red blood cells or hemoglobin.", "topic": "blood"},
    {"question": "What is hypertension?", "answer": "Blood pressure of 140/90 mmHg or higher.", "topic": "heart"},
    {"question": "What is a migraine?", "answer": "A throbbing headache, often on one side, with nausea.", "topic": "neuro"},
    {"question": "What is vitamin D for?", "answer": "It helps the body absorb calcium for strong bones.", "topic": "nutr"},
    {"question": "What is atrial fibrillation?", "answer": "An irregular, often rapid heart rhythm.", "topic": "heart"},
    {"question": "What is dehydration?", "answer": "Losing more fluid than you take in.", "topic": "general"},
    {"question": "What is pneumonia?", "answer": "An infection that inflames the air sacs of the lungs.", "topic": "resp"},
]  # fmt: skip


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def qa_rows(n: int) -> list[dict[str, Any]]:
    """n distinct Q&A rows (the ten above, then numbered variants)."""
    out = []
    for i in range(n):
        base = QA_ROWS[i % len(QA_ROWS)]
        suffix = "" if i < len(QA_ROWS) else f" (case {i})"
        out.append({**base, "question": base["question"] + suffix})
    return out


def make_recipe(source: Path | str, base: str = "tiny/model", **sections: dict[str, Any]) -> Recipe:
    """A validated recipe over ``source``; keyword arguments are extra keys per section."""
    raw: dict[str, Any] = {"model": {"base": base}, "data": {"source": str(source)}}
    for name, keys in sections.items():
        raw.setdefault(name, {}).update(keys)
    return recipe_from_dict(raw)


def trained_ids(ex) -> list[int]:
    return [t for t, lab in zip(ex.input_ids, ex.labels, strict=True) if lab != IGNORE]


def assert_exact_masking(prepared: Prepared, tok) -> int:
    """Every example: labels mask exactly the prompt; the trained tokens decode to the answer and end
    with the end-of-turn token; BOS appears once at most. Returns the number of examples checked."""
    checked = 0
    bos = tok.bos_token_id
    for split in ("train", "val", "test"):
        examples = prepared.split(split)
        assert len(examples) == len(prepared.rows[split]) == len(prepared.source_rows[split])
        for ex, conv, row in zip(examples, prepared.rows[split], prepared.source_rows[split], strict=True):
            assert conv.row == row
            answer = conv.answer
            trained = trained_ids(ex)
            n = len(trained)
            assert n > 0
            assert ex.input_ids[-n:] == trained, "the trained tokens are not one span at the end"
            assert all(lab == IGNORE for lab in ex.labels[:-n])
            assert trained[-1] == prepared.eot_token_id
            assert prepared.eot_token_id not in trained[:-1]
            assert tok.decode(trained[:-1], skip_special_tokens=False).strip() == answer
            if bos is not None:
                assert ex.input_ids[:2] != [bos, bos], "double BOS"
            checked += 1
    return checked
