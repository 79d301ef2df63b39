"""Llama: TinyLlama, Llama-2/3.x, SmolLM2 (GGUF `llama`).

Q/K rows go from HF's split-half rotary layout to llama.cpp's interleaved one (weights and LoRA B);
Llama-3 rope scaling is written as the rope_freqs tensor.
"""

from medkit.convert.arch.base import LLAMA_LORA_SHAPES, LLAMA_TARGETS, Family, decoder_dims

FAMILY = Family(
    name="llama",
    hf_architectures=("LlamaForCausalLM",),
    model_types=("llama",),
    lora_targets=LLAMA_TARGETS,
    gguf_arch="llama",
    lora_gguf=True,
    dims=decoder_dims,
    permute_qk=True,
    rope_freqs=True,
    skip=("rotary_emb.inv_freq",),
    lora_shapes=LLAMA_LORA_SHAPES,
)
