"""Gemma 2 (GGUF `gemma2`): Gemma2ForCausalLM (Gemma-2-2B/9B/27B and their medical fine-tunes).

What llama.cpp's gemma2 expects, and what this module does for it:
* RMSNorm computes x * (1 + w) in HF; llama.cpp multiplies by the stored weight, so every *norm.weight
  is written as w + 1 (Family.norm_offset), as for Gemma 3;
* attention and final logits are soft-capped (tanh(x / c) * c): both caps go into the GGUF
  (gemma2.attn_logit_softcapping, gemma2.final_logit_softcapping), which llama.cpp applies;
* sliding-window and global layers alternate, the first sliding (llama.cpp's layout for gemma2): the
  window goes into the GGUF, one rope base for all layers;
* the attention scale is 1/sqrt(head_dim) (1/sqrt(hidden/heads) for the 46-layer 27B), what llama.cpp uses;
* the sqrt(hidden) embedding scale, GELU-tanh MLP, pre/post norms and tied output are implied by the
  architecture. transformers runs Gemma 2 with eager attention (its SDPA path has no soft-cap).
A config that departs from these (another layer pattern, no soft-cap where llama.cpp applies one, another
query_pre_attn_scalar) is refused in one line instead of giving a GGUF that computes something else.
"""

from collections.abc import Mapping
from typing import Any

from medkit.convert.arch.base import LLAMA_LORA_SHAPES, LLAMA_TARGETS, Dims, Family, gemma_decoder
from medkit.errors import ConvertError


def _refuse(what: str) -> ConvertError:
    return ConvertError(f"Gemma 2 config not supported: {what}")


def gemma2_dims(config: Mapping[str, Any]) -> Dims:
    c, d = gemma_decoder(config, _refuse, wide_layers=46)
    types = list(c.get("layer_types") or [])
    want = ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(d.n_layer)]
    if types and types != want:
        raise _refuse(f"layer_types {types} differ from llama.cpp's alternating sliding / global layers")
    for key in ("attn_logit_softcapping", "final_logit_softcapping"):
        if not c.get(key):
            raise _refuse(f"{key} unset (llama.cpp's gemma2 always soft-caps; a GGUF would differ)")
    rope = c.get("rope_parameters") or c.get("rope_scaling") or {}
    if (rope.get("rope_type") or rope.get("type") or "default") != "default":
        raise _refuse(f"rope scaling '{rope.get('rope_type') or rope.get('type')}'")
    return d


def gemma2_hparams(writer: Any, config: Mapping[str, Any]) -> None:
    writer.add_sliding_window(int(config.get("sliding_window") or 4096))
    writer.add_attn_logit_softcapping(float(config["attn_logit_softcapping"]))
    writer.add_final_logit_softcapping(float(config["final_logit_softcapping"]))


FAMILY = Family(
    name="gemma2",
    hf_architectures=("Gemma2ForCausalLM",),
    model_types=("gemma2",),
    lora_targets=LLAMA_TARGETS,
    gguf_arch="gemma2",
    lora_gguf=True,
    dims=gemma2_dims,
    tied_embeddings=True,
    skip=("rotary_emb.inv_freq", "embed_scale"),
    lora_shapes=LLAMA_LORA_SHAPES,
    norm_offset=1.0,
    hparams=gemma2_hparams,
)
