"""The newer families (issue 16) beyond what the parametrized export/LoRA/masking tests cover per TINY row:
Llama 3.2's real config shape and template, Gemma 3 inside a multimodal checkpoint, config features a
family module does not handle (refused in one line, no file), and each family's Modelfile stops.

Qwen3, Gemma 3 and Phi-3 are rows of tests/factories.py TINY, so test_tiny_export (tokens, f32/f16 greedy
text, metadata, end of turn), test_lora_gguf (adapter vs merged; Phi-3's on the fused qkv_proj/gate_up_proj)
and test_masking run on them too. Here: Phi-3's LongRoPE / partial rotary metadata, its plain-rope and
long-context variants, thinking on/off in the Runtime, and one training step -> merge -> GGUF per new family.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medkit.errors import ConvertError
from tests.convert.conftest import THREADS, assert_export_refused, copy_with_config
from tests.factories import PHI3_LONGROPE, build_llama32


@pytest.fixture(scope="module")
def llama32(tmp_path_factory) -> dict[str, Path]:
    from medkit.convert.gguf.writer import write_gguf

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

    from medkit.data.tokens import prepare
    from tests.data.helpers import assert_exact_masking, make_recipe, qa_rows, write_jsonl

    tok = AutoTokenizer.from_pretrained(str(llama32["hf"]))
    prepared = prepare(make_recipe(write_jsonl(tmp_path / "qa.jsonl", qa_rows(12))), tok)
    assert prepared.eot_token == "<|eot_id|>" and assert_exact_masking(prepared, tok) == 12
    assert all(ex.input_ids[:2].count(tok.bos_token_id) == 1 for ex in prepared.train)


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
    ("gemma2", {"layer_types": ["full_attention", "sliding_attention"] * 2}, "layer_types"),
    ("gemma2", {"attn_logit_softcapping": None}, "attn_logit_softcapping unset"),
    ("gemma2", {"query_pre_attn_scalar": 256}, "query_pre_attn_scalar"),
    ("llama", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope scaling 'dynamic'"),
    (
        "phi3",
        {"rope_parameters": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 1e4}},
        "rope scaling 'yarn'",
    ),
    ("phi3", {"rope_parameters": {**PHI3_LONGROPE, "short_factor": [1.0] * 8}}, "short_factor has 8 entries"),
    ("phi3", {"attention_bias": True}, "attention_bias"),
    ("phi3", {"num_local_experts": 16}, "mixture of experts"),
]


@pytest.mark.parametrize("family, changes, words", REFUSED, ids=[f"{f}-{w}" for f, _, w in REFUSED])
def test_config_features_a_family_does_not_handle_are_refused(
    tiny_model_dir, tmp_path, family, changes, words
):
    assert_export_refused(copy_with_config(tiny_model_dir(family), tmp_path / "m", **changes), words)


def test_gemma3_multimodal_checkpoint_exports_the_text_model_vision_tower_not_exported(
    tiny_model_dir, tmp_path
):
    """MedGemma-4B's layout (Gemma3ForConditionalGeneration: text_config, model.language_model.*, a vision
    tower and projector) made from the tiny text model: the GGUF is the text model's, tensor for tensor.
    The vision tower itself is not exercised: its tensors here are stand-ins, skipped by name."""
    from safetensors.numpy import load_file, save_file

    from medkit.convert.gguf.writer import write_gguf

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


@pytest.mark.parametrize(
    "family, q_norm", [("gemma3", "model.layers.5.self_attn.q_norm.weight"), ("gemma2", None)]
)
def test_gemma_norm_weights_are_written_plus_one(tiny_model_dir, tiny_gguf, family, q_norm):
    import gguf
    from safetensors.numpy import load_file

    hf = load_file(str(tiny_model_dir(family) / "model.safetensors"))
    got = {t.name: np.array(t.data) for t in gguf.GGUFReader(str(tiny_gguf(family, "f32"))).tensors}
    pairs = [("model.layers.0.post_feedforward_layernorm.weight", "blk.0.post_ffw_norm.weight"),
             ("model.layers.1.post_attention_layernorm.weight", "blk.1.post_attention_norm.weight"),
             ("model.norm.weight", "output_norm.weight")]  # fmt: skip
    pairs += [(q_norm, "blk.5.attn_q_norm.weight")] if q_norm else []
    for hf_name, gguf_name in pairs:
        np.testing.assert_allclose(got[gguf_name], hf[hf_name] + 1.0, rtol=0, atol=1e-6)


def test_gemma2_soft_caps_reach_llama_cpp(tiny_model_dir, tmp_path):
    """Caps small enough to bend the tiny model's logits: llama.cpp's logits equal transformers' with both
    caps, the attention cap moves them far more than that, and the final cap bounds them: llama.cpp
    applies both caps the GGUF carries."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    from medkit.convert.gguf.writer import write_gguf
    from tests.convert.adapter.test_lora_gguf import hf_logits, llama_logits, token_ids

    caps = {"attn_logit_softcapping": 0.05, "final_logit_softcapping": 0.5}
    folder = copy_with_config(tiny_model_dir("gemma2"), tmp_path / "m", **caps)
    f32 = write_gguf(folder, tmp_path / "capped-f32.gguf", "f32").path
    fields = gguf.GGUFReader(str(f32)).fields
    for key, value in caps.items():
        assert float(fields[f"gemma2.{key}"].parts[-1][0]) == pytest.approx(value)
    ids = token_ids(folder)
    got = llama_logits(f32, ids)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    want = hf_logits(model, ids)
    model.config.attn_logit_softcapping = 50.0
    for layer in model.model.layers:
        layer.self_attn.attn_logit_softcapping = 50.0
    uncapped = hf_logits(model, ids)
    diff = float(np.abs(got - want).max())
    assert diff < 5e-3 and float(np.abs(uncapped - want).max()) > 20 * diff  # here 9e-4 vs 0.98
    assert float(np.abs(got).max()) <= caps["final_logit_softcapping"] + 1e-5


