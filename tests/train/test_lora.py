"""Precision plan, 4-bit config, LoRA targets and optimizer choice: the decisions made before training."""

from __future__ import annotations

import pytest
import torch

from medkit.errors import TrainError
from medkit.train import optim
from medkit.train import plan as lora


def test_cpu_falls_back_to_plain_lora_in_one_line(make_recipe):
    plan = lora.plan_precision(make_recipe(), device="cpu")
    assert not plan.quantize and plan.dtype is torch.float32 and plan.mixed_precision == "no"
    assert "\n" not in plan.note and "plain LoRA" in plan.note and "NF4" in plan.note
    assert lora.plan_precision(make_recipe(sets={"quant.mode": "none"}), device="cpu").note == ""
    bf16 = lora.plan_precision(make_recipe(sets={"model.dtype": "bfloat16"}), device="mps")
    assert bf16.dtype is torch.bfloat16 and "mps" in bf16.note


def test_quant_require_without_cuda_is_an_error(make_recipe):
    with pytest.raises(TrainError, match=r"quant.require = true .* needs a CUDA GPU .* this machine has cpu"):
        lora.plan_precision(make_recipe(sets={"quant.require": True}), device="cpu")


def test_cuda_plan_uses_nf4_with_double_quant(make_recipe, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    plan = lora.plan_precision(make_recipe(), device="cuda")
    assert plan.quantize and plan.compute_dtype is torch.bfloat16 and plan.mixed_precision == "bf16"
    r = make_recipe()
    cfg = lora.bnb_config(r.quant.mode, r.quant.double_quant, plan.compute_dtype)
    assert cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4" and cfg.bnb_4bit_use_double_quant
    assert cfg.bnb_4bit_compute_dtype is torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    old_gpu = lora.plan_precision(make_recipe(sets={"quant.mode": "fp4"}), device="cuda")
    assert old_gpu.compute_dtype is torch.float16 and old_gpu.mixed_precision == "fp16"
    fp4 = make_recipe(sets={"quant.mode": "fp4"})
    assert (
        lora.bnb_config(fp4.quant.mode, fp4.quant.double_quant, old_gpu.compute_dtype).bnb_4bit_quant_type
        == "fp4"
    )


def _model(tiny_model_dir, arch):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model_dir(arch), dtype=torch.float32)


@pytest.mark.parametrize(
    "arch,expected",
    [("llama", ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]),
     ("gpt2", ["c_attn", "c_proj", "c_fc"])],
)  # fmt: skip
def test_auto_targets_per_architecture(tiny_model_dir, arch, expected):
    assert lora.resolve_targets(_model(tiny_model_dir, arch), ["auto"]) == expected


def test_target_that_matches_nothing_lists_the_modules(tiny_model_dir):
    model = _model(tiny_model_dir, "llama")
    assert lora.resolve_targets(model, ["q_proj", "v_proj"]) == ["q_proj", "v_proj"]
    assert lora.resolve_targets(model, ["all-linear"]) == "all-linear"
    with pytest.raises(TrainError) as err:
        lora.resolve_targets(model, ["q_proj", "query_key_value"])
    msg = err.value.one_line()
    assert "'query_key_value'" in msg and "q_proj" in msg and "down_proj" in msg and "\n" not in msg


def test_build_model_trains_only_lora(make_recipe):
    r = make_recipe(sets={"lora.targets": ["q_proj", "v_proj"], "train.grad_checkpointing": True})
    model = lora.build_model(r, lora.plan_precision(r, device="cpu"))
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(("q_proj" in n or "v_proj" in n) for n in trainable)
    hf = model.get_base_model()
    assert getattr(hf, "is_activation_checkpointing", None) or hf.is_gradient_checkpointing
    n_train, n_total = lora.param_counts(model)
    assert 0 < n_train < n_total
    mem = lora.estimate_memory(r, lora.plan_precision(r, device="cpu"), model)
    assert mem["total"] > mem["weights"] > 0


