"""A small but real run directory for the eval tests: tiny Qwen2 base, a trained PEFT adapter, a recipe
over a jsonl of ICD-10 questions, and an f32 GGUF of the base written by medkit's own converter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

CODES = ["I10", "E11.9", "J18.9", "J45.909", "N18.30", "K21.9", "M54.50", "F32.9"]  # billable (2026)


def write_recipe(run: Path, base: Path, data: Path, extra: str = "") -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "recipe.toml").write_text(
        f"""name = "{run.name}"
[model]
base = "{base}"
[data]
source = "{data}"
split_ratios = [0.7, 0.1, 0.2]
clean.dedupe = false
[eval]
n = 6
max_new_tokens = 6
batch_size = 4
constrain = "none"  # the '+icd10' columns: tests/eval/test_constrained.py
[eval.prompts]
in_domain = ["What is the ICD-10-CM code for essential hypertension?"]
out_of_domain = ["Write one sentence about the sea."]
{extra}"""
    )


def train_adapter(run: Path, base: Path, steps: int = 30) -> None:
    """A few real LoRA steps on the run's train split, so that 'tuned' is measurably better."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from medkit.data.tokens import prepare
    from medkit.recipe import load_recipe

    recipe = load_recipe(run / "recipe.toml")
    tok = AutoTokenizer.from_pretrained(str(base))
    train = prepare(recipe, tok).train
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32),
        LoraConfig(
            r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
        ),
    )
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for step in range(steps):
        ex = train[step % len(train)]
        out = model(input_ids=torch.tensor([ex.input_ids]), labels=torch.tensor([ex.labels]))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(str(run / "adapter"))
    tok.save_pretrained(str(run / "adapter"))


@pytest.fixture(scope="session")
def eval_assets(tmp_path_factory) -> dict[str, Path]:
    """Built once per session: base model, data, a trained run with an f32 GGUF, an unrelated GGUF."""
    from medkit.convert.gguf.writer import write_gguf
    from tests.factories import build_tiny_model

    root = tmp_path_factory.mktemp("eval")
    base = build_tiny_model("qwen2", root / "base")
    rows = [
        {"question": f"Which ICD-10-CM code fits case {i}?", "answer": c} for i, c in enumerate(CODES * 5)
    ]
    data = root / "codes.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = root / "runs" / "tiny"
    write_recipe(run, base, data)
    train_adapter(run, base)
    write_gguf(base, run / "export" / "tiny-f32.gguf", "f32")
    other = build_tiny_model(
        "qwen2", root / "other", hidden_size=32, num_attention_heads=2, num_key_value_heads=1
    )
    write_gguf(other, root / "other-f32.gguf", "f32")
    return {"root": root, "base": base, "data": data, "run": run, "other_gguf": root / "other-f32.gguf"}


@pytest.fixture
def tiny_run(eval_assets, tmp_path) -> Path:
    """A fresh copy of the run directory (tests write eval.* into it)."""
    import shutil

    dst = tmp_path / "runs" / "tiny"
    shutil.copytree(eval_assets["run"], dst)
    return dst
