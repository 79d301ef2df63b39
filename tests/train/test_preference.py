"""DPO and ORPO from pair rows on a tiny model: the first DPO loss is ln 2, logs, bad rows, init_from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from medkit.errors import DataError, TrainError
from medkit.train.verb import train
from tests.train.conftest import FACTS

WRONG = ["a cold bath", "more salt", "antibiotics", "nothing at all"]


def pair_rows(n: int = 40) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        cond, treat = FACTS[i % len(FACTS)]
        rows.append(
            {
                "prompt": f"How is {cond} treated? ({i // len(FACTS)})",
                "chosen": f"{cond.capitalize()} is treated with {treat}.",
                "rejected": f"{cond.capitalize()} is treated with {WRONG[i % len(WRONG)]}.",
            }
        )
    return rows


@pytest.fixture(scope="module")
def pair_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in pair_rows()))
    return path


def pair_recipe(tiny_model_dir, source: Path, out: Path, method: str = "dpo", **train_keys):
    from medkit.recipe import recipe_from_dict

    raw = {
        "name": f"tiny_{method}",
        "model": {"base": str(tiny_model_dir("llama"))},
        "data": {"source": str(source), "max_seq_len": 96, "split_ratios": [0.8, 0.2, 0.0]},
        "lora": {"r": 4, "alpha": 8},
        "train": {"method": method, "max_steps": 3, "batch_size": 4, "grad_accum": 2, "lr": 3e-3,
                  "eval_every": 0, "save_every": 0, "log_every": 1, "warmup_ratio": 0.0,
                  "output_dir": str(out), **train_keys},
    }  # fmt: skip
    return recipe_from_dict(raw, source="pairs.toml")


def records(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_dpo_first_loss_is_ln2_and_logs(tiny_model_dir, pair_file, tmp_path):
    r = pair_recipe(tiny_model_dir, pair_file, tmp_path / "dpo")
    result = train(r)
    recs = records(result.run_dir)
    steps = [x for x in recs if "loss" in x]
    # a fresh adapter (B = 0) is the reference: every pair's loss is -log sigmoid(0)
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert steps[0]["reward_margin"] == pytest.approx(0.0, abs=1e-6)
    assert [x["step"] for x in steps] == [1, 2, 3]
    assert all({"reward_accuracy", "logps_chosen", "logps_rejected", "tokens_per_s"} <= set(x) for x in steps)
    assert steps[-1]["reward_margin"] > 0  # the policy moved towards the chosen answers
    val = [x["val_loss"] for x in recs if "val_loss" in x]
    assert val[0] == pytest.approx(math.log(2), abs=1e-5) and val[-1] < val[0]
    ref = json.loads((result.run_dir / "reference" / "rank0.json").read_text())
    # 3 steps x 2 micro-batches x 4 pairs: 24 of the 32 training pairs are scored, and each val pair
    assert len(ref["train"]) == 24 and len(ref["val"]) == 8
    info = json.loads((result.run_dir / "run.json").read_text())["train"]
    assert info["status"] == "finished" and info["tokens_per_s"] > 0
    assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (result.run_dir / "rewards.png").read_bytes()[:4] == b"\x89PNG"


def test_dpo_sft_weight_adds_the_chosen_answers_nll(tiny_model_dir, pair_file, tmp_path):
    """train.sft_weight (RPO): the first step's loss is ln 2 plus w times the chosen answers' mean NLL under
    the starting policy, the same at w = 0 as plain DPO; the chosen answers' log-probs fall less."""
    plain = records(train(pair_recipe(tiny_model_dir, pair_file, tmp_path / "a")).run_dir)
    held = records(train(pair_recipe(tiny_model_dir, pair_file, tmp_path / "b", sft_weight=1.0)).run_dir)
    first = [x for x in held if "loss" in x][0]
    p0 = [x for x in plain if "loss" in x][0]
    assert p0["loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert first["loss"] > math.log(2) + 0.1  # the NLL of answers a fresh adapter does not know yet
    assert first["reward_margin"] == pytest.approx(0.0, abs=1e-6)  # the DPO part starts where it did
    val_a = [x["val_loss"] for x in plain if "val_loss" in x]
    val_b = [x["val_loss"] for x in held if "val_loss" in x]
    assert val_b[0] > val_a[0] + 0.1  # val counts the NLL too


def test_orpo_trains(tiny_model_dir, pair_file, tmp_path):
    r = pair_recipe(tiny_model_dir, pair_file, tmp_path / "orpo", method="orpo", orpo_lambda=0.5)
    result = train(r)
    steps = [x for x in records(result.run_dir) if "loss" in x]
    assert len(steps) == 3 and all(math.isfinite(x["loss"]) and x["loss"] > 0 for x in steps)
    assert not (result.run_dir / "reference").exists()  # ORPO has no reference


def test_init_from_continues_the_adapter_and_refuses_another_base(tiny_model_dir, pair_file, tmp_path):
    from safetensors.torch import load_file

    first = train(pair_recipe(tiny_model_dir, pair_file, tmp_path / "first", max_steps=2)).run_dir
    r = pair_recipe(tiny_model_dir, pair_file, tmp_path / "second", max_steps=1, init_from=str(first))
    second = train(r).run_dir
    steps = [x for x in records(second) if "loss" in x]
    # the reference is the starting adapter, so the first loss is ln 2 again though the adapter is not fresh
    assert steps[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    a = load_file(first / "adapter" / "adapter_model.safetensors")
    b = load_file(second / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and any((a[k] != b[k]).any() for k in a)
    assert all(v.abs().sum() > 0 for k, v in a.items() if "lora_B" in k)
    other = pair_recipe(tiny_model_dir, pair_file, tmp_path / "third", init_from=str(first))
    other.model.base = str(tiny_model_dir("qwen2"))
    with pytest.raises(TrainError, match="train.init_from: .* was trained on base"):
        train(other)
    assert not (tmp_path / "third").exists()


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"prompt": "Q?", "chosen": "A.", "rejected": "A."}, "chosen and rejected are the same text"),
        ({"prompt": "Q?", "chosen": "A.", "rejected": ""}, "empty field 'rejected'"),
        ({"prompt": "Q?", "chosen": "A."}, "missing field 'rejected'"),
    ],
)
def test_bad_pair_rows_are_reported(tiny_model_dir, tmp_path, row, reason):
    from medkit.data.pairs import prepare_pairs
    from medkit.models import load_tokenizer

    rows = pair_rows(30) + [row]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in rows))
    r = pair_recipe(tiny_model_dir, path, tmp_path / "run")
    prepared = prepare_pairs(r, load_tokenizer(r.model.base))
    dropped = prepared.stats.rows.dropped
    assert dropped == {f"malformed: {reason}": 1}
    assert prepared.stats.rows.examples[f"malformed: {reason}"][0].startswith("row 31:")
    r.data.malformed_threshold = 0.0
    with pytest.raises(DataError, match=f"1 of 31 rows are malformed.*{reason}"):
        prepare_pairs(r, load_tokenizer(r.model.base))


