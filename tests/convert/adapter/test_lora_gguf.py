"""GGUF LoRA adapters: llama.cpp's base GGUF + adapter must behave like the merged model's GGUF.

Adapters are made with peft on the tiny random models (lora_B set to random values: a fresh LoRA is a
no-op), merged with peft's merge_and_unload, and both sides run in llama-cpp-python on the same ids.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medkit.errors import ConvertError
from tests.convert.conftest import THREADS
from tests.factories import ARCHS

LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
QWEN35_TARGETS = [*LLAMA_TARGETS, "in_proj_qkv", "in_proj_z", "out_proj"]
GPT2_TARGETS = ["c_attn", "attn.c_proj", "c_fc", "mlp.c_proj"]
PHI3_TARGETS = ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]  # fused Q/K/V and gate/up
TEXT = "The patient has a fever of 38.5 degrees and a dry cough; metformin 500 mg twice a day."
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "chat_template.jinja")  # fmt: skip


def targets_for(arch: str) -> list[str]:
    return GPT2_TARGETS if arch == "gpt2" else LLAMA_TARGETS


def make_adapter(
    base: Path, out: Path, *, merged: Path | None = None, seed: int = 1, b_std: float = 0.05, **lora_kwargs
) -> Path:
    """A PEFT LoRA adapter of ``base`` with random A and B saved at ``out`` (tokenizer files copied next to
    it, as medkit train does); with ``merged``, also the peft-merged HF folder there."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    gpt2 = model.config.model_type == "gpt2"
    targets = {"gpt2": GPT2_TARGETS, "phi3": PHI3_TARGETS, "qwen3_5_text": QWEN35_TARGETS}.get(
        model.config.model_type, LLAMA_TARGETS
    )  # Qwen3.5: its DeltaNet projections too (their LoRA B rows / A columns reordered by V head)
    kwargs = {"r": 8, "lora_alpha": 16, "target_modules": targets}
    kwargs.update(lora_kwargs)
    peft_model = get_peft_model(model, LoraConfig(fan_in_fan_out=gpt2, **kwargs))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                std = 0.3 if "lora_A" in name else b_std
                p.copy_(torch.randn(p.shape, generator=gen) * std)
    peft_model.save_pretrained(str(out))
    copy_tokenizer_files(base, out)
    if merged is not None:
        peft_model.merge_and_unload().save_pretrained(str(merged))
        copy_tokenizer_files(base, merged)
    return out


def copy_tokenizer_files(src: Path, dest: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)


def llama_logits(model: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model), lora_path=str(lora) if lora else None, n_ctx=128, n_batch=128,
        n_threads=THREADS, logits_all=True, verbose=False,
    )  # fmt: skip
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)], dtype=np.float32)
    llm.close()
    return out


def token_ids(folder: Path) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))(TEXT)["input_ids"]


@pytest.fixture(scope="module")
def adapted(tiny_model_dir, tiny_gguf, tmp_path_factory):
    """adapted(arch) -> dict of paths: base HF, base f16/f32 GGUF, adapter, its GGUF, merged HF, merged GGUFs."""
    from medkit.convert.adapter.lora import write_lora_gguf
    from medkit.convert.gguf.writer import write_gguf

    cache: dict[str, dict[str, Path]] = {}

    def get(arch: str) -> dict[str, Path]:
        if arch not in cache:
            root = tmp_path_factory.mktemp(f"lora-{arch}")
            base = tiny_model_dir(arch)
            adapter = make_adapter(base, root / "adapter", merged=root / "merged")
            paths = {"base": base, "adapter": adapter, "merged": root / "merged"}
            paths["adapter_gguf"] = write_lora_gguf(adapter, root / "adapter.gguf", base_dir=base)
            for ftype in ("f16", "f32"):
                paths[f"base_{ftype}"] = tiny_gguf(arch, ftype)
                paths[f"merged_{ftype}"] = write_gguf(
                    root / "merged", root / f"merged-{ftype}.gguf", ftype
                ).path
            cache[arch] = paths
        return cache[arch]

    return get


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_over_float_base_matches_merged_gguf(adapted, arch):
    p = adapted(arch)
    ids = token_ids(p["base"])
    effect = 0.0
    for ftype, tol in (("f32", 2e-3), ("f16", 0.05)):
        with_adapter = llama_logits(p[f"base_{ftype}"], ids, lora=p["adapter_gguf"])
        merged = llama_logits(p[f"merged_{ftype}"], ids)
        if ftype == "f32":
            effect = float(np.abs(llama_logits(p["base_f32"], ids) - merged).max())
        diff = float(np.abs(with_adapter - merged).max())
        agree = float((with_adapter.argmax(-1) == merged.argmax(-1)).mean())
        print(
            f"{arch} {ftype}: adapter-vs-merged max logit diff {diff:.2e} (adapter effect {effect:.2f}), top-1 {agree:.2f}"
        )
        assert effect > 0.5, "the adapter should change the logits"
        assert diff < tol and diff < effect / 50  # f16: the merged weights are rounded after adding B @ A
        assert agree >= 0.9


