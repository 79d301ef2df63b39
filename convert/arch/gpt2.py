"""GPT-2 / DialoGPT (GGUF `gpt2`): LayerNorm, learned positions, tied embeddings, Conv1D layers.

Conv1D weights are stored (in, out); they are transposed to the (out, in) layout of every other linear
layer, and PEFT trains them with fan_in_fan_out. Checkpoints saved from GPT2Model lack `transformer.`.
"""

from collections.abc import Mapping
from typing import Any

from medkit.convert.arch.base import Dims, Family


def gpt2_dims(config: Mapping[str, Any]) -> Dims:
    n_embd, n_head = int(config["n_embd"]), int(config["n_head"])
    return Dims(
        n_layer=int(config["n_layer"]),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head,
        head_dim=n_embd // n_head,
        n_ff=int(config.get("n_inner") or 4 * n_embd),
        n_ctx=int(config.get("n_positions") or config.get("n_ctx") or 1024),
        n_vocab=int(config["vocab_size"]) if config.get("vocab_size") else None,
    )


FAMILY = Family(
    name="gpt2",
    hf_architectures=("GPT2LMHeadModel",),
    model_types=("gpt2",),
    lora_targets=("c_attn", "c_proj", "c_fc"),
    gguf_arch="gpt2",
    lora_gguf=True,
    dims=gpt2_dims,
    conv1d=(".attn.c_", ".mlp.c_"),
    norm="layer",
    norm_eps=("layer_norm_epsilon", 1e-5),
    rope=False,
    tied_embeddings=True,
    name_prefix="transformer.",
    skip=(".attn.bias", ".attn.masked_bias"),
    blocks="transformer.h",
    lora_shapes={
        "attn.c_attn": ("hidden", "qkv"),
        "attn.c_proj": ("hidden", "hidden"),
        "mlp.c_fc": ("hidden", "ff"),
        "mlp.c_proj": ("ff", "hidden"),
    },  # fmt: skip
)
