"""Qwen2 / Qwen2.5 (GGUF `qwen2`): llama-style blocks with Q/K/V biases, rotary rows kept as HF has them."""

from medkit.convert.arch.base import LLAMA_LORA_SHAPES, LLAMA_TARGETS, Family, decoder_dims

FAMILY = Family(
    name="qwen2",
    hf_architectures=("Qwen2ForCausalLM",),
    model_types=("qwen2",),
    lora_targets=LLAMA_TARGETS,
    gguf_arch="qwen2",
    lora_gguf=True,
    dims=decoder_dims,
    skip=("rotary_emb.inv_freq",),
    lora_shapes=LLAMA_LORA_SHAPES,
)
