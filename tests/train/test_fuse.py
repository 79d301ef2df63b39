"""train.fuse: q/k/v and gate/up in one matmul each give PEFT's outputs, gradients, losses and resume."""

from __future__ import annotations

import json

import pytest
import torch

from medkit.train import fuse
from medkit.train.loop import Interrupted
from medkit.train.verb import train
from tests.train.conftest import losses

SETS = {"train.max_steps": 4, "train.eval_every": 2, "train.save_every": 0, "lora.dropout": 0.0}


def _lora_model(make_recipe, sets=None):
    """The trainer's model (PEFT on the tiny llama), LoRA B random so that A has gradients too."""
    from medkit.train import plan as lora

    r = make_recipe(sets={"lora.dropout": 0.0, **(sets or {})})
    torch.manual_seed(0)
    model = lora.build_model(r, lora.plan_precision(r))
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return model.train()


def _batch(model):
    torch.manual_seed(2)
    ids = torch.randint(3, model.config.vocab_size, (3, 17))
    mask = torch.ones_like(ids)
    mask[1, 12:] = 0  # padding: the attention mask takes the other path
    return {"input_ids": ids, "attention_mask": mask}


def _step(model, batch):
    out = model(**batch).logits
    (out.float().pow(2).mean()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad(set_to_none=True)
    return out.detach(), grads


def test_fused_forward_and_lora_grads_equal_peft(make_recipe):
    plain, fused = _lora_model(make_recipe), _lora_model(make_recipe)
    keys = {k: v.clone() for k, v in fused.state_dict().items()}
    n, why = fuse.fuse(fused, "auto")
    assert fused.training and all(
        m.training for m in fused.modules()
    )  # the probe left the modes as they were
    layers = plain.config.num_hidden_layers
    assert n == 2 * layers and "q_proj+k_proj+v_proj" in why and "gate_proj+up_proj" in why
    after = fused.state_dict()
    assert list(after) == list(keys)  # the same names, values and adapter
    for k, v in keys.items():
        assert torch.equal(after[k], v), k
    attn = fused.base_model.model.model.layers[0].self_attn
    q, k = attn.q_proj.base_layer.weight, attn.k_proj.base_layer.weight
    assert q.untyped_storage().data_ptr() == k.untyped_storage().data_ptr()  # views of one weight, no copy

    batch = _batch(plain)
    for _ in range(2):  # twice: nothing is left over from the first step (gradient checkpointing is on)
        (oa, ga), (ob, gb) = _step(plain, batch), _step(fused, batch)
        torch.testing.assert_close(ob, oa, rtol=1e-5, atol=1e-5)
        assert ga.keys() == gb.keys() and any("lora_A" in k for k in ga)
        for name in ga:
            assert ga[name].abs().max() > 0, name
            torch.testing.assert_close(gb[name], ga[name], rtol=1e-5, atol=1e-6, msg=name)
    with torch.no_grad():  # evaluation inside training
        plain.eval(), fused.eval()
        torch.testing.assert_close(fused(**batch).logits, plain(**batch).logits, rtol=1e-5, atol=1e-5)
    assert all(m.pending is None for m in _groups(fused))  # nothing kept alive between calls
    with torch.no_grad():  # generation with a KV cache: the same tokens
        ids = batch["input_ids"][:1, :6]
        kw = {"max_new_tokens": 5, "do_sample": False, "use_cache": True}
        assert torch.equal(fused.generate(input_ids=ids, **kw), plain.generate(input_ids=ids, **kw))

    assert fuse.unfuse(fused) == 7 * layers  # q/k/v, gate/up and o_proj, down_proj alone
    assert attn.q_proj.base_layer.weight.untyped_storage().data_ptr() != k.untyped_storage().data_ptr()
    with torch.no_grad():
        torch.testing.assert_close(fused(**batch).logits, plain(**batch).logits, rtol=1e-5, atol=1e-5)


def _groups(model):
    return {
        id(g): g for m in model.modules() if fuse.ATTR in m.__dict__ for g in [m.__dict__[fuse.ATTR][0]]
    }.values()


def test_a_sibling_with_another_input_takes_the_plain_path(make_recipe):
    model = _lora_model(make_recipe)
    fuse.fuse(model, "on")
    attn = model.base_model.model.model.layers[0].self_attn
    x = torch.randn(2, 5, model.config.hidden_size)
    y = x.clone()  # equal values, another tensor: not the group's input
    with torch.no_grad():
        q = attn.q_proj(x)
        k = attn.k_proj(y)
        v = attn.v_proj(x)
        fuse.unfuse(model)
        torch.testing.assert_close(q, attn.q_proj(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(k, attn.k_proj(y), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(v, attn.v_proj(x), rtol=1e-5, atol=1e-6)


def test_unsafe_models_are_not_fused(make_recipe):
    assert fuse.fuse(_lora_model(make_recipe), "off") == (0, "train.fuse = off")
    n, why = fuse.fuse(_lora_model(make_recipe, {"lora.dropout": 0.1}), "auto")
    assert n == 0 and "lora.dropout > 0" in why
    n, why = fuse.fuse(_lora_model(make_recipe), "on", quantized=True)
    assert n == 0 and "4-bit" in why
    model = _lora_model(make_recipe)
    model.add_adapter("second", model.peft_config["default"])
    n, why = fuse.fuse(model, "auto")
    assert n == 0 and "more than one adapter" in why
    n, why = fuse.fuse(_lora_model(make_recipe, {"lora.targets": ["q_proj", "o_proj"]}), "auto")
    assert n == 0 and why.startswith("auto: no LoRA projections share an input; ")
    assert why.endswith(" alone (o_proj, q_proj)")  # each still one autograd function


def test_dora_is_not_fused(make_recipe):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(make_recipe().model.base, dtype=torch.float32)
    model = get_peft_model(
        base, LoraConfig(r=4, target_modules=["q_proj", "k_proj", "v_proj"], use_dora=True)
    )
    n, why = fuse.fuse(model, "auto")
    assert n == 0 and "DoRA" in why


def test_gpt2_conv1d_is_not_fused(make_recipe):
    n, why = fuse.fuse(_gpt2(make_recipe), "auto")
    assert n == 0 and "Conv1D" in why


def _gpt2(make_recipe):
    from medkit.train import plan as lora

    r = make_recipe(arch="gpt2", sets={"lora.dropout": 0.0})
    return lora.build_model(r, lora.plan_precision(r))


def test_fused_training_repeats_losses_adapter_and_resumes(make_recipe, tmp_path):
    from safetensors.torch import load_file

    plain = train(make_recipe(out=tmp_path / "plain", sets={**SETS, "train.fuse": "off"})).run_dir
    fused = train(make_recipe(out=tmp_path / "fused", sets={**SETS, "train.fuse": "auto"})).run_dir
    info = json.loads((fused / "run.json").read_text())["train"]
    assert info["fused"]["groups"] > 0 and info["fused"]["why"].startswith("auto: ")
    assert json.loads((plain / "run.json").read_text())["train"]["fused"] == {
        "groups": 0, "why": "train.fuse = off"
    }  # fmt: skip
    assert info["flops"] == json.loads((plain / "run.json").read_text())["train"]["flops"]  # the same work
    a, b = losses(plain), losses(fused)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-4), f"step {step}"
    wa = load_file(str(plain / "adapter" / "adapter_model.safetensors"))
    wb = load_file(str(fused / "adapter" / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=1e-4, atol=1e-6)

    cut = make_recipe(out=tmp_path / "cut", sets={**SETS, "train.fuse": "on"})
    with pytest.raises(Interrupted):
        train(cut, interrupt_at=2)
    resumed = train(make_recipe(out=tmp_path / "cut", sets={**SETS, "train.fuse": "on"}), resume=True).run_dir
    c = losses(resumed)
    assert sorted(c) == [1, 2, 3, 4]
    for step in a:
        assert c[step] == pytest.approx(a[step], abs=1e-4), f"resumed step {step}"


@pytest.mark.slow
def test_fused_and_compiled_layers_repeat_eager_losses(make_recipe, tmp_path):
    sets = {**SETS, "train.compile": "on"}
    eager = train(make_recipe(out=tmp_path / "eager", sets={**SETS, "train.fuse": "off"})).run_dir
    fast = train(make_recipe(out=tmp_path / "fast", sets={**sets, "train.fuse": "on"})).run_dir
    info = json.loads((fast / "run.json").read_text())["train"]
    assert info["compiled"]["layers"] is True and info["fused"]["groups"] > 0
    a, b = losses(eager), losses(fast)
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    for step in a:
        assert b[step] == pytest.approx(a[step], abs=1e-4), f"step {step}"


def test_one_autograd_function_only_where_it_is_exact(make_recipe):
    """lora_fn runs for one float dtype without autocast; under autocast the group path gives PEFT's result."""
    from medkit.train import lora_fn

    plain, model = _lora_model(make_recipe), _lora_model(make_recipe)
    fuse.fuse(model, "auto")
    group = model.base_model.model.model.layers[0].self_attn.q_proj.__dict__[fuse.ATTR][0]
    x = torch.randn(2, 5, model.config.hidden_size)
    assert lora_fn.fits(x, group.weight, group.members, group.adapter)
    assert not lora_fn.fits(x.double(), group.weight, group.members, group.adapter)
    batch = _batch(plain)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not lora_fn.fits(x, group.weight, group.members, group.adapter)
        torch.testing.assert_close(model(**batch).logits, plain(**batch).logits, rtol=2e-2, atol=2e-2)
