"""Families medkit trains LoRA on (their `lora.targets = ["auto"]`) but does not export to GGUF yet.

To export one, give it its own module with gguf_arch, dims and the layout fields (see qwen2.py).
"""

from medkit.convert.arch.base import LLAMA_TARGETS, Family

FAMILIES = (
    Family("gemma", ("GemmaForCausalLM",), ("gemma",), LLAMA_TARGETS),
    Family("olmo2", ("Olmo2ForCausalLM",), ("olmo2",), LLAMA_TARGETS),
    Family("phi", ("PhiForCausalLM",), ("phi",), ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2")),
    Family("gpt_neox", ("GPTNeoXForCausalLM",), ("gpt_neox",),
           ("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h")),
)  # fmt: skip
