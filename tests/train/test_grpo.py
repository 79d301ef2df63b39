"""GRPO: the clipped, KL-penalized loss equals TRL's on fixed completions and rewards; rewards; a tiny
run end to end; bad rewards are one line."""

from __future__ import annotations

import json
import math

import pytest
import torch

from medkit.errors import RecipeError, TrainError
from medkit.train import rewards as rw
from medkit.train.grpo import group_advantages, grpo_token_loss
from medkit.train.verb import train


def grpo_recipe(tiny_model_dir, qa_file, out, **train_keys):
    from medkit.recipe import recipe_from_dict

    raw = {
        "name": "tiny_grpo", "model": {"base": str(tiny_model_dir("llama"))},
        "data": {"source": str(qa_file), "format": "qa", "max_seq_len": 96, "split_ratios": [0.9, 0.1, 0.0]},
        "lora": {"r": 4, "alpha": 8},
        "train": {"method": "grpo", "max_steps": 2, "batch_size": 2, "grad_accum": 1, "lr": 1e-3,
                  "group_size": 3, "max_new_tokens": 6, "eval_every": 0, "save_every": 0, "log_every": 1,
                  "warmup_ratio": 0.0, "rewards": {"format": 1.0, "length": 0.5}, "output_dir": str(out),
                  **train_keys},
    }  # fmt: skip
    return recipe_from_dict(raw, source="grpo.toml")


def test_group_advantages_are_normalized_within_each_group():
    r = torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 5.0, 5.0, 5.0])
    a = group_advantages(r, 4)
    first = (r[:4] - r[:4].mean()) / (r[:4].std() + 1e-4)
    assert torch.allclose(a[:4], first) and torch.allclose(a[4:], torch.zeros(4))


def test_grpo_loss_equals_trl_on_fixed_completions(tiny_model_dir, qa_file, tmp_path):
    pytest.importorskip("trl")
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from medkit.data import batching
    from medkit.data.tokens import Example
    from medkit.recipe import recipe_from_dict
    from medkit.train import plan as lora
    from medkit.train.preference import make_logps_module

    raw = {"name": "g", "model": {"base": str(tiny_model_dir("llama"))}, "data": {"source": str(qa_file)},
           "lora": {"r": 4, "alpha": 8}, "train": {"grad_checkpointing": False}}  # fmt: skip
    r = recipe_from_dict(raw, source="g.toml")
    model = lora.build_model(r, lora.plan_precision(r))
    torch.manual_seed(0)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    prompt = [1, 17, 23, 5, 9, 30]
    comps = [[40, 41, 2], [42, 43, 44, 45, 2], [46], [47, 48, 49, 50]]  # fixed completions
    adv = torch.tensor([1.2, -0.3, 0.5, -1.4])  # fixed advantages (normalized rewards)
    g = torch.Generator().manual_seed(3)
    # medkit: the flat completion tokens of the right-padded sequences
    seqs = [Example(prompt + c, [-100] * len(prompt) + c) for c in comps]
    batch = batching.collate(batching.Batch(tuple((k,) for k in range(4))), seqs, 0)
    module = make_logps_module(model, per_token=True)
    logps, rows = module(**batch)
    old = (logps + 0.3 * torch.randn(logps.shape, generator=g)).detach()  # sampled by an older policy: clips
    ref = (logps + 0.2 * torch.randn(logps.shape, generator=g)).detach()
    loss, kl, clipped = grpo_token_loss(logps, old, ref, adv[rows], 0.2, 0.04)
    ours = loss.sum() / logps.numel()
    assert 0 < int(clipped.sum()) < logps.numel()
    # TRL: the same numbers as (B, T) tensors, completions right padded after a shared prompt
    width = max(map(len, comps))
    mask = torch.tensor([[1] * len(c) + [0] * (width - len(c)) for c in comps])
    cids = torch.tensor([c + [0] * (width - len(c)) for c in comps])

    def grid(flat):
        out = torch.zeros(mask.shape)
        out[mask.bool()] = flat
        return out

    args = GRPOConfig(
        output_dir=str(tmp_path / "trl"), beta=0.04, epsilon=0.2, loss_type="bnpo", report_to="none",
        use_cpu=True, bf16=False, per_device_train_batch_size=4, num_generations=4,
    )  # fmt: skip
    stub = Dataset.from_list([{"prompt": "a"}] * 4)
    oracle = GRPOTrainer(model=model, reward_funcs=lambda completions, **kw: [0.0] * len(completions),
                         args=args, train_dataset=stub)  # fmt: skip
    inputs = {
        "prompt_ids": torch.tensor([prompt] * 4), "prompt_mask": torch.ones(4, len(prompt), dtype=torch.long),
        "completion_ids": cids, "completion_mask": mask, "advantages": adv,
        "old_per_token_logps": grid(old), "ref_per_token_logps": grid(ref),
    }  # fmt: skip
    oracle.current_gradient_accumulation_steps = 1  # set by TRL's training_step; one micro-batch here
    want = oracle._compute_loss(oracle.model, inputs)
    print(
        f"TRL cross-check: GRPO loss medkit {float(ours):.8f} TRL {float(want):.8f}"
    )  # -s: the README's figures
    assert abs(float(ours) - float(want)) < 1e-5
    assert float(kl.sum() / logps.numel()) > 0


