"""Qwen3 (GGUF `qwen3`): llama-style blocks without Q/K/V biases, per-head RMSNorm on Q and K (q_norm,
k_norm -> attn_q_norm / attn_k_norm), rotary rows kept as HF has them (NEOX rope), head_dim often
wider than hidden/heads (Qwen3-4B: 32 x 128 over 2560), tied embeddings on the small sizes.

Refused in one line: MoE configs (Qwen3-MoE is its own architecture), sliding-window layers (llama.cpp's
qwen3 has none) and attention biases (qwen3 in llama.cpp has no bias tensors).
"""

from collections.abc import Mapping
from typing import Any

from medkit.convert.arch.base import LLAMA_LORA_SHAPES, LLAMA_TARGETS, Dims, Family, decoder_dims
from medkit.errors import ConvertError


def qwen3_dims(config: Mapping[str, Any]) -> Dims:
    if config.get("num_experts") or config.get("num_local_experts"):
        raise ConvertError("Qwen3 mixture-of-experts configs are not supported (num_experts is set)")
    if config.get("use_sliding_window") or "sliding_attention" in (config.get("layer_types") or []):
        raise ConvertError("Qwen3 sliding-window layers are not supported by llama.cpp's qwen3")
    if config.get("attention_bias"):
        raise ConvertError(
            "Qwen3 with attention_bias=true is not supported (llama.cpp's qwen3 has no biases)"
        )
    return decoder_dims(config)


FAMILY = Family(
    name="qwen3",
    hf_architectures=("Qwen3ForCausalLM",),
    model_types=("qwen3",),
    lora_targets=LLAMA_TARGETS,
    gguf_arch="qwen3",
    lora_gguf=True,
    dims=qwen3_dims,
    skip=("rotary_emb.inv_freq",),
    lora_shapes=LLAMA_LORA_SHAPES,
)
