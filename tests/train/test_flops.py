"""The FLOP count behind MFU (medkit.train.flops) against hand computations, and MFU in run.json and the log."""

from __future__ import annotations

import json

import pytest
import torch

from medkit.train import flops

# A tiny llama: hidden 64, MLP 96, 2 layers, 4 heads of 16 (2 KV heads: k/v project to 32), vocab 100.
TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=100)  # fmt: skip


def _lora_llama(targets: list[str], r: int = 4):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY))
    for p in model.parameters():
        p.requires_grad_(False)
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=8, target_modules=targets))


def test_sizes_read_from_a_lora_llama_match_the_config_by_hand():
    mf = flops.ModelFlops.from_model(_lora_llama(["q_proj", "v_proj"]))
    per_layer = 64 * 64 + 64 * 32 + 64 * 32 + 64 * 64 + 3 * 64 * 96  # q, k, v, o, gate, up, down
    lora = (64 * 4 + 4 * 64) + (64 * 4 + 4 * 32)  # q: A (64->4), B (4->64); v: A (64->4), B (4->32)
    assert mf.frozen == 2 * per_layer == 61440
    assert mf.trainable == 2 * lora == 1792
    assert (mf.head, mf.head_trainable, mf.attn, mf.window) == (64 * 100, False, 2 * 4 * 16, None)
    assert (mf.hidden, mf.intermediate) == (64, 96)


# (grad_checkpointing, head_recompute_tokens, expected): two examples of 5 and 3 tokens (8 tokens, causal
# pairs 15 + 6 = 21), the head on 4 trained tokens. Add a row for a new case.
F, T, A, H = 61440, 1792, 128, 6400
CASES = [
    (False, 0, 4 * F * 8 + 6 * T * 8 + 12 * A * 21 + 4 * H * 4),
    (True, 0, 4 * F * 8 + 6 * T * 8 + 12 * A * 21 + 4 * H * 4 + 2 * (F + T) * 8 + 4 * A * 21),
    (True, 4, 4 * F * 8 + 6 * T * 8 + 12 * A * 21 + 4 * H * 4 + 2 * (F + T) * 8 + 4 * A * 21 + 2 * H * 4),
]


@pytest.mark.parametrize("checkpointing,head_recompute,expected", CASES)
def test_step_flops_match_a_hand_computation(checkpointing, head_recompute, expected):
    mf = flops.ModelFlops.from_model(_lora_llama(["q_proj", "v_proj"]))
    got = mf.step([5, 3], 4, grad_checkpointing=checkpointing, head_recompute_tokens=head_recompute)
    assert got.total == expected
    assert got.frozen == 4 * F * 8 and got.lora == 6 * T * 8 and got.head == 4 * H * 4
    assert got.attention == 12 * A * 21  # per example: packed rows do not attend across examples
    assert (got + got).total == 2 * expected


def test_the_head_counts_only_the_tokens_it_runs_on():
    mf = flops.ModelFlops.from_model(_lora_llama(["q_proj"]))
    selective = mf.step([100], 30, grad_checkpointing=False)
    full = mf.step([100], 100, grad_checkpointing=False)
    assert full.total - selective.total == 4 * 64 * 100 * 70


def test_gpt2_conv1d_layers_are_counted_as_linears(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir("gpt2"), dtype=torch.float32)
    for p in base.parameters():
        p.requires_grad_(False)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["c_attn"], fan_in_fan_out=True))
    cfg = base.config
    h, inner = cfg.n_embd, cfg.n_inner or 4 * cfg.n_embd
    mf = flops.ModelFlops.from_model(model)
    assert mf.frozen == cfg.n_layer * (h * 3 * h + h * h + 2 * h * inner)  # c_attn, attn c_proj, c_fc, c_proj
    assert mf.trainable == cfg.n_layer * (h * 2 + 2 * 3 * h)
    assert mf.head == h * cfg.vocab_size and mf.intermediate == inner


@pytest.mark.parametrize(
    "n,window,pairs", [(1, None, 1), (4, None, 10), (4, 4, 10), (6, 4, 10 + 2 * 4), (10, 1, 10)]
)  # fmt: skip
def test_causal_pairs_with_and_without_a_sliding_window(n, window, pairs):
    assert flops.causal_pairs(n, window) == pairs


def test_measured_peak_is_a_positive_rate_on_the_given_shape():
    peak = flops.measure_peak(64, 32, 48, dtype=torch.float32, device="cpu", budget_s=0.01)
    # the faster of the MLP's two matmuls: (64 x 32) @ (32 x 48) or (64 x 48) @ (48 x 32)
    assert peak.flops_per_s > 0 and peak.source == "measured" and peak.shape in ((64, 32, 48), (64, 48, 32))
    assert peak.dtype == "float32" and peak.as_dict()["shape"] == list(peak.shape)
    assert flops.mfu(peak.flops_per_s * 2.0, 4.0, peak) == pytest.approx(0.5)
    assert flops.mfu(1.0, 0.0, peak) is None and flops.mfu(1.0, 1.0, None) is None


