"""Gemma 4 (GGUF `gemma4`, issue 35) beyond the per-TINY-row tests (test_tiny_export: tokens, f32/f16 greedy
text, metadata, end of turn; test_lora_gguf: adapter vs merged; test_masking; test_families: one training
step -> merge -> GGUF -> adapter): the export against llama.cpp's own converter, a quantized type in
llama.cpp, the ConditionalGeneration checkpoint (MedGemma 2's layout) exported text-only, the configs
llama.cpp would run differently refused in one line, and Gemma 4's native system turn in training and chat.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medkit.errors import ConvertError
from tests.convert.conftest import THREADS


@pytest.mark.slow
@pytest.mark.parametrize("ftype", ["f32", "f16"])
def test_export_is_identical_to_llama_cpps_converter(tiny_model_dir, tiny_gguf, tmp_path, ftype):
    """Same tensor names, shapes, types and values, same metadata (names, medkit's provenance and the keys
    llama.cpp derives when absent aside) as convert_hf_to_gguf.py of the installed llama-cpp-python."""
    from tests.convert.oracle import differences, gguf_contents, llama_cpp_convert

    ref = llama_cpp_convert(tiny_model_dir("gemma4"), tmp_path / f"ref-{ftype}.gguf", ftype)
    if isinstance(ref, str):
        pytest.skip(ref)
    ours = tiny_gguf("gemma4", ftype)
    assert differences(ours, ref, "gemma4") == []
    meta, tensors = gguf_contents(ours)  # the Gemma 4 parts are there, not just equal
    assert meta["gemma4.attention.sliding_window_pattern"] == [True] * 3 + [False, True, False]
    assert meta["gemma4.feed_forward_length"] == [128] * 4 + [256] * 2  # double-wide kv-shared layers
    assert (meta["gemma4.attention.key_length"], meta["gemma4.attention.key_length_swa"]) == (32, 16)
    assert (
        meta["gemma4.attention.shared_kv_layers"] == 2
        and meta["gemma4.embedding_length_per_layer_input"] == 8
    )
    assert meta["tokenizer.ggml.model"] == "gemma4"
    assert "blk.4.attn_k.weight" not in tensors and "blk.3.attn_k.weight" in tensors
    freqs = tensors["rope_freqs.weight"][2]
    np.testing.assert_array_equal(
        freqs, np.float32([1.0] * 4 + [1e30] * 12)
    )  # a quarter of the 32-wide heads turns


@pytest.mark.slow
def test_quantized_export_keeps_transformers_next_tokens(tiny_model_dir, tiny_gguf, tmp_path):
    """q8_0 (llama.cpp's quantizer; the 8-wide per-layer tensors stay f16, rows under one block): the same
    greedy continuation as transformers up to a near-tie, and a KL that only quantization explains. The
    tiny random model's distribution is near-uniform (perplexity about its vocabulary size), so agreement
    over all positions is not the measure here (0.77 at a KL of 7e-4, perplexity +0.03%; f16: 0.995)."""
    from medkit.convert.quant.quantize import quantize
    from medkit.convert.verify import held_out_texts, verify
    from tests.convert.test_tiny_export import PROMPT, _gguf_greedy, _hf, _hf_greedy, _llama

    q8 = tmp_path / "gemma4-q8_0.gguf"
    quantize(tiny_gguf("gemma4", "f16"), q8, "q8_0", threads=THREADS)
    tok, model = _hf(tiny_model_dir("gemma4"))
    prompt = tok(PROMPT)["input_ids"]
    want, logits = _hf_greedy(model, prompt, 24)
    got = _gguf_greedy(_llama(q8), prompt, 24)
    if got != want:  # a near-tie of the near-uniform tiny model (here: step 4, margin 0.03)
        i = next(k for k, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
        assert float(logits[i - len(prompt)][want[i]] - logits[i - len(prompt)][got[i]]) < 0.05
    (res,) = verify([q8], tiny_model_dir("gemma4"), texts=held_out_texts(), threads=THREADS)
    assert res.tokenization_ok and res.kl_vs_hf < 5e-3 and abs(res.ppl / res.ppl_hf - 1) < 0.01, res


def _multimodal(src: Path, dest: Path) -> Path:
    """Gemma4ForConditionalGeneration's layout made from the tiny text model: text_config,
    model.language_model.*, stand-in vision/audio towers and embedders (skipped by name, not exercised)."""
    from safetensors.numpy import load_file, save_file

    shutil.copytree(src, dest)
    text = json.loads((src / "config.json").read_text())
    cfg = {"architectures": ["Gemma4ForConditionalGeneration"], "model_type": "gemma4",
           "text_config": {**text, "architectures": None}, "vision_config": {"model_type": "gemma4_vision"},
           "audio_config": {"model_type": "gemma4_audio"}}  # fmt: skip
    (dest / "config.json").write_text(json.dumps(cfg))
    weights = load_file(str(src / "model.safetensors"))
    renamed = {k.replace("model.", "model.language_model.", 1): v for k, v in weights.items()}
    for name in (
        "model.vision_tower.encoder.layers.0.self_attn.q_proj.linear.weight",
        "model.audio_tower.layers.0.self_attn.q_proj.linear.weight",
        "model.embed_vision.embedding_projection.weight",
        "model.embed_audio.embedding_projection.weight",
    ):
        renamed[name] = np.ones((8, 8), np.float32)  # fmt: skip
    (dest / "model.safetensors").unlink()
    save_file(renamed, str(dest / "model.safetensors"))
    return dest


def test_conditional_generation_exports_the_text_model_and_says_the_towers_were_left_out(
    tiny_model_dir, tmp_path
):
    import gguf

    from medkit.convert.gguf.writer import write_gguf

    src = tiny_model_dir("gemma4")
    mm = _multimodal(src, tmp_path / "medgemma2")
    a = write_gguf(src, tmp_path / "text.gguf", "f32")
    b = write_gguf(mm, tmp_path / "mm.gguf", "f32")
    assert (a.not_exported, b.not_exported) == (0, 4) and a.n_tensors == b.n_tensors
    ta = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(a.path)).tensors}
    tb = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(b.path)).tensors}
    assert ta.keys() == tb.keys()
    for name in ta:
        np.testing.assert_array_equal(ta[name], tb[name])


def _with_config(src: Path, dest: Path, **changes) -> Path:
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(changes)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


ROPE = {"sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25, "rope_theta": 1e6}}  # fmt: skip
# (config changes, words of the one-line refusal): what llama.cpp would run differently from transformers
REFUSED = [
    ({"enable_moe_block": True, "num_experts": 4, "top_k_experts": 2, "moe_intermediate_size": 32}, "mixture of experts"),
    # shared layers would read layer 3 (sliding here) for their full layers: llama.cpp hard-codes n-1 / n-2
    ({"layer_types": ["sliding_attention"] * 2 + ["full_attention", "sliding_attention"] * 2}, "must be full"),
    ({"use_bidirectional_attention": "all"}, "use_bidirectional_attention"),
    ({"rope_parameters": {**ROPE, "full_attention": {**ROPE["full_attention"], "factor": 8.0}}}, "full-layer rope"),
    ({"rope_parameters": {**ROPE, "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}},
     "rope scaling 'linear' on sliding layers"),
    ({"hidden_activation": "silu"}, "hidden_activation"),
]  # fmt: skip


@pytest.mark.parametrize("changes, words", REFUSED, ids=[w for _, w in REFUSED])
def test_configs_llama_cpp_would_run_differently_are_refused_in_one_line(
    tiny_model_dir, tmp_path, changes, words
):
    from medkit.convert.gguf.writer import write_gguf

    folder = _with_config(tiny_model_dir("gemma4"), tmp_path / "m", **changes)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConvertError, match=words) as err:
        write_gguf(folder, out, "f16")
    assert "\n" not in err.value.one_line() and "Gemma 4" in err.value.one_line()
    assert not out.exists() and not list(tmp_path.glob(".out.gguf*"))


def test_system_turn_is_native_in_training_and_the_runtime_and_turn_end_stops(tiny_model_dir, tiny_gguf):
    """Gemma 4's template has a system turn of its own (not folded into the user turn as Gemma 2/3): training
    renders it and the runtime renders the very same text, with the empty thought channel of thinking off;
    <turn|> closes turns and is an end-of-generation token in llama.cpp."""
    import llama_cpp
    from transformers import AutoTokenizer

    from medkit.formats.chat_template import end_of_turn_token, render
    from medkit.runtime.engine import Runtime
    from tests.convert.test_tiny_export import _llama

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Fever?"}]
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir("gemma4")))
    text = render(tok, msgs, generation_prompt=True)
    assert text == ("<bos><|turn>system\nBe brief.<turn|>\n<|turn>user\nFever?<turn|>\n"
                    "<|turn>model\n<|channel>thought\n<channel|>")  # fmt: skip
    assert end_of_turn_token(tok) == "<turn|>"
    path = tiny_gguf("gemma4", "f16")
    with Runtime(path, ctx=256, threads=THREADS) as rt:
        assert rt.render(msgs) == text
    llm = _llama(path)
    end = llm.tokenize(b"<turn|>", add_bos=False, special=True)
    assert len(end) == 1 and llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), end[0])
    ids = llm.tokenize(text.encode(), add_bos=False, special=True)
    assert ids == tok(text, add_special_tokens=False)["input_ids"]  # one BOS, markers as single tokens
