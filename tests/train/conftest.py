"""Fixtures for the training tests: a small Q&A file and recipes on the tiny random models."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FACTS = [
    ("asthma", "an inhaled steroid"), ("gout", "a lower uric acid"), ("fever", "rest and fluids"),
    ("anemia", "iron tablets"), ("migraine", "a dark quiet room"), ("hypertension", "less salt"),
    ("diabetes", "metformin"), ("pneumonia", "amoxicillin"), ("dehydration", "oral fluids"),
    ("hypothyroidism", "levothyroxine"), ("a cough", "honey and rest"), ("a burn", "cool running water"),
]  # fmt: skip


def qa_rows(n: int = 48) -> list[dict[str, str]]:
    rows = []
    for i in range(n):
        cond, treat = FACTS[i % len(FACTS)]
        variant = i // len(FACTS)
        rows.append(
            {
                "question": f"How is {cond} treated? ({variant})",
                "answer": f"{cond.capitalize()} is treated with {treat}." + " It helps." * (i % 3),
            }
        )
    return rows


@pytest.fixture(scope="session")
def qa_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("train-data") / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in qa_rows()))
    return path


@pytest.fixture
def make_recipe(tiny_model_dir, qa_file, tmp_path) -> Callable[..., Any]:
    """make_recipe(arch="llama", name="tiny", sets={"train.max_steps": 4}) -> a loaded Recipe."""
    from medkit.recipe import recipe_from_dict

    def make(
        arch: str = "llama", name: str = "tiny", out: Path | None = None, sets: dict[str, Any] | None = None
    ):
        raw: dict[str, Any] = {
            "name": name,
            "model": {"base": str(tiny_model_dir(arch))},
            "data": {"source": str(qa_file), "format": "qa", "max_seq_len": 96, "split_ratios": [0.75, 0.25, 0.0]},
            "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
            "train": {
                "max_steps": 4, "batch_size": 4, "grad_accum": 2, "lr": 3e-3, "eval_every": 2,
                "save_every": 2, "log_every": 1, "warmup_ratio": 0.1,
                "output_dir": str(out or tmp_path / "runs" / name),
            },
        }  # fmt: skip
        overrides = [f"{k}={_toml(v)}" for k, v in (sets or {}).items()]
        return recipe_from_dict(raw, source=f"{name}.toml", overrides=overrides)

    return make


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


def losses(run_dir: Path) -> dict[int, float]:
    """step -> train loss from a run's metrics.jsonl."""
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if "loss" in r}


@pytest.fixture(autouse=True)
def _fresh_accelerator_state():
    """TRL's trainers (the oracles of the preference tests) create accelerate's process-wide state, bf16 on a
    CPU; medkit's Trainer in a later test of this process builds its own with other settings: reset it."""
    yield
    from accelerate.state import AcceleratorState, PartialState

    AcceleratorState._reset_state(reset_partial_state=True)
    PartialState._reset_state()
