"""`medkit train` end to end on a tiny model: records, adapter, dry run, refusals, early stopping, OOM."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from medkit.errors import TrainError
from medkit.train.verb import check_run_dir, train


@pytest.fixture(scope="module")
def finished(tiny_model_dir, qa_file, tmp_path_factory):
    """One tiny run shared by the record checks (6 steps, eval every 2, checkpoint every 2, keep 1)."""
    from medkit.recipe import recipe_from_dict
    from tests.train.conftest import _toml

    out = tmp_path_factory.mktemp("run") / "tiny"
    raw = {
        "name": "tiny",
        "model": {"base": str(tiny_model_dir("llama"))},
        "data": {"source": str(qa_file), "format": "qa", "max_seq_len": 96, "split_ratios": [0.75, 0.25, 0.0]},
        "lora": {"r": 4, "alpha": 8},
        "train": {"max_steps": 6, "batch_size": 4, "grad_accum": 2, "lr": 3e-3, "eval_every": 2,
                  "save_every": 2, "keep_last": 1, "log_every": 1, "output_dir": str(out)},
    }  # fmt: skip
    r = recipe_from_dict(raw, source="tiny.toml", overrides=[f"train.seed={_toml(7)}"])
    return r, train(r)


def test_run_records(finished):
    r, result = finished
    run = result.run_dir
    info = json.loads((run / "run.json").read_text())
    tr = info["train"]
    assert {"torch", "transformers", "peft", "medkit"} <= set(info["versions"])
    assert "git_sha" in info and len(info["data"]["fingerprint"]) == 64
    assert tr["status"] == "finished" and tr["steps"] == 6 and tr["world_size"] == 1
    assert tr["tokens_trained"] > 0 and tr["input_tokens"] >= tr["tokens_trained"] and tr["tokens_per_s"] > 0
    assert tr["peak_memory"]["gib"] > 0 and tr["wall_seconds"] >= tr["train_seconds"] > 0
    assert tr["initial_val_loss"] > tr["best_val_loss"] and 0 <= tr["best_step"] <= 6
    assert "plain LoRA" in tr["note"]
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in records if "loss" in x] == [1, 2, 3, 4, 5, 6]
    assert [x["step"] for x in records if "val_loss" in x] == [0, 2, 4, 6]
    assert all(x["lr"] >= 0 and x["tokens_per_s"] > 0 for x in records if "loss" in x)
    assert (run / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from medkit.recipe import load_recipe

    assert load_recipe(run / "recipe.toml").to_toml() == r.to_toml()
    assert [p.name for p in (run / "checkpoints").glob("step-*")] == ["step-00000004"]  # keep_last = 1


def test_adapter_loads_with_peft_unchanged(finished, tiny_model_dir):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    r, result = finished
    adapter = result.run_dir / "adapter"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    tok = AutoTokenizer.from_pretrained(adapter)
    assert tok.chat_template and tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"), dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter)
    loaded = {n: p for n, p in model.named_parameters() if "lora_" in n}
    assert loaded and any(float(p.abs().sum()) > 0 for n, p in loaded.items() if "lora_B" in n)
    best = load_file(str(result.run_dir / "checkpoints" / "best" / "adapter.safetensors"))
    best_step = json.loads((result.run_dir / "run.json").read_text())["train"]["best_step"]
    if best_step != 6:  # the best eval was earlier: its weights are what was saved
        for name, tensor in best.items():
            torch.testing.assert_close(loaded[name].detach(), tensor)
    ids = torch.tensor([tok("How is gout treated?")["input_ids"]])
    with torch.no_grad():
        tuned = model(input_ids=ids).logits
        with model.disable_adapter():
            plain = model(input_ids=ids).logits
    assert not torch.allclose(tuned, plain)


def test_dry_run_trains_nothing(make_recipe, tmp_path):
    r = make_recipe(out=tmp_path / "dry")
    result = train(r, dry_run=True)
    assert result.dry_run and not (tmp_path / "dry").exists()
    s = result.summary
    assert 0 < s["trainable_params"] < s["total_params"] and s["memory_gib"]["total"] > 0
    assert s["steps"] == 4 and s["examples"]["train"] == 36 and 0 <= s["padding_share"] < 0.5


def test_other_recipes_run_dir_is_refused(make_recipe, tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "recipe.toml").write_text('name = "someone_else"\n')
    with pytest.raises(TrainError, match="holds the run of recipe 'someone_else', not 'tiny'.*--force"):
        train(make_recipe(out=out))
    assert (out / "recipe.toml").read_text() == 'name = "someone_else"\n'  # nothing lost
    assert check_run_dir(make_recipe(out=out), out, resume=False, force=True) is None
    # a run directory that only has its manifest left is still someone else's
    manifest_only = tmp_path / "manifest_only"
    manifest_only.mkdir()
    (manifest_only / "run.json").write_text('{"name": "someone_else", "eval": {"n": 35}}\n')
    with pytest.raises(TrainError, match="holds the run of recipe 'someone_else', not 'tiny'"):
        train(make_recipe(out=manifest_only))
    assert json.loads((manifest_only / "run.json").read_text())["eval"] == {"n": 35}


def _fake_checkpoint(run_dir, recipe, step=2):
    """A complete checkpoint in the on-disk format (no model behind it): `--resume` only picks complete ones."""
    from safetensors.torch import save_file

    from medkit.train import checkpoint

    ck = run_dir / "checkpoints" / f"step-{step:08d}"
    ck.mkdir(parents=True)
    weights = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(weights.parameters())
    save_file({"w": weights.weight.detach().clone()}, str(ck / checkpoint.WEIGHTS))
    checkpoint.write_state(ck, "optimizer", checkpoint.pack(opt.state_dict()))
    checkpoint.write_state(ck, "scheduler", checkpoint.pack({"last_epoch": step}))
    checkpoint.write_state(ck, "rng-rank0", checkpoint.pack(checkpoint.rng_state()))
    (ck / "state.json").write_text(json.dumps({"step": step}))
    (ck / "recipe.toml").write_text(recipe.to_toml())
    (run_dir / "recipe.toml").write_text(recipe.to_toml())
    return ck


def test_unfinished_run_needs_resume_or_force(make_recipe, tmp_path):
    r = make_recipe(out=tmp_path / "r")
    ck = _fake_checkpoint(tmp_path / "r", r)
    with pytest.raises(TrainError, match="unfinished run .*step-00000002.*--resume"):
        check_run_dir(r, tmp_path / "r", resume=False, force=False)
    assert check_run_dir(r, tmp_path / "r", resume=True, force=False) == ck


def test_resume_with_changed_recipe_is_refused_with_a_diff(make_recipe, tmp_path):
    out = tmp_path / "r"
    ck = _fake_checkpoint(out, make_recipe(out=out))
    changed = make_recipe(out=out, sets={"train.lr": 1e-3, "data.max_seq_len": 64, "train.log_every": 5})
    with pytest.raises(TrainError) as err:
        check_run_dir(changed, out, resume=True, force=False)
    msg = err.value.one_line()
    assert "train.lr: 0.003 -> 0.001" in msg and "data.max_seq_len: 96 -> 64" in msg
    assert "log_every" not in msg and "--force" in msg and "\n" not in msg
    assert check_run_dir(changed, out, resume=True, force=True) == ck
    with pytest.raises(TrainError, match="no checkpoint"):
        check_run_dir(changed, tmp_path / "empty", resume=True, force=False)


def test_early_stopping_restores_the_best_adapter(make_recipe, tmp_path):
    from safetensors.torch import load_file

    r = make_recipe(
        out=tmp_path / "es",
        sets={"train.lr": 1.0, "train.warmup_ratio": 0.0, "train.max_steps": 8, "train.eval_every": 1,
              "train.early_stopping_patience": 2, "train.max_grad_norm": 0.0, "train.save_every": 0},
    )  # fmt: skip
    res = train(r)
    tr = res.summary["train"]
    assert tr["stopped_early"] and tr["steps"] < 8
    assert tr["best_step"] <= tr["steps"] - 2
    best = load_file(str(res.run_dir / "checkpoints" / "best" / "adapter.safetensors"))
    saved = load_file(str(res.run_dir / "adapter" / "adapter_model.safetensors"))
    assert len(saved) == len(best)
    for name, tensor in best.items():
        key = name.replace(".default", "")
        torch.testing.assert_close(saved[key], tensor)


def test_out_of_memory_names_the_knobs(make_recipe, tmp_path, monkeypatch):
    from medkit.train.loop import Trainer

    def boom(self):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(Trainer, "train_step", boom)
    with pytest.raises(TrainError) as err:
        train(make_recipe(out=tmp_path / "oom"))
    msg = err.value.one_line()
    assert "out of memory at step 1" in msg and "train.batch_size" in msg and "data.max_seq_len" in msg
    assert "grad_checkpointing" in msg and "\n" not in msg
    shutil.rmtree(tmp_path / "oom", ignore_errors=True)


def test_packed_training_runs_across_epochs(make_recipe, tmp_path):
    r = make_recipe(
        out=tmp_path / "pk",
        sets={"data.packing": True, "train.max_steps": 7, "train.eval_every": 0, "train.save_every": 0},
    )
    res = train(r)
    tr = res.summary["train"]
    assert tr["steps"] == 7 and tr["epochs"] > 1  # the data order rolls over into a second epoch
    assert tr["tokens_trained"] > 0 and tr["final_val_loss"] < tr["initial_val_loss"] + 1.0


@pytest.mark.gpu
def test_qlora_training_on_cuda(make_recipe, tmp_path):
    r = make_recipe(
        out=tmp_path / "q",
        sets={
            "quant.require": True,
            "train.max_steps": 8,
            "train.eval_every": 4,
            "train.optimizer": "paged_adamw_8bit",
        },
    )
    tr = train(r).summary["train"]
    assert tr["quantized"] and tr["device"] == "cuda" and tr["optimizer"] == "paged_adamw_8bit"
    assert tr["peak_memory"]["kind"] == "cuda_max_allocated" and tr["peak_memory"]["gib"] > 0
    assert tr["best_val_loss"] < tr["initial_val_loss"]
