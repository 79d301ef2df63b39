"""The profile bench (benchmarks/profile_bench.py): the FLOP count behind MFU against the matmuls torch runs."""

from __future__ import annotations

import pytest

from benchmarks import profile_bench


def test_matmul_flops_are_read_from_the_recorded_shapes():
    assert profile_bench.matmul_flops("aten::mm", [[3, 4], [4, 5]]) == 2 * 3 * 4 * 5
    assert profile_bench.matmul_flops("aten::addmm", [[5], [3, 4], [4, 5], [], []]) == 2 * 3 * 4 * 5
    assert profile_bench.matmul_flops("aten::addmm_", [[3, 5], [3, 4], [4, 5]]) == 2 * 3 * 4 * 5
    assert profile_bench.matmul_flops("aten::bmm", [[2, 3, 4], [2, 4, 5]]) == 2 * 2 * 3 * 4 * 5
    assert profile_bench.matmul_flops("aten::add", [[3, 4], [3, 4]]) == 0
    kinds = [
        profile_bench.kind(n)
        for n in ("aten::addmm_", "aten::bmm", "aten::_fused_adamw_", "aten::mul", "HeadCE")
    ]
    assert kinds == ["matmul", "attention", "optimizer", "elementwise+copies", "autograd+python"]


CASES = [
    {},
    {"train.fuse": "off"},
    {"train.grad_checkpointing": False},
    {"train.grad_checkpointing": False, "train.fuse": "off"},
]


@pytest.mark.parametrize("sets", CASES)
def test_the_flop_count_is_what_torch_executes(make_recipe, tmp_path, sets):
    """Every matmul FLOP that medkit.train.flops counts (attention aside: one fused kernel on CPU) is one that
    torch runs, and nothing runs uncounted: batch 1 (no padding), fused and PEFT's forward, with and without
    activation checkpointing. The one documented overcount: without checkpointing nothing asks for the first
    layer's q/k/v input gradient (the embeddings are frozen), so it is counted but never computed."""
    r = make_recipe(sets={"train.batch_size": 1, "lora.dropout": 0.0, "train.eval_every": 0, **sets})
    trainer = profile_bench.build_trainer(r, tmp_path)
    assert all(m.training for m in trainer.model.modules())  # train mode before any eval or fit()
    got = profile_bench.profile(trainer, steps=1, warm=1, isolate=False)
    tokens = sum(trainer.lengths[i] for b in trainer.last_batches for i in b.indices())
    attn = trainer.model.get_base_model().model.layers[0].self_attn
    first = sum(  # layer 0's q/k/v: frozen in*out plus LoRA A's in*r, whose input gradients are counted
        p.numel()
        for n in ("q_proj", "k_proj", "v_proj")
        for k, p in getattr(attn, n).named_parameters()
        if "lora_B" not in k
    )
    overcount = 0 if r.train.grad_checkpointing else 2 * tokens * first
    assert got["matmul_flops_executed"] == got["matmul_flops_counted"] - overcount > 0
    assert got["flops"] > got["matmul_flops_counted"]  # attention is counted on top
    assert sum(got["seconds_by_kind"].values()) > 0 and got["seconds_by_kind"]["matmul"] > 0


@pytest.mark.slow
def test_the_profile_bench_reports_the_demo(monkeypatch, capsys):
    monkeypatch.setenv("MEDKIT_PROFILE_STEPS", "1")
    result = profile_bench.main()
    out = capsys.readouterr().out
    assert 0.95 < result["count_over_executed"] <= 1.05 and 0 < result["mfu"] <= result["ceiling_mfu"]
    assert "count / executed" in out and "costliest matmuls" in out and "ceiling" in out
    assert all(s["alone_gflops"] and s["in_step_gflops"] > 0 for s in result["matmul_shapes"])
