"""`medkit eval` on the real offline model: SmolLM2-135M (dequantized) vs the Q4_1 GGUF it came from."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medkit.eval.verb import evaluate_run

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def test_smollm2_hf_vs_its_gguf(smollm2_gguf, smollm2_hf, tmp_path):
    from peft import LoraConfig, get_peft_model

    from medkit.models import load_model
    from medkit.recipe import load_recipe

    recipe = load_recipe(REPO / "recipes" / "smollm2_demo.toml")
    run = tmp_path / "smollm2_demo"
    run.mkdir()
    (run / "recipe.toml").write_text(recipe.to_toml())
    # a freshly initialised LoRA (B = 0): 'tuned' must score exactly like 'base'
    model = get_peft_model(
        load_model(recipe.model.base, dtype="float32"), LoraConfig(r=4, target_modules=["q_proj"])
    )
    model.save_pretrained(str(run / "adapter"))
    (run / "export").mkdir()
    os.symlink(smollm2_gguf, run / "export" / "smollm2_demo-q4_1.gguf")

    report = evaluate_run(run, n=3, overrides=["eval.max_new_tokens=8", "eval.batch_size=3"])
    table = report["table"]
    assert list(table) == ["base", "tuned", "q4_1"] and report["task"] == "qa"
    assert table["tuned"]["loss"] == pytest.approx(table["base"]["loss"], abs=1e-6)
    # transformers on the dequantized weights vs llama.cpp on the Q4_1 file: same model, same token ids
    assert table["q4_1"]["loss"] == pytest.approx(table["base"]["loss"], rel=0.03)
    assert 1.0 < table["base"]["ppl"] < 100.0
    for name in table:
        assert 0.0 <= table[name]["stop_rate"] <= 1.0
        assert all(s["answer"] for s in report["models"][name]["samples"])
    assert (run / "eval.md").is_file() and (run / "eval.png").is_file()
