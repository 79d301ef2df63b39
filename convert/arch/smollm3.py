"""SmolLM3 (SmolLM3ForCausalLM, GGUF `smollm3`): Llama blocks (Q/K rows permuted as for llama, GQA,
tied embeddings) where every 4th layer (3, 7, 11, ...) applies no rotary embedding at all (NoPE).

llama.cpp's smollm3 hard-codes that pattern (a layer i ropes unless (i + 1) % 4 == 0) and the GGUF
records nothing of it, so the config's ``no_rope_layers`` must be exactly that pattern. Refused in one
line, instead of a GGUF that computes something else: another no-rope pattern (or interval), sliding-window
layers (llama.cpp's smollm3 has none), biases, partial rotary, Llama-3 rope scaling (the smollm3 graph
reads no rope_freqs tensor) and mixture of experts.
"""

from collections.abc import Mapping
from typing import Any

from medkit.convert.arch.base import LLAMA_LORA_SHAPES, LLAMA_TARGETS, Dims, Family, decoder_dims
from medkit.errors import ConvertError

NO_ROPE_STEP = 4  # llama.cpp: hparams.n_no_rope_layer_step = 4 for LLM_ARCH_SMOLLM3


def _refuse(what: str) -> ConvertError:
    return ConvertError(f"SmolLM3 config not supported: {what}")


def no_rope_pattern(n_layer: int) -> list[int]:
    """SmolLM3's no_rope_layers as llama.cpp runs them: 1 = the layer ropes, 0 = NoPE (every 4th)."""
    return [int((i + 1) % NO_ROPE_STEP != 0) for i in range(n_layer)]


def smollm3_dims(config: Mapping[str, Any]) -> Dims:
    from medkit.convert.arch.layout import rope_settings, rotary_dims

    d = decoder_dims(config)
    want = no_rope_pattern(d.n_layer)
    interval = int(config.get("no_rope_layer_interval") or NO_ROPE_STEP)
    got = list(config.get("no_rope_layers") or [int((i + 1) % interval != 0) for i in range(d.n_layer)])
    if got[: d.n_layer] != want:
        raise _refuse(
            f"no_rope_layers {got[: d.n_layer]} (llama.cpp's smollm3 skips rope on every 4th layer only: {want})"
        )
    types = config.get("layer_types") or []
    if config.get("use_sliding_window") and config.get("sliding_window") or "sliding_attention" in types:
        raise _refuse("sliding-window layers (llama.cpp's smollm3 attends over the full context)")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise _refuse(f"{key}=true (llama.cpp's smollm3 has no biases)")
    if rotary_dims(config, d.head_dim) != d.head_dim:
        raise _refuse("partial rotary (llama.cpp's smollm3 turns whole heads)")
    _, scaling = rope_settings(config)
    if scaling and (scaling.get("rope_type") or scaling.get("type")) == "llama3":
        raise _refuse("rope scaling 'llama3' (llama.cpp's smollm3 reads no rope_freqs)")
    if config.get("num_experts") or config.get("num_local_experts"):
        raise _refuse("mixture of experts")
    return d


FAMILY = Family(
    name="smollm3",
    hf_architectures=("SmolLM3ForCausalLM",),
    model_types=("smollm3",),
    lora_targets=LLAMA_TARGETS,
    gguf_arch="smollm3",
    lora_gguf=True,
    dims=smollm3_dims,
    permute_qk=True,
    tied_embeddings=True,
    skip=("rotary_emb.inv_freq",),
    lora_shapes=LLAMA_LORA_SHAPES,
)
