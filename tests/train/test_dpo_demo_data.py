"""The DPO demo's pairs: up to date with their generator, made on the SFT demo's own splits (no test
encounter is trained on), each rejected code wrong in the way its kind says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medkit.data.rows import load_rows
from medkit.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def test_pairs_file_is_what_the_generator_writes():
    pytest.importorskip("simple_icd_10_cm")
    done = subprocess.run(
        [sys.executable, str(RECIPES / "data" / "icd10_pairs.py"), "--check"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_dpo_demo_splits_are_the_sft_demo_splits():
    sft, _ = load_rows(load_recipe(RECIPES / "smollm2_icd10_demo.toml"))
    dpo, report = load_rows(load_recipe(RECIPES / "smollm2_icd10_dpo_demo.toml"))
    assert report.layout == "preference" and not report.dropped

    def encounters(rows):
        return [(r["messages"][-1]["content"], r["answer"]) for r in rows]

    for split in ("val", "test"):  # one pair per encounter, in the SFT split's order
        assert encounters(dpo[split]) == encounters(sft[split])
    assert set(encounters(dpo["train"])) == set(encounters(sft["train"]))
    assert len(dpo["train"]) == 2 * len(sft["train"])  # vs a same-chapter code and vs an invalid code


def test_rejected_codes_are_wrong_as_their_kind_says():
    cm = pytest.importorskip("simple_icd_10_cm")
    import json

    for name in ("train", "validation", "test"):
        for line in (RECIPES / "data" / "icd10_dpo_demo" / f"{name}.jsonl").read_text().splitlines():
            pair = json.loads(line)
            assert cm.is_valid_item(pair["chosen"]) and pair["rejected"] != pair["chosen"]
            if pair["kind"] == "invalid":
                assert not cm.is_valid_item(pair["rejected"])
            else:
                assert cm.is_valid_item(pair["rejected"])
                assert cm.get_ancestors(pair["rejected"])[-1] == cm.get_ancestors(pair["chosen"])[-1]
