"""The offline default: recipes/smollm2_demo.toml trains on CPU and its val loss falls measurably."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medkit.recipe import load_recipe
from medkit.train.verb import train

pytestmark = pytest.mark.slow
RECIPES = Path(__file__).resolve().parents[2] / "recipes"


# The recipe's own 30 steps take ~5 min on 2 idle cores; under `make test` on a busy 2-core machine (other
# suites, other users) the same work took over 900 s. The budget is for a loaded machine, not an idle one:
# a hung run still ends, a slow one passes. What it asserts is unchanged.
@pytest.mark.timeout(2400)
def test_smollm2_demo_trains_and_val_loss_falls(smollm2_hf, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDKIT_RUNS", str(tmp_path / "runs"))
    r = load_recipe(RECIPES / "smollm2_demo.toml")
    result = train(r)
    info = json.loads((result.run_dir / "run.json").read_text())["train"]
    assert info["status"] == "finished" and info["world_size"] == 1
    assert info["best_val_loss"] < info["initial_val_loss"] - 0.1, info
    assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()
    assert (result.run_dir / "loss.png").is_file()
    print(
        f"smollm2_demo: {info['steps']} steps, wall {info['wall_seconds']:.0f}s, {info['tokens_per_s']:.0f} tok/s, "
        f"val loss {info['initial_val_loss']:.4f} -> {info['best_val_loss']:.4f}"
    )
