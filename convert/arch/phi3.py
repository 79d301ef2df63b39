"""Phi-3 / Phi-3.5 / Phi-4-mini (Phi3ForCausalLM, GGUF `phi3`).

What llama.cpp's phi3 expects, and what this module does for it:
* fused projections: ``qkv_proj`` -> ``attn_qkv`` (rows Q, K, V; llama.cpp splits them by n_head and
  n_head_kv) and ``gate_up_proj`` -> ``ffn_up`` (gate half first: llama.cpp's SwiGLU on one tensor);
  rotary rows stay as HF has them (NEOX rope), so neither weights nor LoRA B are permuted;
* partial rotary (Phi-4-mini: 0.75 of each head) -> ``rope.dimension_count`` (the layout's generic rule);
* LongRoPE (``rope_type`` longrope, or su): the per-frequency ``short_factor`` / ``long_factor`` lists ->
  the ``rope_factors_short`` / ``rope_factors_long`` tensors, the pretraining context ->
  ``rope.scaling.original_context_length`` (llama.cpp picks the long factors past it, as HF does), and the
  cos/sin scale HF applies -> ``rope.scaling.attn_factor``;
* the sliding window (0: none, Phi-4) -> ``attention.sliding_window``.
Refused in one line: another rope scaling, factor lists that do not fit the rotary half-dimension,
biases (llama.cpp's phi3 has none), mixture of experts (PhiMoE is its own architecture).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from medkit.convert.arch.base import LLAMA_LORA_SHAPES, Dims, Family, decoder_dims
from medkit.errors import ConvertError

LONGROPE = ("longrope", "su")


def _refuse(what: str) -> ConvertError:
    return ConvertError(f"Phi-3 config not supported: {what}")


def _longrope(config: Mapping[str, Any]) -> dict[str, Any] | None:
    from medkit.convert.arch.layout import rope_settings

    _, scaling = rope_settings(config)
    if not scaling:
        return None
    kind = str(scaling.get("rope_type") or scaling.get("type")).lower()
    if kind not in LONGROPE:
        raise _refuse(f"rope scaling '{kind}' (supported: longrope)")
    return scaling


def phi3_dims(config: Mapping[str, Any]) -> Dims:
    if config.get("num_local_experts") or config.get("num_experts"):
        raise _refuse("mixture of experts (PhiMoE)")
    for key in ("attention_bias", "mlp_bias", "lm_head_bias"):
        if config.get(key):
            raise _refuse(f"{key}=true (llama.cpp's phi3 has no biases)")
    from medkit.convert.arch.layout import rotary_dims

    d = decoder_dims(config)
    scaling = _longrope(config)
    if scaling is not None:
        half = rotary_dims(config, d.head_dim) // 2
        for key in ("short_factor", "long_factor"):
            factors = scaling.get(key)
            if not isinstance(factors, list) or len(factors) != half:
                n = len(factors) if isinstance(factors, list) else "no"
                raise _refuse(f"rope_scaling.{key} has {n} entries, the rotary half-dimension is {half}")
        if not _original_ctx(config, scaling):
            raise _refuse("longrope without original_max_position_embeddings")
    return d


def _original_ctx(config: Mapping[str, Any], scaling: Mapping[str, Any]) -> int:
    return int(
        scaling.get("original_max_position_embeddings") or config.get("original_max_position_embeddings") or 0
    )


def attention_factor(config: Mapping[str, Any], scaling: Mapping[str, Any]) -> float:
    """The cos/sin scale of HF's LongRoPE (transformers' _compute_longrope_parameters)."""
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    orig = _original_ctx(config, scaling)
    factor = scaling.get("factor") or int(config.get("max_position_embeddings") or orig) / orig
    return 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))


def phi3_hparams(writer: Any, config: Mapping[str, Any]) -> None:
    writer.add_sliding_window(int(config.get("sliding_window") or 0))
    scaling = _longrope(config)
    if scaling is not None:
        writer.add_rope_scaling_orig_ctx_len(_original_ctx(config, scaling))
        writer.add_rope_scaling_attn_factors(attention_factor(config, scaling))


def longrope_factors(config: Mapping[str, Any]) -> list[tuple[str, Any]]:
    import numpy as np

    scaling = _longrope(config)
    if scaling is None:
        return []
    return [
        ("rope_factors_long.weight", np.asarray(scaling["long_factor"], dtype=np.float32)),
        ("rope_factors_short.weight", np.asarray(scaling["short_factor"], dtype=np.float32)),
    ]


FAMILY = Family(
    name="phi3",
    hf_architectures=("Phi3ForCausalLM",),
    model_types=("phi3",),
    lora_targets=("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
    gguf_arch="phi3",
    lora_gguf=True,
    dims=phi3_dims,
    skip=("rotary_emb.inv_freq", "rotary_emb.long_inv_freq", "rotary_emb.original_inv_freq"),
    lora_shapes={
        "qkv_proj": ("hidden", "qkv"), "o_proj": LLAMA_LORA_SHAPES["o_proj"],
        "gate_up_proj": ("hidden", "ff2"), "down_proj": LLAMA_LORA_SHAPES["down_proj"],
    },
    rope_types=LONGROPE,
    hparams=phi3_hparams,
    extra_tensors=longrope_factors,
)  # fmt: skip
