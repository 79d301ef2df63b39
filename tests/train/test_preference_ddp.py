"""DPO under `torchrun --nproc_per_node 2` on CPU (gloo): the same step losses as one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medkit.train.verb import train
from tests.train.conftest import losses
from tests.train.test_preference import pair_recipe, pair_rows

pytestmark = pytest.mark.slow


def test_dpo_torchrun_two_processes(tiny_model_dir, tmp_path):
    source = tmp_path / "pairs.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in pair_rows()))
    # 2 processes x accumulation 2 see the same 4 micro-batches per step as 1 process x accumulation 4
    r = pair_recipe(tiny_model_dir, source, tmp_path / "ddp", max_steps=2, grad_accum=2, batch_size=2)
    recipe_file = tmp_path / "ddp.toml"
    recipe_file.write_text(r.to_toml())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29527", "-m", "medkit", "train", str(recipe_file)],
        capture_output=True, text=True, env=env, timeout=900,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert out.count("done:") == 1 and "cpu x2" in out
    run = tmp_path / "ddp"
    assert sorted(p.name for p in (run / "reference").iterdir()) == ["rank0.json", "rank1.json"]
    single = train(
        pair_recipe(tiny_model_dir, source, tmp_path / "one", max_steps=2, grad_accum=4, batch_size=2)
    ).run_dir
    a, b = losses(run), losses(single)
    assert sorted(a) == sorted(b) == [1, 2]
    for step in (1, 2):
        assert a[step] == pytest.approx(b[step], abs=1e-4), f"step {step}"
