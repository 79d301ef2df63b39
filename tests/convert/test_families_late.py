"""The families of issue 35 (SmolLM3, Qwen3.5), beyond what the parametrized TINY-row tests cover
(test_tiny_export: tokens, f32/f16 greedy text, metadata; test_lora_gguf: adapter vs merged):

* the export equals llama.cpp's own converter on the same checkpoint (tests/convert/llama_cpp_oracle.py):
  tensor names, shapes, types and values, and the metadata;
* configs llama.cpp would run differently are refused in one line, nothing written;
* one training step -> merge -> f16 GGUF (greedy parity) -> GGUF LoRA adapter (vs merged) -> chat in the
  Runtime with the family's thinking switch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.convert.conftest import THREADS, assert_export_refused, copy_with_config

LATE = ["smollm3", "qwen35"]
PRE = {"smollm3": "llama-bpe", "qwen35": "qwen35"}  # their tokenizer.ggml.pre (see llama_cpp_oracle)


@pytest.mark.slow
@pytest.mark.parametrize("ftype", ["f32", "f16"])
@pytest.mark.parametrize("family", LATE)
def test_export_equals_llama_cpps_converter(family, ftype, tiny_model_dir, tiny_gguf, tmp_path):
    from tests.convert.llama_cpp_oracle import convert, diff

    ref = convert(tiny_model_dir(family), tmp_path / f"ref-{ftype}.gguf", ftype, pre=PRE[family])
    assert diff(tiny_gguf(family, ftype), ref, ulp=("ssm_a",)) == []


# (family, config changes, words of the one-line refusal)
REFUSED = [
    ("smollm3", {"no_rope_layers": [1, 1, 0, 1]}, "no_rope_layers"),
    ("smollm3", {"no_rope_layers": [1, 1, 1, 1]}, "every 4th layer"),
    ("smollm3", {"no_rope_layers": None, "no_rope_layer_interval": 2}, "no_rope_layers"),
    ("smollm3", {"use_sliding_window": True, "sliding_window": 16}, "sliding-window"),
    ("smollm3", {"attention_bias": True}, "attention_bias"),
    ("smollm3", {"mlp_bias": True}, "mlp_bias"),
    ("smollm3", {"partial_rotary_factor": 0.5}, "partial rotary"),
    ("smollm3", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e6, "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
     "rope scaling 'llama3'"),
    ("qwen35", {"num_experts": 8}, "mixture of experts"),
    ("qwen35", {"linear_value_head_dim": 32}, "one DeltaNet state size"),
    ("qwen35", {"linear_num_value_heads": 3}, "not a multiple"),
    ("qwen35", {"attention_bias": True}, "attention_bias"),
    ("qwen35", {"layer_types": ["linear_attention", "full_attention"] * 2}, "layer_types"),
    ("qwen35", {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e7,
                                    "partial_rotary_factor": 0.25, "mrope_section": [2, 1, 1]}}, "rope scaling 'yarn'"),
]  # fmt: skip


@pytest.mark.parametrize("family, changes, words", REFUSED, ids=[f"{f}-{w}" for f, _, w in REFUSED])
def test_configs_llama_cpp_would_run_differently_are_refused(
    family, changes, words, tiny_model_dir, tmp_path
):
    assert_export_refused(copy_with_config(tiny_model_dir(family), tmp_path / "m", **changes), words)


def test_smollm3_nope_layer_matters_and_llama_cpp_skips_rope_there(tiny_model_dir, tiny_gguf):
    """The 4th layer's missing rope is what llama.cpp computes: transformers' logits with it equal
    llama.cpp's, and roping that layer too moves them far more than the difference."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.convert.adapter.test_lora_gguf import hf_logits, llama_logits, token_ids

    folder = tiny_model_dir("smollm3")
    ids = token_ids(folder)
    got = llama_logits(tiny_gguf("smollm3", "f32"), ids)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    want = hf_logits(model, ids)
    model.model.layers[3].self_attn.use_rope = 1
    roped = hf_logits(model, ids)
    diff = float(np.abs(got - want).max())
    moved = float(np.abs(roped - want).max())
    assert diff < 0.02 and moved > 20 * diff, (diff, moved)


@pytest.mark.parametrize("family", LATE)
def test_modelfile_template_and_stops(family, tiny_model_dir, tiny_gguf, tmp_path):
    from medkit.convert.modelfile import write_for_export

    write_for_export(tiny_model_dir(family), tmp_path, tiny_gguf(family, "f16"), None, log=lambda msg: None)
    text = (tmp_path / "Modelfile").read_text()
    assert 'PARAMETER stop "<|im_end|>"' in text and "<|im_start|>assistant" in text


