"""The newer families (issue 16) beyond what the parametrized export/LoRA/masking tests cover per TINY row:
Llama 3.2's real config shape and template, Gemma 3 inside a multimodal checkpoint, config features a
family module does not handle (refused in one line, no file), and each family's Modelfile stops.

Qwen3 and Gemma 3 are rows of tests/factories.py TINY, so test_tiny_export (tokens, f32/f16 greedy text,
metadata, end of turn), test_lora_gguf (adapter vs merged) and test_masking run on them too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medkit.errors import ConvertError
from tests.convert.conftest import THREADS
from tests.factories import build_llama32


@pytest.fixture(scope="module")
def llama32(tmp_path_factory) -> dict[str, Path]:
    from medkit.convert.gguf_writer import write_gguf

    root = tmp_path_factory.mktemp("llama32")
    hf = build_llama32(root / "hf")
    return {"hf": hf, "f16": write_gguf(hf, root / "llama32-f16.gguf", "f16").path}


def test_llama32_shape_f16_parity_and_greedy_text(llama32):
    from medkit.convert.verify import held_out_texts, verify
    from tests.convert.test_tiny_export import PROMPT, _gguf_greedy, _hf, _hf_greedy, _llama

    (res,) = verify([llama32["f16"]], llama32["hf"], texts=held_out_texts(), threads=THREADS)
    assert res.tokenization_ok and res.agreement >= 0.99, res
    tok, model = _hf(llama32["hf"])
    prompt = tok(PROMPT)["input_ids"]
    want, logits = _hf_greedy(model, prompt, 24)
    got = _gguf_greedy(_llama(llama32["f16"]), prompt, 24)
    if got != want:  # only a near-tie may flip a choice
        i = next(k for k, (a, b) in enumerate(zip(got, want, strict=True)) if a != b)
        assert float(logits[i - len(prompt)][want[i]] - logits[i - len(prompt)][got[i]]) < 2e-3


def test_llama32_rope_factors_tied_output_eot_and_single_bos(llama32):
    import gguf
    import llama_cpp

    from medkit.convert.arch.layout import llama3_rope_factors
    from tests.convert.test_tiny_export import _field, _llama

    reader = gguf.GGUFReader(str(llama32["f16"]))
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    config = json.loads((llama32["hf"] / "config.json").read_text())
    want = llama3_rope_factors(config, 16)
    np.testing.assert_array_equal(tensors["rope_freqs.weight"], want)
    assert len(set(want.tolist())) > 2  # factor 1, factor 32 and the smooth band in between
    assert "output.weight" not in tensors  # tied embeddings
    tokens = _field(reader, "tokenizer.ggml.tokens")
    eot = _field(reader, "tokenizer.ggml.eot_token_id")
    assert tokens[eot] == "<|eot_id|>" and _field(reader, "tokenizer.ggml.pre") == "llama-bpe"
    llm = _llama(llama32["f16"])
    assert llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), eot)
    # the template writes <|begin_of_text|>; the runtime tokenizes without adding another
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(llama32["hf"]))
    text = tok.apply_chat_template(
        [{"role": "user", "content": "Fever?"}], tokenize=False, add_generation_prompt=True
    )
    ids = llm.tokenize(text.encode(), add_bos=False, special=True)
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id


def test_llama32_training_examples_start_with_one_bos(llama32, tmp_path):
    from transformers import AutoTokenizer

    from medkit.data import prepare
    from tests.data.helpers import assert_exact_masking, make_recipe, qa_rows, write_jsonl

    tok = AutoTokenizer.from_pretrained(str(llama32["hf"]))
    prepared = prepare(make_recipe(write_jsonl(tmp_path / "qa.jsonl", qa_rows(12))), tok)
    assert prepared.eot_token == "<|eot_id|>" and assert_exact_masking(prepared, tok) == 12
    assert all(ex.input_ids[:2].count(tok.bos_token_id) == 1 for ex in prepared.train)


def _copy_with_config(src: Path, dest: Path, **changes) -> Path:
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


# (tiny family, config changes, words of the one-line refusal): a new unsupported feature is one row
REFUSED = [
    ("qwen3", {"num_experts": 8}, "mixture-of-experts"),
    ("qwen3", {"use_sliding_window": True, "layer_types": ["sliding_attention"] * 2}, "sliding-window"),
    ("qwen3", {"attention_bias": True}, "attention_bias"),
    ("gemma3", {"layer_types": ["sliding_attention"] * 6}, "layer_types"),
    (
        "gemma3",
        {
            "rope_parameters": {
                "full_attention": {"rope_type": "default", "rope_theta": 1e6},
                "sliding_attention": {"rope_type": "default", "rope_theta": 5e4},
            }
        },
        "sliding-layer rope base",
    ),  # fmt: skip
    ("gemma3", {"attn_logit_softcapping": 50.0}, "attn_logit_softcapping"),
    ("gemma3", {"query_pre_attn_scalar": 256}, "query_pre_attn_scalar"),
    ("llama", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope scaling 'dynamic'"),
]


@pytest.mark.parametrize("family, changes, words", REFUSED, ids=[f"{f}-{w}" for f, _, w in REFUSED])
def test_config_features_a_family_does_not_handle_are_refused(
    tiny_model_dir, tmp_path, family, changes, words
):
    from medkit.convert.gguf_writer import write_gguf

    folder = _copy_with_config(tiny_model_dir(family), tmp_path / "m", **changes)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConvertError, match=words) as err:
        write_gguf(folder, out, "f16")
    assert "\n" not in err.value.one_line()
    assert not out.exists() and not list(tmp_path.glob(".out.gguf*"))


def test_gemma3_multimodal_checkpoint_exports_the_text_model_vision_tower_not_exported(
    tiny_model_dir, tmp_path
):
    """MedGemma-4B's layout (Gemma3ForConditionalGeneration: text_config, model.language_model.*, a vision
    tower and projector) made from the tiny text model: the GGUF is the text model's, tensor for tensor.
    The vision tower itself is not exercised: its tensors here are stand-ins, skipped by name."""
    from safetensors.numpy import load_file, save_file

    from medkit.convert.gguf_writer import write_gguf

    src = tiny_model_dir("gemma3")
    mm = tmp_path / "medgemma"
    shutil.copytree(src, mm)
    text = json.loads((src / "config.json").read_text())
    cfg = {"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3",
           "text_config": {**text, "architectures": None}, "vision_config": {"model_type": "siglip_vision_model"},
           "mm_tokens_per_image": 256}  # fmt: skip
    (mm / "config.json").write_text(json.dumps(cfg))
    weights = load_file(str(src / "model.safetensors"))
    renamed = {k.replace("model.", "model.language_model.", 1): v for k, v in weights.items()}
    renamed["model.vision_tower.vision_model.embeddings.patch_embedding.weight"] = np.ones(
        (8, 3, 2, 2), np.float32
    )
    renamed["model.multi_modal_projector.mm_input_projection_weight"] = np.ones((8, 64), np.float32)
    (mm / "model.safetensors").unlink()
    save_file(renamed, str(mm / "model.safetensors"))
    a = write_gguf(src, tmp_path / "text.gguf", "f32")
    b = write_gguf(mm, tmp_path / "mm.gguf", "f32")
    assert (a.not_exported, b.not_exported) == (0, 2) and a.n_tensors == b.n_tensors

    import gguf

    ta = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(a.path)).tensors}
    tb = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(b.path)).tensors}
    assert ta.keys() == tb.keys()
    for name in ta:
        np.testing.assert_array_equal(ta[name], tb[name])


def test_gemma3_norm_weights_are_written_plus_one(tiny_model_dir, tiny_gguf):
    import gguf
    from safetensors.numpy import load_file

    hf = load_file(str(tiny_model_dir("gemma3") / "model.safetensors"))
    got = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(tiny_gguf("gemma3", "f32"))).tensors}
    for hf_name, gguf_name in [("model.layers.5.self_attn.q_norm.weight", "blk.5.attn_q_norm.weight"),
                               ("model.layers.0.post_feedforward_layernorm.weight", "blk.0.post_ffw_norm.weight"),
                               ("model.norm.weight", "output_norm.weight")]:  # fmt: skip
        np.testing.assert_allclose(got[gguf_name], hf[hf_name] + 1.0, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "family, stop, marker",
    [("qwen3", "<|im_end|>", "<|im_start|>assistant"), ("gemma3", "<end_of_turn>", "<start_of_turn>model")],
)
def test_modelfile_template_and_stops(tiny_model_dir, tiny_gguf, tmp_path, family, stop, marker):
    from medkit.convert.export import Source, _write_modelfile

    src = Source(tiny_model_dir(family), tmp_path, family)
    _write_modelfile(src, tiny_gguf(family, "f16"), log=lambda msg: None)
    text = (tmp_path / "Modelfile").read_text()
    assert f'PARAMETER stop "{stop}"' in text and marker in text


def test_llama32_modelfile_stops_on_eot(llama32, tmp_path):
    from medkit.convert.export import Source, _write_modelfile

    _write_modelfile(Source(llama32["hf"], tmp_path, "l32"), llama32["f16"], log=lambda msg: None)
    text = (tmp_path / "Modelfile").read_text()
    assert 'PARAMETER stop "<|eot_id|>"' in text and "<|start_header_id|>assistant" in text
