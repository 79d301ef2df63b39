"""Gemma 4 text (GGUF `gemma4`): Gemma4ForCausalLM and the language model of Gemma4ForConditionalGeneration
(Gemma 4 E2B/E4B/31B, MedGemma 2; the vision and audio towers and their embedders are not exported, and
export says so in one line).

What llama.cpp's gemma4 expects, and what this module does for it:
* RMSNorm multiplies by the stored weight (no Gemma 3 +1): norms are written as they are;
* per-layer input embeddings: ``embed_tokens_per_layer`` -> ``per_layer_token_embd``, the per-layer model
  projection and its norm, and per block the input gate, projection, post-norm (the gguf name map knows
  them) and ``layer_scalar`` -> ``layer_output_scale``; their width -> ``embedding_length_per_layer_input``;
* sliding and full layers: ``layer_types`` -> the ``sliding_window_pattern`` array; head sizes differ
  (full: ``global_head_dim`` or ``per_layer_config``) -> ``key_length``/``value_length`` (full) and their
  ``_swa`` twins; the sliding layers' rope base -> ``rope.freq_base_swa``;
* proportional rope on full layers: every dimension of the head rotates in llama.cpp
  (``rope.dimension_count`` = the full head size), and the ``rope_freqs`` tensor (1 for the rotated pairs,
  1e30 for the rest) stops the pairs transformers leaves unrotated;
* key/value shared across the last ``num_kv_shared_layers`` layers (those carry no k/v tensors) ->
  ``attention.shared_kv_layers``; their double-wide MLPs -> a per-layer ``feed_forward_length`` array;
* full layers with their own key/value head count (``num_global_key_value_heads``) -> a per-layer
  ``head_count_kv`` array; ``attention_k_eq_v`` (values are the keys) needs nothing: no v_proj is written;
* the tokenizer is written as llama.cpp's ``gemma4`` model (BPE over SentencePiece-style pieces).
Refused in one line: a layout llama.cpp would run differently (the shared layers read the last full and
the last-but-one sliding layer before them: llama.cpp hard-codes that), mixture of experts (26B-A4B:
medkit writes no expert tensors), rope scaling other than proportional on full / default on sliding
layers, bidirectional attention, another activation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from medkit.convert.arch.base import LLAMA_TARGETS, Dims, Family, decoder_dims
from medkit.errors import ConvertError

TOWERS = ("model.vision_tower.", "model.audio_tower.", "model.embed_vision.", "model.embed_audio.",
          "vision_tower.", "audio_tower.", "embed_vision.", "embed_audio.")  # fmt: skip
UNROTATED = 1e30  # rope_freqs entry that turns a pair's frequency to ~0 (llama.cpp divides theta by it)
# tokens llama.cpp's converter marks user-defined so that they are always rendered (the chat parser reads them)
VISIBLE = ("<|channel>", "<channel|>", "<|tool_call>", "<tool_call|>", "<|tool_response>", "<tool_response|>",
           '<|"|>')  # fmt: skip


def _refuse(what: str) -> ConvertError:
    return ConvertError(f"Gemma 4 config not supported: {what}")


def text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The language-model config, flattened; the two layer types' rope parameters kept under ``_rope``."""
    out = {k: v for k, v in config.items() if k not in ("text_config", "vision_config", "audio_config")}
    out.update(config.get("text_config") or {})
    params = out.pop("rope_parameters", None) or {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10_000.0},
        "full_attention": {
            "rope_type": "proportional",
            "partial_rotary_factor": 0.25,
            "rope_theta": 1_000_000.0,
        },
    }  # Gemma4TextConfig's defaults
    out["_rope"] = params
    out["rope_theta"] = float((params.get("full_attention") or {}).get("rope_theta", 1_000_000.0))
    out.pop("rope_scaling", None)
    return out


def layer_types(c: Mapping[str, Any]) -> list[str]:
    n = int(c["num_hidden_layers"])
    types = list(
        c.get("layer_types") or ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(n)]
    )
    if types:
        types[-1] = "full_attention"  # Gemma4TextConfig forces it
    return types


def _full_override(c: Mapping[str, Any], key: str) -> Any:
    """A full-attention layer's entry of ``per_layer_config`` (transformers 5.2x configs), or None."""
    types = layer_types(c)
    for idx, entry in (c.get("per_layer_config") or {}).items():
        if int(idx) < len(types) and types[int(idx)] == "full_attention" and key in (entry or {}):
            return entry[key]
    return None


def full_head_dim(c: Mapping[str, Any]) -> int:
    value = c.get("global_head_dim") or _full_override(c, "head_dim")
    return int(value if value is not None else 512)  # Gemma4TextConfig's default


def full_kv_heads(c: Mapping[str, Any]) -> int | None:
    """Full layers' own key/value head count: as transformers reads it, num_global_key_value_heads counts
    only with attention_k_eq_v (per_layer_config entries always)."""
    value = _full_override(c, "num_key_value_heads")
    if value is None and c.get("attention_k_eq_v"):
        value = c.get("num_global_key_value_heads")
    return int(value) if value is not None else None