def test_optimizer_choice(make_recipe):
    r = make_recipe()
    assert optim.optimizer_name(r, "cuda") == "adamw_fused"
    assert optim.optimizer_name(r, "cpu") == "adamw_fused"  # torch's fused kernel runs on CPU too
    assert optim.optimizer_name(r, "mps") == "adamw"
    with pytest.raises(TrainError, match="paged_adamw_8bit.*needs CUDA"):
        optim.optimizer_name(make_recipe(sets={"train.optimizer": "paged_adamw_8bit"}), "cpu")
    p = torch.nn.Parameter(torch.zeros(4, 4))
    opt, name = optim.build_optimizer([p], r, "cpu")
    assert name == "adamw_fused" and isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"]
    sched = optim.build_scheduler(opt, make_recipe(sets={"train.warmup_ratio": 0.25}), total_steps=8)
    lrs = []
    for _ in range(8):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert lrs[0] == 0.0 and lrs[2] == pytest.approx(r.train.lr) and lrs[-1] < lrs[3]  # warmup, then cosine


@pytest.mark.gpu
def test_qlora_on_cuda_uses_bitsandbytes_4bit_layers(make_recipe):
    import bitsandbytes as bnb

    r = make_recipe(sets={"train.grad_checkpointing": True})
    plan = lora.plan_precision(r)
    assert plan.quantize
    model = lora.build_model(r, plan)
    four_bit = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four_bit, "the base's linears should be bitsandbytes Linear4bit"
    opt, name = optim.build_optimizer(
        [p for p in model.parameters() if p.requires_grad],
        make_recipe(sets={"train.optimizer": "paged_adamw_8bit"}),
        "cuda",
    )
    assert type(opt).__name__ == "PagedAdamW8bit"


def test_qlora_path_trains_on_bitsandbytes_4bit_layers_on_cpu(make_recipe, tiny_model_dir, monkeypatch):
    """The whole 4-bit path of `medkit train` (BitsAndBytesConfig load, k-bit preparation, LoRA over
    Linear4bit, checkpoints, adapter) on bitsandbytes' CPU backend: the product trains plain LoRA on CPU,
    so the plan is forced here; the CUDA-only parts (device map, paged optimizer) have the gpu test above."""
    bnb = pytest.importorskip("bitsandbytes")
    import json

    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medkit.train.verb import train

    try:  # an older bitsandbytes without the CPU backend cannot quantize here
        bnb.functional.quantize_4bit(torch.randn(8, 8), quant_type="nf4")
    except Exception as exc:  # pragma: no cover - depends on the installed wheel
        pytest.skip(f"bitsandbytes has no CPU 4-bit backend: {exc}")
    monkeypatch.setattr(
        lora,
        "plan_precision",
        lambda r, device=None: lora.Plan("cpu", True, torch.float32, torch.float32, "no"),
    )
    built = {}
    real_build = lora.build_model
    monkeypatch.setattr(lora, "build_model", lambda *a, **k: built.setdefault("m", real_build(*a, **k)))
    r = make_recipe(sets={"train.max_steps": 8, "train.eval_every": 8, "train.grad_checkpointing": True})
    result = train(r)

    model = built["m"]
    four_bit = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(four_bit) == 7 * model.config.num_hidden_layers  # every projection of every block
    assert all(p.requires_grad == ("lora_" in n) for n, p in model.named_parameters())
    info = json.loads((result.run_dir / "run.json").read_text())["train"]
    assert info["quantized"] is True
    assert info["best_val_loss"] < info["initial_val_loss"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir("llama"))
    tuned = PeftModel.from_pretrained(base, result.run_dir / "adapter")  # loads over the unquantized base
    with torch.no_grad():
        assert torch.isfinite(tuned(input_ids=torch.tensor([[1, 5, 9, 2]])).logits).all()