# (family, thinking, how the rendered prompt ends)
THINKING = [
    ("smollm3", False, "<|im_start|>assistant\n<think>\n\n</think>\n"),
    ("smollm3", True, "<|im_start|>user\nFever?<|im_end|>\n<|im_start|>assistant\n"),
    ("qwen35", False, "<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    ("qwen35", True, "<|im_start|>assistant\n<think>\n"),
]


@pytest.mark.parametrize("family, thinking, end", THINKING)
def test_thinking_switch_in_training_and_the_runtime(family, thinking, end, tiny_model_dir, tiny_gguf):
    from transformers import AutoTokenizer

    from medkit.formats.chat_template import render
    from medkit.runtime.engine import Runtime

    msgs = [{"role": "user", "content": "Fever?"}]
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir(family)))
    text = render(tok, msgs, generation_prompt=True, enable_thinking=thinking)
    assert text.endswith(end)
    with Runtime(tiny_gguf(family, "f16"), ctx=256, threads=THREADS, enable_thinking=thinking) as rt:
        assert rt.render(msgs) == text


@pytest.mark.slow
@pytest.mark.parametrize("family", LATE)
def test_train_merge_export_adapter_and_chat(family, tiny_model_dir, tmp_path):
    """One training step -> merge -> f16 GGUF at greedy parity with the merged model -> the GGUF LoRA over
    the base GGUF equals the merged GGUF -> the Runtime chats on the export and stops at the end of turn."""
    from medkit.runtime.engine import Runtime
    from tests.convert.tiny_train import adapter_equals_merge, merged_f16, two_steps

    base = tiny_model_dir(family)
    run = two_steps(family, base, tmp_path)
    f16, res = merged_f16(run, tmp_path, family)
    assert res.tokenization_ok and res.agreement >= 0.99, res
    adapter_equals_merge(run, base, f16, tmp_path)
    with Runtime(f16, ctx=256, threads=THREADS) as rt:
        answer = rt.chat([{"role": "user", "content": "What is gout?"}], max_tokens=24, temperature=0.0)
    assert answer.stats.completion_tokens > 0 and "<|im_start|>" not in answer.text


# ---- Qwen3.5: the MTP block, the multimodal checkpoint, the DeltaNet tensors ---------------------------


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))


