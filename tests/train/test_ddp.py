"""`torchrun --nproc_per_node 2` on CPU (gloo): one adapter written, loadable, same losses as one process."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from medkit.train.verb import train
from tests.train.conftest import losses

pytestmark = pytest.mark.slow


def test_torchrun_two_processes(make_recipe, tmp_path, tiny_model_dir):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun is not installed next to this Python")
    # 2 processes x accumulation 2 see the same 4 micro-batches per step as 1 process x accumulation 4
    common = {"train.max_steps": 3, "train.eval_every": 2, "train.save_every": 2, "lora.dropout": 0.0}
    r = make_recipe(out=tmp_path / "ddp", sets={**common, "train.grad_accum": 2})
    recipe_file = tmp_path / "ddp.toml"
    recipe_file.write_text(r.to_toml())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [str(torchrun), "--nproc_per_node", "2", "--master_port", "29517", "-m", "medkit", "train", str(recipe_file)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert out.count("done:") == 1 and "cpu x2" in out  # the main process alone reports and writes

    run = tmp_path / "ddp"
    assert not list(run.glob(".*partial")) and not list((run / "checkpoints").glob(".*partial"))
    ck = run / "checkpoints" / "step-00000002"
    assert sorted(p.name for p in ck.glob("rng-rank*")) == [  # every rank's RNG state, none pickled
        "rng-rank0.json", "rng-rank0.safetensors", "rng-rank1.json", "rng-rank1.safetensors",
    ]  # fmt: skip
    assert not list(ck.glob("*.pt"))
    info = json.loads((run / "run.json").read_text())["train"]
    assert info["world_size"] == 2 and info["steps"] == 3

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, run / "adapter")
    assert any("lora_A" in n for n, _ in model.named_parameters())

    single = train(make_recipe(out=tmp_path / "one", sets={**common, "train.grad_accum": 4})).run_dir
    a, b = losses(run), losses(single)
    assert sorted(a) == sorted(b) == [1, 2, 3]
    for step in (1, 2):  # step 3 differs by design: 9 micro-batches, 8 dealt to 2 processes, 9 to one
        assert a[step] == pytest.approx(b[step], abs=1e-4), f"step {step}"
    shutil.rmtree(tmp_path / "one", ignore_errors=True)