def test_mfu_goes_into_run_json_metrics_and_the_progress_line(make_recipe, tmp_path, monkeypatch):
    from rich.console import Console

    from medkit.train.verb import train

    monkeypatch.setenv(flops.PEAK_ENV, "2e9")  # the figure the bench measured, pinned: no measuring
    console = Console(record=True, width=200, force_terminal=False)
    r = make_recipe(out=tmp_path / "run", sets={"train.max_steps": 2, "train.eval_every": 0})
    tr = train(r, console=console).summary["train"]
    assert tr["peak_flops"]["source"] == flops.PEAK_ENV and tr["peak_flops"]["flops_per_s"] == 2e9
    assert tr["flops"] > 4 * tr["input_tokens"]  # at least forward + input gradient of every token
    # run.json rounds train_seconds to 0.01 s; MFU is computed from the unrounded time (a 2-step run is ~0.1 s)
    lo, hi = (tr["flops"] / max(tr["train_seconds"] + d, 1e-9) / 2e9 for d in (0.005, -0.005))
    assert lo * 0.999 <= tr["mfu"] <= hi * 1.001
    assert tr["flops_per_input_token"] == round(tr["flops"] / tr["input_tokens"])
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [rec["mfu"] > 0 for rec in records if "loss" in rec] == [True, True]
    lines = [x for x in console.export_text().splitlines() if x.startswith("step ") and "tok/s" in x]
    assert len(lines) == 2 and all("tok/s  MFU " in x and x.endswith("%") for x in lines), lines


def test_a_run_measures_its_own_peak_when_none_is_pinned(make_recipe, tmp_path, monkeypatch):
    from medkit.train.verb import train

    monkeypatch.delenv(flops.PEAK_ENV, raising=False)
    r = make_recipe(out=tmp_path / "run", sets={"train.max_steps": 1, "train.eval_every": 0})
    tr = train(r).summary["train"]
    peak = tr["peak_flops"]
    assert peak["source"] == "measured" and peak["device"] == "cpu" and peak["dtype"] == "float32"
    assert peak["flops_per_s"] > 0 and 0 < tr["mfu"]
    hidden = json.loads((r.run_dir() / "run.json").read_text())["train"]["peak_flops"]["shape"][1]
    assert hidden > 0


def test_cpu_peak_rows_are_not_cut_below_what_the_cores_need():
    """A wide model's 4-GFLOP cap would leave 173 rows (TinyLlama's MLP): the peak is measured on at least
    1024 (or the micro-batch's own tokens when fewer), where the cores reach their matmul speed."""
    assert flops.mlp_tokens(1128, 2048, 5632, "cpu") == flops.CPU_MIN_ROWS == 1024
    assert flops.mlp_tokens(600, 576, 1536, "cpu") == 600  # the SmolLM2 demo's micro-batch, as before
    assert flops.mlp_tokens(20000, 576, 1536, "cpu") == int(4e9 / (2 * 576 * 1536))
    assert flops.mlp_tokens(20000, 2048, 5632, "cuda") == 8192


def test_run_json_divides_by_the_faster_of_the_start_and_end_peaks():
    slow, fast = flops.Peak(1e11, "measured"), flops.Peak(2e11, "measured")
    assert flops.faster(slow, fast) is fast and flops.faster(fast, slow) is fast
    pinned = flops.Peak(5e10, flops.PEAK_ENV)
    assert flops.faster(pinned, fast) is pinned  # MEDKIT_PEAK_FLOPS is not second-guessed
    assert flops.faster(None, fast) is fast and flops.faster(slow, None) is slow


def test_the_progress_rate_counts_training_steps_only(make_recipe, tmp_path, monkeypatch):
    """An eval between two logged steps is not training time: the logged tokens/s is input tokens over the
    steps' own seconds (before, the window ran on the wall clock and a slow eval read as a slow step)."""
    import time

    from medkit.train.loop import Trainer
    from medkit.train.verb import train

    evaluate = Trainer.evaluate

    def slow_eval(self, examples):
        time.sleep(0.5)  # an eval that takes long next to the tiny model's steps
        return evaluate(self, examples)

    monkeypatch.setattr(Trainer, "evaluate", slow_eval)
    monkeypatch.setenv(flops.PEAK_ENV, "2e9")
    sets = {"train.max_steps": 2, "train.eval_every": 1, "train.log_every": 2}
    tr = train(make_recipe(out=tmp_path / "run", sets=sets)).summary["train"]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    (logged,) = [rec for rec in records if "loss" in rec and "tokens_per_s" in rec]
    assert logged["step"] == 2
    rate = tr["input_tokens"] / max(tr["train_seconds"], 0.01)
    assert logged["tokens_per_s"] == pytest.approx(rate, rel=0.2)  # the 0.5 s eval would halve it or worse


def test_a_peak_taken_on_busy_cores_is_measured_again(make_recipe, tmp_path, monkeypatch):
    """MFU above 100% means the peak was measured low (other work on the cores): measure again, keep the faster."""
    from medkit.train.loop import Trainer
    from medkit.train.verb import train

    peaks = iter([flops.Peak(1e3, "measured"), flops.Peak(1e12, "measured"), flops.Peak(1e11, "measured")])
    monkeypatch.setattr(Trainer, "measure_peak", lambda self: next(peaks))
    tr = train(make_recipe(out=tmp_path / "run", sets={"train.max_steps": 2, "train.eval_every": 0})).summary[
        "train"
    ]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [0 < rec["mfu"] < 1 for rec in records if "loss" in rec] == [True, True]
    assert tr["peak_flops"]["flops_per_s"] == 1e12 and 0 < tr["mfu"] < 1
