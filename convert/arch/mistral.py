"""Mistral: written as GGUF `llama` (llama.cpp runs Mistral checkpoints with its llama architecture).

The same layout fix-up as llama (Q/K rows permuted for llama.cpp's interleaved rotary layout): the llama
family under Mistral's HF names.
"""

from dataclasses import replace

from medkit.convert.arch.llama import FAMILY as LLAMA

FAMILY = replace(LLAMA, name="mistral", hf_architectures=("MistralForCausalLM",), model_types=("mistral",))
