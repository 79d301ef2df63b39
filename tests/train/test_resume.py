"""Exact resume: interrupted at step k and resumed, a run repeats the uninterrupted run's losses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medkit.train.loop import Interrupted
from medkit.train.verb import train
from tests.train.conftest import losses

# 36 training examples, batch 4 x accumulation 2: 5 steps per epoch, so 8 steps cross an epoch boundary;
# LoRA dropout 0.1 makes the RNG state matter.
SETS = {"train.max_steps": 8, "train.eval_every": 3, "train.save_every": 0, "lora.dropout": 0.1}


def val_losses(run_dir: Path) -> dict[int, float]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val_loss"] for r in recs if "val_loss" in r}


def test_interrupted_then_resumed_matches_straight_run(make_recipe, tmp_path):
    from safetensors.torch import load_file

    straight = train(make_recipe(out=tmp_path / "straight", sets=SETS)).run_dir

    cut = make_recipe(out=tmp_path / "cut", sets=SETS)
    with pytest.raises(Interrupted) as stop:
        train(cut, interrupt_at=4)
    assert stop.value.step == 4 and stop.value.path.name == "step-00000004"
    info = json.loads((tmp_path / "cut" / "run.json").read_text())
    assert info["train"]["status"] == "interrupted" and info["train"]["steps"] == 4
    assert not (tmp_path / "cut" / "adapter").exists()
    resumed = train(make_recipe(out=tmp_path / "cut", sets=SETS), resume=True).run_dir

    a, b = losses(straight), losses(resumed)
    assert sorted(a) == sorted(b) == list(range(1, 9))
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-5), f"step {step}"
    va, vb = val_losses(straight), val_losses(resumed)
    assert sorted(va) == sorted(vb) == [0, 3, 6, 8]
    for step in va:
        assert vb[step] == pytest.approx(va[step], abs=1e-5)
    wa = load_file(str(straight / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-6)
    tr = json.loads((resumed / "run.json").read_text())["train"]
    assert tr["status"] == "finished" and tr["steps"] == 8
    assert tr["tokens_trained"] == json.loads((straight / "run.json").read_text())["train"]["tokens_trained"]


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_exits_130(make_recipe, tmp_path):
    r = make_recipe(
        out=tmp_path / "sig", sets={"train.max_steps": 400, "train.eval_every": 0, "train.save_every": 0}
    )
    recipe_file = tmp_path / "sig.toml"
    recipe_file.write_text(r.to_toml())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "medkit", "train", str(recipe_file)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    metrics = tmp_path / "sig" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and '"loss"' in metrics.read_text():
            break
        time.sleep(0.5)
    assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 130, out
    assert "checkpoint saved" in out and "--resume" in out
    ckpts = sorted((tmp_path / "sig" / "checkpoints").glob("step-*"))
    assert len(ckpts) == 1
    step = int(ckpts[0].name.split("-")[1])
    assert 1 <= step < 400 and max(losses(tmp_path / "sig")) == step
    # resuming continues from that step with the same recipe (shortened runs are a recipe change: --force)
    short = make_recipe(
        out=tmp_path / "sig", sets={"train.max_steps": step + 2, "train.eval_every": 0, "train.save_every": 0}
    )
    with pytest.raises(Exception, match="recipe changed.*max_steps"):
        train(short, resume=True)
    res = train(short, resume=True, force=True)
    assert sorted(losses(res.run_dir))[-3:] == [step, step + 1, step + 2]