def hf_logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_adapter_over_quantized_base(adapted, arch, tmp_path):
    """q4_0 base: llama.cpp's base + adapter must equal the adapter merged into the q4_0 weights themselves
    (transformers dequantizes that GGUF). q8_0: it must also agree with the merged model quantized."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from medkit.convert.quant.quantize import quantize

    p = adapted(arch)
    ids = token_ids(p["base"])
    for q in ("q4_0", "q8_0"):
        base_q, merged_q = tmp_path / f"base-{q}.gguf", tmp_path / f"merged-{q}.gguf"
        quantize(p["base_f16"], base_q, q, threads=THREADS)
        quantize(p["merged_f16"], merged_q, q, threads=THREADS)
        with_adapter = llama_logits(base_q, ids, lora=p["adapter_gguf"])
        base = llama_logits(base_q, ids)
        merged = llama_logits(merged_q, ids)
        effect = float(np.abs(base - merged).max())
        vs_merged_q = float(np.abs(with_adapter - merged).max())
        agree_q = float((with_adapter.argmax(-1) == merged.argmax(-1)).mean())
        line = f"{arch} {q}: adapter-vs-merged-{q} max logit diff {vs_merged_q:.3f}, top-1 {agree_q:.2f}"
        if q == "q4_0":  # the exact reference: the adapter merged into the dequantized q4_0 weights
            deq = AutoModelForCausalLM.from_pretrained(
                str(tmp_path), gguf_file=base_q.name, dtype=torch.float32
            )
            ref = hf_logits(PeftModel.from_pretrained(deq, str(p["adapter"])).merge_and_unload(), ids)
            diff = float(np.abs(with_adapter - ref).max())
            agree = float((with_adapter.argmax(-1) == ref.argmax(-1)).mean())
            print(f"{line}; vs HF merge into the dequantized q4_0 base {diff:.3f}, top-1 {agree:.2f} "
                  f"(adapter effect {effect:.2f})")  # fmt: skip
            assert diff < effect / 5 and agree >= 0.85
        else:  # both sides carry q8_0 rounding: they must agree as well as q8_0 agrees with f16
            noise = float(np.abs(merged - llama_logits(p["merged_f16"], ids)).max())
            print(
                f"{line} (q8_0 rounding of the merged model alone {noise:.3f}, adapter effect {effect:.2f})"
            )
            assert vs_merged_q < 1.5 * noise and vs_merged_q < effect / 5 and agree_q >= 0.75


def test_q_k_rows_are_permuted_for_llama_only(adapted):
    """Without the rotary row permutation of lora_b, llama's adapter would not match: check the tensors."""
    import gguf

    from medkit.convert.adapter.lora import load_lora_pairs, permute_rows_for_rope

    for arch, permuted in (("llama", True), ("qwen2", False)):
        p = adapted(arch)
        reader = gguf.GGUFReader(str(p["adapter_gguf"]))
        tensors = {t.name: np.array(t.data) for t in reader.tensors}
        _, pairs = load_lora_pairs(p["adapter"])
        q = next(x for x in pairs if x.module.endswith("layers.0.self_attn.q_proj"))
        k = next(x for x in pairs if x.module.endswith("layers.0.self_attn.k_proj"))
        cfg = json.loads((p["base"] / "config.json").read_text())
        want_q = permute_rows_for_rope(q.b, cfg["num_attention_heads"]) if permuted else q.b
        want_k = permute_rows_for_rope(k.b, cfg["num_key_value_heads"]) if permuted else k.b
        np.testing.assert_array_equal(tensors["blk.0.attn_q.weight.lora_b"], want_q)
        np.testing.assert_array_equal(tensors["blk.0.attn_k.weight.lora_b"], want_k)
        np.testing.assert_array_equal(tensors["blk.0.attn_q.weight.lora_a"], q.a)  # lora_a never moves
        assert permuted == (not np.array_equal(want_q, q.b))