def test_builtin_rewards():
    def s(text, ref="E11.9", stopped=True, tokens=4):
        return rw.Sample(text, ref, stopped, tokens, 8)

    assert rw.icd10_exact(s("E11.9")) == 1.0 and rw.icd10_exact(s("E11.8")) == 0.0
    assert [rw.icd10_category(s(t)) for t in ("E119", "E11.8", "E78.5", "J06.9", "none")] == [
        1,
        0.5,
        0.25,
        0,
        0,
    ]
    assert rw.icd10_valid(s("E11.9")) == 1.0 and rw.icd10_valid(s("E11.99")) == 0.0
    assert rw.numeric(s("about 102", "100")) == 1.0 and rw.numeric(s("110", "100")) == 0.0
    assert rw.format_reward(s("x", stopped=False)) == 0.0 and rw.length(s("x", tokens=4)) == -0.5


def raises(sample):
    raise ValueError("boom")


def nan(sample):
    return math.nan


def has_the(sample):
    return float("the" in sample.text.lower())


def test_bad_rewards_are_one_line(tiny_model_dir, qa_file, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(
        RecipeError, match=r"train.rewards.icd10_exakt: no reward .*did you mean 'icd10_exact'"
    ):
        train(grpo_recipe(tiny_model_dir, qa_file, out, rewards={"icd10_exakt": 1.0}))
    with pytest.raises(RecipeError, match="set train.trust_reward_code = true"):
        train(grpo_recipe(tiny_model_dir, qa_file, out, rewards={"tests.train.test_grpo.has_the": 1.0}))
    assert not out.exists()
    for fn, what in (("raises", "raised ValueError: boom"), ("nan", "returned nan")):
        r = grpo_recipe(tiny_model_dir, qa_file, out, rewards={f"tests.train.test_grpo.{fn}": 1.0},
                        trust_reward_code=True)  # fmt: skip
        with pytest.raises(
            TrainError, match=f"train row \\d+ .*: reward 'tests.train.test_grpo.{fn}' {what}"
        ):
            train(r)
        assert not out.exists()


@pytest.mark.parametrize("resample, kept, groups, flat", [(0, 0, 1, 1), (1, 3, 2, 2), (3, 5, 3, 2)])
def test_a_flat_group_is_replaced_by_another_prompts(resample, kept, groups, flat):
    """resample_flat: a prompt whose samples all score the same is swapped for another (drawn by the step's
    RNG) until one has a spread, at most `resample` times (the last try is kept); every group is counted."""
    from types import SimpleNamespace

    from medkit.data.tokens import Example
    from medkit.train.grpo import GRPOTrainer

    draws = iter([3, 5, 2])  # the step's RNG, scripted: prompt 3 (flat), then 5 (the one with a spread)
    fake = SimpleNamespace(
        t=SimpleNamespace(resample_flat=resample, group_size=2),
        data=SimpleNamespace(train=[Example([1, 10 + k, 9], [-100, -100, 9]) for k in range(8)]),
        _window={},
        sample=lambda prompt, n: [[prompt[1]], [prompt[1] + 100]],
        _score=lambda i, split, group: torch.tensor([[float(i == 5 and c[0] > 100)] for c in group]),
    )
    prompt, group, score = GRPOTrainer._group(fake, 0, SimpleNamespace(randrange=lambda n: next(draws)))
    assert prompt == [1, 10 + kept] and group == [[10 + kept], [110 + kept]]
    assert fake._window == {"_groups": groups, "_flat": flat}
    assert bool(score[:, 0].std() > 0) == (kept == 5)


def test_grpo_trains_end_to_end_with_kl(tiny_model_dir, qa_file, tmp_path):
    r = grpo_recipe(tiny_model_dir, qa_file, tmp_path / "run", kl_coef=0.05, resample_flat=1,
                    rewards={"format": 1.0, "length": 0.5, "tests.train.test_grpo.has_the": 1.0},
                    trust_reward_code=True)  # fmt: skip
    result = train(r)
    recs = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in recs if "loss" in x]
    assert [x["step"] for x in steps] == [1, 2]
    for x in steps:
        assert math.isfinite(x["loss"]) and 0 < x["completion_length"] <= 6
        assert {"reward_total", "reward_format", "reward_length_std", "kl", "clip_fraction"} <= set(x)
        assert 0 <= x["flat_groups"] <= 1
        assert -1 <= x["reward_length"] < 0 and x["kl"] >= 0 and x["clip_fraction"] == 0
    assert any("val_loss" in x for x in recs)
    assert (result.run_dir / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow  # ~2 min on 2 loaded cores: three tiny runs and one with a val every step
def test_grpo_resume_repeats_the_uninterrupted_run_and_early_stops(tiny_model_dir, qa_file, tmp_path):
    """Resume (the sampler's RNG state is in the checkpoint: the same completions, the same losses) and
    early stopping work for GRPO as for SFT; the progress line's fields (tokens/s, MFU) are logged."""
    from medkit.train.loop import Interrupted

    keys = dict(max_steps=4, rewards={"format": 1.0, "length": 0.5})
    whole = train(grpo_recipe(tiny_model_dir, qa_file, tmp_path / "whole", **keys)).run_dir
    r = grpo_recipe(tiny_model_dir, qa_file, tmp_path / "cut", save_every=2, **keys)
    with pytest.raises(Interrupted):
        train(r, interrupt_at=2)
    assert (tmp_path / "cut" / "checkpoints").is_dir()
    cut = train(r, resume=True).run_dir

    def steps(run):
        return {
            x["step"]: x
            for x in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
            if "loss" in x
        }

    a, b = steps(whole), steps(cut)
    assert a.keys() == b.keys() == {1, 2, 3, 4}
    for k in a:
        assert a[k]["loss"] == pytest.approx(b[k]["loss"], abs=1e-5)
        assert a[k]["completion_length"] == b[k]["completion_length"]
        assert a[k]["tokens_per_s"] > 0 and "mfu" in a[k]
    # early stopping: with val after every step and patience 1, a run stops at the first val that does not improve
    stop = train(grpo_recipe(tiny_model_dir, qa_file, tmp_path / "stop", max_steps=12, eval_every=1,
                             early_stopping_patience=1, lr=5e-2, rewards={"format": 1.0, "length": 0.5}))  # fmt: skip
    info = json.loads((stop.run_dir / "run.json").read_text())["train"]
    assert info["stopped_early"] and info["steps"] < 12