@pytest.mark.parametrize(
    "family, stop, marker",
    [
        ("qwen3", "<|im_end|>", "<|im_start|>assistant"),
        ("gemma3", "<end_of_turn>", "<start_of_turn>model"),
        ("gemma2", "<end_of_turn>", "<start_of_turn>model"),
        ("phi3", "<|end|>", "<|assistant|>"),
    ],  # fmt: skip
)
def test_modelfile_template_and_stops(tiny_model_dir, tiny_gguf, tmp_path, family, stop, marker):
    from medkit.convert.modelfile import write_for_export

    write_for_export(tiny_model_dir(family), tmp_path, tiny_gguf(family, "f16"), None, log=lambda msg: None)
    text = (tmp_path / "Modelfile").read_text()
    assert f'PARAMETER stop "{stop}"' in text and marker in text


def test_llama32_modelfile_stops_on_eot(llama32, tmp_path):
    from medkit.convert.modelfile import write_for_export

    write_for_export(llama32["hf"], tmp_path, llama32["f16"], None, log=lambda msg: None)
    text = (tmp_path / "Modelfile").read_text()
    assert 'PARAMETER stop "<|eot_id|>"' in text and "<|start_header_id|>assistant" in text


# ---- Phi-3 / Phi-3.5 / Phi-4-mini ---------------------------------------------------------------------


def test_phi3_fused_tensors_partial_rotary_and_longrope_metadata(tiny_model_dir, tiny_gguf):
    import gguf

    from tests.convert.test_tiny_export import _field

    reader = gguf.GGUFReader(str(tiny_gguf("phi3", "f32")))
    tensors = {t.name: np.array(t.data) for t in reader.tensors}
    for kind in ("short", "long"):
        want = np.asarray(PHI3_LONGROPE[f"{kind}_factor"], dtype=np.float32)
        np.testing.assert_array_equal(tensors[f"rope_factors_{kind}.weight"], want)
    assert tensors["blk.0.attn_qkv.weight"].shape == ((4 + 2 * 2) * 16, 64)  # Q, then GQA K and V rows
    assert tensors["blk.0.ffn_up.weight"].shape == (2 * 128, 64)  # gate rows, then up rows
    assert _field(reader, "phi3.rope.dimension_count") == 12  # 0.75 of a 16-wide head
    assert _field(reader, "phi3.rope.scaling.original_context_length") == 4096
    want = float(np.sqrt(1 + np.log(131072 / 4096) / np.log(4096)))  # what transformers scales cos/sin by
    assert abs(_field(reader, "phi3.rope.scaling.attn_factor") - want) < 1e-6
    assert _field(reader, "phi3.attention.sliding_window") == 0  # none (Phi-4); llama.cpp reads 0 as none
    assert "output.weight" not in tensors  # tied, as Phi-4-mini


