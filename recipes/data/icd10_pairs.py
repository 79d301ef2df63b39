"""Preference pairs for the ICD-10-CM DPO demo, made from icd10_demo.jsonl and the SFT demo's own splits.

    python recipes/data/icd10_pairs.py           # rewrite icd10_dpo_demo/{train,validation,test}.jsonl
    python recipes/data/icd10_pairs.py --check   # exit 1 if a checked-in file differs

The splits are the ones `medkit train recipes/smollm2_icd10_demo.toml` trains, validates and tests on
(medkit.data.rows.load_rows on that recipe), so a DPO run started from the SFT run never sees a test
encounter. Each pair's chosen answer is the right code. Rejected answers:
- a wrong code of the same ICD-10-CM chapter (another demo code of that chapter, the kind of plausible
  confusion an SFT model makes; a valid billable code of the chapter from simple-icd-10-cm when the demo
  has no other), and
- an invalid code: the right code changed into a string that is not in the CMS code set.
Every training encounter gives both pairs; val and test give one (alternating), so each is scored once.
Deterministic (random.Random(0)); demo data, not medical advice.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import simple_icd_10_cm as cm

HERE = Path(__file__).resolve().parent
OUT = HERE / "icd10_dpo_demo"
SFT_RECIPE = HERE.parent / "smollm2_icd10_demo.toml"
FILES = {"train": "train.jsonl", "val": "validation.jsonl", "test": "test.jsonl"}


def chapter(code: str) -> str:
    return cm.get_ancestors(code)[-1]


def invalid_code(code: str, rng: random.Random) -> str:
    """A code-shaped string near `code` that the CMS code set does not contain."""
    letters = "ABCDEFGHJKLMNPQRSTVWXYZ"
    while True:
        kind = rng.randrange(3)
        if kind == 0:  # an extra character
            cand = code + rng.choice("0123456789X") if "." in code else code + "." + rng.choice("0123456789")
        elif kind == 1:  # a changed last character
            cand = code[:-1] + rng.choice("0123456789X".replace(code[-1], ""))
        else:  # the category under another letter
            cand = rng.choice(letters.replace(code[0], "")) + code[1:]
        if not cm.is_valid_item(cand) and cand != code:
            return cand


def same_chapter_code(code: str, demo_codes: list[str], rng: random.Random) -> str:
    others = [c for c in demo_codes if c != code and chapter(c) == chapter(code)]
    if not others:  # the demo holds one code of this chapter: a billable leaf of the same chapter
        others = [c for c in cm.get_descendants(chapter(code)) if cm.is_leaf(c) and c != code][:200]
    return rng.choice(others)


def build() -> dict[str, str]:
    sys.path.insert(0, str(HERE.parents[1]))
    from medkit.data.rows import load_rows
    from medkit.recipe import load_recipe

    splits, _ = load_rows(load_recipe(SFT_RECIPE))
    demo_codes = sorted({r["answer"] for s in splits.values() for r in s})
    rng = random.Random(0)
    out = {}
    for split, rows in splits.items():
        lines = []
        for i, row in enumerate(rows):
            code, prompt = row["answer"], row["messages"][-1]["content"]
            wrong = {
                "same_chapter": same_chapter_code(code, demo_codes, rng),
                "invalid": invalid_code(code, rng),
            }
            kinds = list(wrong) if split == "train" else [list(wrong)[i % 2]]
            for kind in kinds:
                pair = {"prompt": prompt, "chosen": code, "rejected": wrong[kind], "kind": kind}
                lines.append(json.dumps(pair, ensure_ascii=False) + "\n")
        out[FILES[split]] = "".join(lines)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a checked-in file differs")
    args = parser.parse_args()
    stale = []
    for name, text in build().items():
        path = OUT / name
        if args.check:
            if not path.is_file() or path.read_text() != text:
                stale.append(name)
            continue
        OUT.mkdir(exist_ok=True)
        path.write_text(text)
        print(f"wrote {path} ({text.count(chr(10))} pairs)")
    if stale:
        print(f"out of date: {', '.join(stale)} (run python recipes/data/icd10_pairs.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