def _gguf(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    import gguf

    from tests.convert.llama_cpp_oracle import metadata

    return {t.name: np.array(t.data) for t in gguf.GGUFReader(str(path)).tensors}, metadata(path)


def test_qwen35_deltanet_tensors_are_laid_out_as_llama_cpp_needs(tiny_model_dir, tiny_gguf):
    """Independent of the oracle: ssm_a = -exp(A_log), the squeezed conv1d, the V heads in tiled order,
    ssm_norm as is and every other norm + 1, the gated q_proj as is, the MTP block as blk.4."""
    hf = _weights(tiny_model_dir("qwen35"))
    got, meta = _gguf(tiny_gguf("qwen35", "f32"))
    nk, nv, d = 2, 4, 16
    tiled = np.arange(nv).reshape(nk, nv // nk).T.reshape(nv)  # V head j of K head g: g * 2 + j -> j * 2 + g
    np.testing.assert_allclose(
        got["blk.0.ssm_a"], -np.exp(hf["model.layers.0.linear_attn.A_log"])[tiled], rtol=1e-6
    )
    np.testing.assert_array_equal(got["blk.1.ssm_dt.bias"], hf["model.layers.1.linear_attn.dt_bias"][tiled])
    conv = hf["model.layers.2.linear_attn.conv1d.weight"][:, 0, :]
    v = conv[2 * nk * d :].reshape(nv, d, 4)[tiled].reshape(-1, 4)
    np.testing.assert_array_equal(got["blk.2.ssm_conv1d.weight"], np.concatenate([conv[: 2 * nk * d], v]))
    out = hf["model.layers.0.linear_attn.out_proj.weight"]
    np.testing.assert_array_equal(
        got["blk.0.ssm_out.weight"], out.reshape(64, nv, d)[:, tiled].reshape(64, -1)
    )
    np.testing.assert_array_equal(got["blk.0.ssm_norm.weight"], hf["model.layers.0.linear_attn.norm.weight"])
    for hf_name, name in [("model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"),
                          ("model.layers.3.self_attn.q_norm.weight", "blk.3.attn_q_norm.weight"),
                          ("mtp.pre_fc_norm_hidden.weight", "blk.4.nextn.hnorm.weight"),
                          ("mtp.layers.0.input_layernorm.weight", "blk.4.attn_norm.weight")]:  # fmt: skip
        np.testing.assert_allclose(got[name], hf[hf_name] + 1.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got["blk.3.attn_q.weight"], hf["model.layers.3.self_attn.q_proj.weight"])
    np.testing.assert_array_equal(got["blk.4.nextn.eh_proj.weight"], hf["mtp.fc.weight"])
    assert meta["qwen35.block_count"] == 5 and meta["qwen35.nextn_predict_layers"] == 1
    assert meta["qwen35.attention.recurrent_layers"] == [1, 1, 1, 0, 0]
    assert meta["qwen35.rope.dimension_count"] == 8 and meta["qwen35.rope.dimension_sections"] == [2, 1, 1, 0]


def test_qwen35_without_mtp_weights_is_written_without_the_nextn_block(tiny_model_dir, tiny_gguf, tmp_path):
    """A folder transformers saved (no mtp.* weights, the config still declaring one MTP layer): the GGUF has
    the decoder only, says so in one line, and llama.cpp runs it at parity; with MTP, the same decoder."""
    from safetensors.numpy import save_file

    from medkit.convert.gguf.writer import write_gguf
    from medkit.convert.verify import held_out_texts, verify

    folder = copy_with_config(tiny_model_dir("qwen35"), tmp_path / "m")
    weights = {k: v for k, v in _weights(folder).items() if not k.startswith("mtp.")}
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    res = write_gguf(folder, tmp_path / "no-mtp.gguf", "f32")
    assert res.notes == ["the checkpoint has no MTP (mtp.*) weights: GGUF written without the nextn block"]
    got, meta = _gguf(res.path)
    with_mtp, _ = _gguf(tiny_gguf("qwen35", "f32"))
    assert meta["qwen35.block_count"] == 4 and "qwen35.nextn_predict_layers" not in meta
    assert meta["qwen35.attention.recurrent_layers"] == [1, 1, 1, 0]
    assert got.keys() == {k for k in with_mtp if not k.startswith("blk.4.")}
    (parity,) = verify([res.path], folder, texts=held_out_texts(), threads=THREADS)
    assert parity.tokenization_ok and parity.agreement >= 0.99 and parity.max_logit_diff < 0.02, parity


def test_qwen35_conditional_generation_exports_the_text_model_vision_tower_not_exported(
    tiny_model_dir, tiny_gguf, tmp_path
):
    """Qwen3.5's released layout (Qwen3_5ForConditionalGeneration: text_config, model.language_model.*, a
    vision tower model.visual.*, mtp.* at the top) made from the tiny text model: the GGUF is the text
    model's, tensor for tensor, and export says the tower is left out. The tower tensors are stand-ins."""
    from safetensors.numpy import save_file

    from medkit.convert.export import export, resolve_source
    from medkit.convert.gguf.writer import write_gguf

    src = tiny_model_dir("qwen35")
    mm = tmp_path / "qwen35-vl"
    shutil.copytree(src, mm)
    text = json.loads((src / "config.json").read_text())
    cfg = {"architectures": ["Qwen3_5ForConditionalGeneration"], "model_type": "qwen3_5",
           "text_config": {**text, "architectures": None, "model_type": "qwen3_5_text"},
           "vision_config": {"model_type": "qwen3_5", "depth": 1}, "image_token_id": 5,
           "tie_word_embeddings": True}  # fmt: skip
    (mm / "config.json").write_text(json.dumps(cfg))
    weights = {(k.replace("model.", "model.language_model.", 1) if k.startswith("model.") else k): v
               for k, v in _weights(src).items()}  # fmt: skip
    weights["model.visual.patch_embed.proj.weight"] = np.ones((8, 3, 2, 2, 2), np.float32)
    weights["model.visual.blocks.0.attn.qkv.weight"] = np.ones((24, 8), np.float32)
    save_file(weights, str(mm / "model.safetensors"), metadata={"format": "pt"})
    res = write_gguf(mm, tmp_path / "mm.gguf", "f32")
    assert res.not_exported == 2
    got, meta = _gguf(res.path)
    want, want_meta = _gguf(tiny_gguf("qwen35", "f32"))
    assert got.keys() == want.keys() and meta == want_meta
    for name in want:
        np.testing.assert_array_equal(got[name], want[name])
    lines: list[str] = []
    export(resolve_source(str(mm), tmp_path / "out"), ["f16"], log=lines.append)
    assert any("tensors of the vision/audio towers are not exported" in line for line in lines)