def test_metadata_names_and_gpt2_layout(adapted):
    from medkit.convert.adapter.lora import describe

    d = describe(adapted("gpt2")["adapter_gguf"])
    assert (d["type"], d["adapter_type"], d["architecture"], d["alpha"]) == ("adapter", "lora", "gpt2", 16.0)
    assert "blk.1.attn_qkv.weight.lora_a" in d["tensors"] and "blk.0.ffn_down.weight.lora_b" in d["tensors"]
    d = describe(adapted("mistral")["adapter_gguf"])
    assert d["architecture"] == "llama"  # medkit writes mistral as llama.cpp's llama architecture
    assert len(d["tensors"]) == 2 * 7 * 2 and d["ranks"] == [8]


def test_base_given_as_gguf_gives_the_same_file(adapted, tmp_path):
    from medkit.convert.adapter.lora import write_lora_gguf

    p = adapted("llama")
    out = write_lora_gguf(p["adapter"], tmp_path / "a.gguf", base_dir=p["base_f16"])
    assert out.read_bytes() == p["adapter_gguf"].read_bytes()


def test_rslora_alpha_is_converted(tiny_model_dir, tiny_gguf, tmp_path):
    from medkit.convert.adapter.lora import describe, write_lora_gguf
    from medkit.convert.gguf.writer import write_gguf

    base = tiny_model_dir("llama")
    adapter = make_adapter(
        base, tmp_path / "ad", merged=tmp_path / "merged", r=16, lora_alpha=8, use_rslora=True
    )
    out = write_lora_gguf(adapter, tmp_path / "rs.gguf", base_dir=base)
    alpha = describe(out)["alpha"]
    assert alpha == pytest.approx(8 * 16**0.5)  # alpha / r in llama.cpp == 8 / sqrt(16) in peft
    merged = write_gguf(tmp_path / "merged", tmp_path / "merged.gguf", "f32").path
    ids = token_ids(base)
    diff = np.abs(llama_logits(tiny_gguf("llama", "f32"), ids, lora=out) - llama_logits(merged, ids)).max()
    assert diff < 2e-3