# (name, config overrides, texts at least this many tokens, GGUF type): each variant must reach parity
PHI3_VARIANTS = [
    ("plain-rope", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 1.0},
                    "partial_rotary_factor": 1.0, "tie_word_embeddings": False}, 0, "f16"),  # Phi-3-mini-4k
    # pretraining context 32: llama.cpp (context 64+) and transformers (texts past 32) both take long_factor
    # (attention factor 1.84). f32: on this near-uniform random model f16 rounding flips near-ties (98.6%,
    # KL 1e-6); the TINY row's f16 GGUF covers f16 with the short factors.
    ("long-factors", {"original_max_position_embeddings": 32,
                      "rope_parameters": {**PHI3_LONGROPE, "original_max_position_embeddings": 32}}, 40, "f32"),
]  # fmt: skip


@pytest.mark.parametrize("name, changes, min_tokens, ftype", PHI3_VARIANTS, ids=[v[0] for v in PHI3_VARIANTS])
def test_phi3_variants_parity(tmp_path, name, changes, min_tokens, ftype):
    import gguf
    from transformers import AutoTokenizer

    from medkit.convert.gguf.writer import write_gguf
    from medkit.convert.verify import held_out_texts, verify
    from tests.factories import build_tiny_model

    hf = build_tiny_model("phi3", tmp_path / "hf", **changes)
    tok = AutoTokenizer.from_pretrained(str(hf))
    texts = [t for t in held_out_texts() if len(tok(t)["input_ids"]) > min_tokens]
    assert len(texts) >= 5
    path = write_gguf(hf, tmp_path / f"phi3-{name}-{ftype}.gguf", ftype).path
    (res,) = verify([path], hf, texts=texts, threads=THREADS)
    assert (
        res.tokenization_ok
        and res.agreement >= 0.99
        and res.max_logit_diff < {"f32": 0.02, "f16": 0.1}[ftype]
    )
    names = {t.name for t in gguf.GGUFReader(str(path)).tensors}
    assert ("rope_factors_long.weight" in names) is (name != "plain-rope")


def test_phi3_end_of_turn_is_an_end_of_generation_token(tiny_gguf):
    import llama_cpp

    from tests.convert.test_tiny_export import _llama

    llm = _llama(tiny_gguf("phi3", "f16"))
    end = llm.tokenize(b"<|end|>", add_bos=False, special=True)
    assert len(end) == 1
    assert llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llm.model), end[0])


def test_gemma2_system_prompt_folds_into_the_first_user_turn_in_training_and_the_runtime(
    tiny_model_dir, tiny_gguf
):
    """Gemma 2's own template refuses a system role: training renders the system prompt into the first
    user turn (as Gemma 3's template does itself), and the runtime renders the very same text."""
    from transformers import AutoTokenizer

    from medkit.formats.chat_template import render
    from medkit.runtime.engine import Runtime

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Fever?"}]
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir("gemma2")))
    with pytest.raises(Exception, match="System role not supported"):
        tok.apply_chat_template(msgs, tokenize=False)
    text = render(tok, msgs, generation_prompt=True)
    assert text.endswith("<start_of_turn>user\nBe brief.\n\nFever?<end_of_turn>\n<start_of_turn>model\n")
    with Runtime(tiny_gguf("gemma2", "f16"), ctx=256, threads=THREADS) as rt:
        assert rt.render(msgs) == text


# ---- enable_thinking in the Runtime ---------------------------------------------------------------------


