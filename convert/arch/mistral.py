"""Mistral: written as GGUF `llama` (llama.cpp runs Mistral checkpoints with its llama architecture).

Same layout fix-up as llama: Q/K rows permuted for llama.cpp's interleaved rotary layout.
"""

from medkit.convert.arch.base import LLAMA_LORA_SHAPES, LLAMA_TARGETS, Family, decoder_dims

FAMILY = Family(
    name="mistral",
    hf_architectures=("MistralForCausalLM",),
    model_types=("mistral",),
    lora_targets=LLAMA_TARGETS,
    gguf_arch="llama",
    lora_gguf=True,
    dims=decoder_dims,
    permute_qk=True,
    rope_freqs=True,
    skip=("rotary_emb.inv_freq",),
    lora_shapes=LLAMA_LORA_SHAPES,
)