def _check(c: Mapping[str, Any], n_layer: int) -> None:
    if c.get("enable_moe_block") or c.get("num_experts"):
        raise _refuse("mixture of experts (enable_moe_block; medkit does not write expert tensors)")
    if c.get("use_bidirectional_attention") == "all":
        raise _refuse("use_bidirectional_attention='all' (an encoder, not a causal LM)")
    if (c.get("hidden_activation") or "gelu_pytorch_tanh") != "gelu_pytorch_tanh":
        raise _refuse(f"hidden_activation '{c.get('hidden_activation')}' (llama.cpp's gemma4 uses GELU-tanh)")
    if c.get("attention_bias"):
        raise _refuse("attention_bias (llama.cpp's gemma4 has no attention biases)")
    rope = c.get("_rope") or {}
    full, local = rope.get("full_attention") or {}, rope.get("sliding_attention") or {}
    if (full.get("rope_type") or "default") != "proportional" or float(full.get("factor", 1.0)) != 1.0:
        raise _refuse(f"full-layer rope {full} (llama.cpp applies proportional rope, factor 1)")
    if (local.get("rope_type") or "default") != "default":
        raise _refuse(f"rope scaling '{local.get('rope_type')}' on sliding layers")
    types = layer_types(c)
    if len(types) != n_layer or set(types) - {"sliding_attention", "full_attention"}:
        raise _refuse(f"layer_types {types}")
    shared = int(c.get("num_kv_shared_layers") or 0)
    first = n_layer - shared
    if shared and (
        first < 2 or types[first - 1] != "full_attention" or types[first - 2] != "sliding_attention"
    ):
        raise _refuse(
            f"num_kv_shared_layers {shared} with layer_types {types}: llama.cpp's shared layers read layer "
            f"{first - 1} (must be full) and layer {first - 2} (must be sliding)"
        )


def gemma4_dims(config: Mapping[str, Any]) -> Dims:
    c = {
        "head_dim": 256,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        **config,
    }  # config-class defaults
    d = decoder_dims(c)
    _check(c, d.n_layer)
    return Dims(d.n_layer, d.n_embd, d.n_head, d.n_head_kv, full_head_dim(c), d.n_ff, d.n_ctx, d.n_vocab)


def _replace(writer: Any, key: str, value: list[int]) -> None:
    """Write a per-layer array where the generic code wrote the scalar (one key, no duplicate warning)."""
    for kv in writer.kv_data:
        kv.pop(key.format(arch=writer.arch), None)
    writer.add_array(key.format(arch=writer.arch), value)


def gemma4_hparams(writer: Any, config: Mapping[str, Any]) -> None:
    import gguf

    c = {"head_dim": 256, "num_key_value_heads": 4, **config}
    n_layer = int(c["num_hidden_layers"])
    types = layer_types(c)
    shared = int(c.get("num_kv_shared_layers") or 0)
    head_swa = int(c["head_dim"])
    writer.add_sliding_window(int(c.get("sliding_window") or 512))
    writer.add_sliding_window_pattern([t == "sliding_attention" for t in types])
    writer.add_shared_kv_layers(shared)
    writer.add_embedding_length_per_layer_input(int(c.get("hidden_size_per_layer_input") or 0))
    local = (c.get("_rope") or {}).get("sliding_attention") or {}
    writer.add_rope_freq_base_swa(float(local.get("rope_theta", 10_000.0)))
    head_full = full_head_dim(c)  # written by the generic code only when it differs from hidden / heads
    for key in (gguf.Keys.Attention.KEY_LENGTH, gguf.Keys.Attention.VALUE_LENGTH):
        writer.kv_data[0].pop(key.format(arch=writer.arch), None)
    writer.add_key_length(head_full)
    writer.add_value_length(head_full)
    writer.add_key_length_swa(head_swa)
    writer.add_value_length_swa(head_swa)
    writer.add_rope_dimension_count_swa(head_swa)
    if c.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(float(c["final_logit_softcapping"]))
    if c.get("use_double_wide_mlp"):  # the kv-shared layers' MLPs are twice as wide
        n_ff = int(c["intermediate_size"])
        widths = [n_ff if i < n_layer - shared else 2 * n_ff for i in range(n_layer)]
        _replace(writer, gguf.Keys.LLM.FEED_FORWARD_LENGTH, widths)
    kv_full = full_kv_heads(c)
    if kv_full is not None:
        kv_swa = int(c["num_key_value_heads"])
        heads = [kv_swa if t == "sliding_attention" else kv_full for t in types]
        _replace(writer, gguf.Keys.Attention.HEAD_COUNT_KV, heads)


def proportional_rope_freqs(config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    import numpy as np

    full = (config.get("_rope") or {}).get("full_attention") or {}
    head = full_head_dim(config)
    rotated = int(head * float(full.get("partial_rotary_factor", 1.0)) / 2)
    values = [1.0] * rotated + [UNROTATED] * (head // 2 - rotated)
    return [("rope_freqs.weight", np.asarray(values, dtype=np.float32))]


FAMILY = Family(
    name="gemma4",
    hf_architectures=("Gemma4ForCausalLM", "Gemma4ForConditionalGeneration"),
    model_types=("gemma4_text", "gemma4"),
    lora_targets=LLAMA_TARGETS,
    gguf_arch="gemma4",
    # attention widths differ on sliding and full layers, MLP widths on the kv-shared ones: the hidden side
    # is checked, the per-layer side is not
    lora_shapes={"q_proj": ("hidden", "per_layer"), "k_proj": ("hidden", "per_layer"),
                 "v_proj": ("hidden", "per_layer"), "o_proj": ("per_layer", "hidden"),
                 "gate_proj": ("hidden", "per_layer"), "up_proj": ("hidden", "per_layer"),
                 "down_proj": ("per_layer", "hidden")},
    lora_gguf=True,
    dims=gemma4_dims,
    tied_embeddings=True,
    skip=("rotary_emb.inv_freq", "embed_scale", "_inv_freq"),
    text_config=text_config,
    renames=(("model.language_model.", "model."),),
    dropped=TOWERS,
    hparams=gemma4_hparams,
    extra_tensors=proportional_rope_freqs,
    vocab="gemma4",  # its own tokenizer model: medkit.convert.gguf.vocab.OWN_VOCABS
)  # fmt: skip