def test_rank_and_alpha_patterns_are_folded_into_b(tiny_model_dir, tiny_gguf, tmp_path):
    from medkit.convert.adapter.lora import describe, write_lora_gguf
    from medkit.convert.gguf.writer import write_gguf

    base = tiny_model_dir("qwen2")
    adapter = make_adapter(
        base, tmp_path / "ad", merged=tmp_path / "merged",
        rank_pattern={"v_proj": 4}, alpha_pattern={"down_proj": 64},
    )  # fmt: skip
    out = write_lora_gguf(adapter, tmp_path / "pat.gguf", base_dir=base)
    assert describe(out)["ranks"] == [4, 8]
    merged = write_gguf(tmp_path / "merged", tmp_path / "merged.gguf", "f32").path
    ids = token_ids(base)
    want = llama_logits(merged, ids)
    diff = np.abs(llama_logits(tiny_gguf("qwen2", "f32"), ids, lora=out) - want).max()
    assert diff < 2e-3
    half = write_lora_gguf(adapter, tmp_path / "pat16.gguf", base_dir=base, dtype="f16")  # half the size
    assert half.stat().st_size < 0.6 * out.stat().st_size
    assert np.abs(llama_logits(tiny_gguf("qwen2", "f32"), ids, lora=half) - want).max() < 2e-2


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"target_modules": ["q_proj", "embed_tokens"]}, "embed"),
        ({"target_modules": ["q_proj", "lm_head"]}, "lm_head"),
        ({"target_modules": ["q_proj"], "modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"target_modules": ["q_proj"], "use_dora": True}, "DoRA"),
    ],
)
def test_adapters_llama_cpp_cannot_apply_are_refused(tiny_model_dir, tmp_path, kwargs, words):
    from medkit.convert.adapter.lora import write_lora_gguf

    base = tiny_model_dir("llama")
    adapter = make_adapter(base, tmp_path / "ad", **kwargs)
    out = tmp_path / "a.gguf"
    with pytest.raises(ConvertError, match=words) as err:
        write_lora_gguf(adapter, out, base_dir=base)
    assert "\n" not in err.value.one_line() and "merge" in err.value.one_line()
    assert not out.exists() and not list(tmp_path.glob(".a.gguf*"))


def _edited_base(src: Path, dest: Path, **changes) -> Path:
    dest.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    cfg.update(changes)
    (dest / "config.json").write_text(json.dumps(cfg))
    copy_tokenizer_files(src, dest)
    return dest


def test_adapter_for_another_base_is_refused(adapted, tiny_model_dir, tmp_path):
    from medkit.convert.adapter.lora import write_lora_gguf

    p = adapted("llama")
    cases = [
        ({"hidden_size": 128}, "hidden size 64 vs 128"),
        ({"num_hidden_layers": 3}, "layers 2 vs 3"),
        ({"intermediate_size": 256}, "intermediate size 128 vs 256"),
    ]
    for i, (changes, words) in enumerate(cases):
        other = _edited_base(p["base"], tmp_path / f"b{i}", **changes)
        with pytest.raises(ConvertError, match=words):
            write_lora_gguf(p["adapter"], tmp_path / "x.gguf", base_dir=other)
    with pytest.raises(ConvertError, match="architecture"):  # a llama adapter on the gpt2 base
        write_lora_gguf(p["adapter"], tmp_path / "x.gguf", base_dir=tiny_model_dir("gpt2"))
    with pytest.raises(ConvertError, match="vocab 512 vs"):  # the qwen2 tokenizer has another size
        other = _edited_base(p["base"], tmp_path / "v", vocab_size=700)
        (other / "tokenizer.model").unlink(missing_ok=True)
        shutil.copy2(tiny_model_dir("qwen2") / "tokenizer.json", other / "tokenizer.json")
        write_lora_gguf(p["adapter"], tmp_path / "x.gguf", base_dir=other)
    assert not (tmp_path / "x.gguf").exists()


def test_no_overwrite_without_force(adapted, tmp_path):
    from medkit.convert.adapter.lora import write_lora_gguf

    p = adapted("qwen2")
    out = tmp_path / "adapter.gguf"
    out.write_bytes(b"keep me")
    with pytest.raises(ConvertError, match="--force"):
        write_lora_gguf(p["adapter"], out, base_dir=p["base"])
    assert out.read_bytes() == b"keep me"
    write_lora_gguf(p["adapter"], out, base_dir=p["base"], force=True)
    assert out.read_bytes() == p["adapter_gguf"].read_bytes()


def test_bad_adapter_folders(tmp_path, tiny_model_dir):
    from medkit.convert.adapter.lora import write_lora_gguf

    base = tiny_model_dir("qwen2")
    with pytest.raises(ConvertError, match="adapter_config.json"):
        write_lora_gguf(tmp_path, tmp_path / "a.gguf", base_dir=base)
    adapter = make_adapter(base, tmp_path / "ad", target_modules=["q_proj"])
    weights = adapter / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ConvertError, match="corrupt or truncated"):
        write_lora_gguf(adapter, tmp_path / "a.gguf", base_dir=base)