def test_runtime_enable_thinking_decides_the_empty_think_block(tiny_gguf):
    from medkit.runtime.engine import Runtime

    msgs = [{"role": "user", "content": "Fever?"}]
    path = tiny_gguf("qwen3", "f16")
    with Runtime(path, ctx=256, threads=THREADS) as rt:
        assert rt.render(msgs).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")  # default off
    with Runtime(path, ctx=256, threads=THREADS, enable_thinking=True) as rt:
        assert rt.render(msgs).endswith("<|im_start|>assistant\n") and "<think>" not in rt.render(msgs)


# ---- one training step -> merge -> f16 GGUF -> GGUF LoRA, per new family ---------------------------------


@pytest.mark.parametrize("family", ["qwen3", "gemma3", "gemma2", "phi3", "gemma4"])
def test_one_training_step_merges_and_exports(family, tiny_model_dir, tmp_path):
    from tests.convert.tiny_train import adapter_equals_merge, merged_f16, two_steps

    base = tiny_model_dir(family)
    run = two_steps(family, base, tmp_path)
    f16, res = merged_f16(run, tmp_path, family)
    assert res.agreement >= 0.99, res
    adapter_equals_merge(run, base, f16, tmp_path)


PHI4_MINI_TEMPLATE = (  # microsoft/Phi-4-mini-instruct's chat template (tool branch left out): no newlines
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% else %}{{ eos_token }}{% endif %}"
)


@pytest.mark.parametrize("template, family", [(PHI4_MINI_TEMPLATE, "phi4-mini")])
def test_modelfile_recognises_template_families_without_a_tiny_model(template, family):
    from medkit.convert.modelfile import detect_family, ollama_template

    assert detect_family(template) == family
    assert "<|user|>{{ .Content }}<|end|><|assistant|>" in ollama_template(template, strict=True)


def test_medgemma_auto_targets_adapt_the_language_model_only(tiny_model_dir):
    """MedGemma's SigLIP tower has q/k/v_proj too: 'auto' targets must leave it alone, else the adapter could
    not be written as a GGUF LoRA (the tower is not exported). The tower here is a tiny random stand-in."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, Gemma3Config, Gemma3ForConditionalGeneration, SiglipVisionConfig

    from medkit.train.plan import resolve_targets

    text = AutoConfig.from_pretrained(str(tiny_model_dir("gemma3")))
    vision = SiglipVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                                image_size=28, patch_size=14)  # fmt: skip
    cfg = Gemma3Config(text_config=text.to_dict(), vision_config=vision.to_dict(), mm_tokens_per_image=4)
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(cfg)
    targets = resolve_targets(model, ["auto"])
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=targets))
    adapted = [n for n, _ in peft_model.named_modules() if n.endswith(".lora_A")]
    assert adapted and not any("vision_tower" in n or "multi_modal_projector" in n for n in adapted)
    assert len(adapted) == 7 * text.num_hidden_layers  # q, k, v, o, gate, up, down of every text layer


# o200k's split regex as tiktoken and Phi-4-mini's tokenizer.json write it (one alternation per line here)
O200K_SPLIT = "|".join(
    (
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    )
)


def test_phi4_mini_o200k_pre_tokenizer_is_llama_cpps_gpt4o_not_yet_a_tiny_model():
    """Phi-4-mini's real tokenizer splits like GPT-4o (o200k); llama.cpp calls that pre-tokenizer `gpt-4o`.
    A regex one character off is refused in one line rather than mapped to a wrong pre-tokenizer."""
    from medkit.convert.gguf.vocab import detect_pre

    def tokenizer_json(pattern: str) -> dict:
        split = {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": False}
        byte_level = {
            "type": "ByteLevel",
            "add_prefix_space": False,
            "trim_offsets": True,
            "use_regex": False,
        }
        return {
            "normalizer": None,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, byte_level]},
        }

    assert detect_pre(tokenizer_json(O200K_SPLIT)) == "gpt-4o"
    with pytest.raises(ConvertError, match="unknown byte-level BPE pre-tokenizer"):
        detect_pre(tokenizer_json(O200K_SPLIT.replace("{1,3}", "{1,4}")))