def test_sft_rows_for_dpo_are_one_line(tiny_model_dir, qa_file, tmp_path):
    r = pair_recipe(tiny_model_dir, qa_file, tmp_path / "run")
    with pytest.raises(DataError, match="needs preference pairs"):
        train(r)
    assert not (tmp_path / "run").exists()


def test_dpo_resume_repeats_the_uninterrupted_run(tiny_model_dir, pair_file, tmp_path):
    from medkit.train.loop import Interrupted

    whole = train(pair_recipe(tiny_model_dir, pair_file, tmp_path / "whole", max_steps=4)).run_dir
    r = pair_recipe(tiny_model_dir, pair_file, tmp_path / "cut", max_steps=4, save_every=2)
    with pytest.raises(Interrupted):
        train(r, interrupt_at=2)
    cut = train(r, resume=True).run_dir
    a = {x["step"]: x["loss"] for x in records(whole) if "loss" in x}
    b = {x["step"]: x["loss"] for x in records(cut) if "loss" in x}
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    assert all(a[k] == pytest.approx(b[k], abs=1e-5) for k in a)
    (cut / "reference" / "rank0.json").unlink()
    r2 = pair_recipe(tiny_model_dir, pair_file, tmp_path / "cut2", max_steps=4, save_every=2)
    with pytest.raises(Interrupted):
        train(r2, interrupt_at=2)
    (tmp_path / "cut2" / "reference" / "rank0.json").unlink()
    with pytest.raises(TrainError, match="reference log-probs of this run"):
        train(r2, resume=True)


@pytest.mark.slow  # two tiny runs, an eval and an export
def test_a_dpo_run_evaluates_and_exports_like_any_run(tiny_model_dir, pair_file, tmp_path, monkeypatch):
    """Its result is a LoRA adapter: `medkit eval` scores it (the chosen answer is the reference, against
    the run it started from), and `medkit export` merges it into a GGUF."""
    from click.testing import CliRunner

    from medkit.cli import cli
    from medkit.eval.verb import evaluate_run

    start = train(pair_recipe(tiny_model_dir, pair_file, tmp_path / "runs" / "start", method="orpo")).run_dir
    r = pair_recipe(tiny_model_dir, pair_file, tmp_path / "runs" / "dpo", init_from=str(start), max_steps=2)
    run = train(r).run_dir
    report = evaluate_run(run, split="val", n=4, against=str(start), ggufs=[])
    assert list(report["table"]) == ["tuned", "start"] and report["task"] == "qa"
    assert report["models"]["tuned"]["samples"][0]["reference"].endswith(".")  # a chosen answer
    assert set(report["difference"]["pairs"]["tuned - start"]) >= {"loss", "rougeL"}
    monkeypatch.setenv("MEDKIT_RUNS", str(tmp_path / "runs"))
    res = CliRunner().invoke(cli, ["export", str(run), "--gguf", "f16", "--no-verify", "--threads", "1"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert (run / "export" / "dpo-f16.gguf").read_bytes()[:4] == b"GGUF"
