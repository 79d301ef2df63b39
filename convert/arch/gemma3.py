"""Gemma 3 text (GGUF `gemma3`): Gemma3ForCausalLM and the language model of Gemma3ForConditionalGeneration
(MedGemma-4B, Gemma-3-4B; the vision tower and projector are not exported, and export says so).

What llama.cpp's gemma3 expects, and what this module does for it:
* RMSNorm computes x * (1 + w) in HF; llama.cpp multiplies by the stored weight, so every *norm.weight
  (block norms, q_norm/k_norm, final norm) is written as w + 1 (Family.norm_offset);
* the sqrt(hidden) embedding scale, GELU-tanh MLP, pre/post norms and tied output are implied by the
  architecture: nothing to write;
* sliding-window and global layers: llama.cpp lays them out as five sliding layers then one global one
  and gives the sliding layers rope base 10000; rope.freq_base (and any linear scaling) is the global one;
* the attention scale is 1/sqrt(head_dim) (1/sqrt(hidden/heads) for the 62-layer 27B).
A config that departs from any of these (another layer pattern or local rope base, attention
soft-capping, bidirectional attention, a query_pre_attn_scalar llama.cpp would not use) is refused in one
line instead of giving a GGUF that computes something else.
"""

from collections.abc import Mapping
from typing import Any

from medkit.convert.arch.base import LLAMA_LORA_SHAPES, LLAMA_TARGETS, Dims, Family, gemma_decoder
from medkit.errors import ConvertError

SWA_PATTERN = 6  # llama.cpp: layers i with i % 6 < 5 are sliding-window layers
LOCAL_ROPE_BASE = 10_000.0  # llama.cpp's rope base of gemma3 sliding-window layers
VISION = ("vision_tower.", "multi_modal_projector.", "model.vision_tower.", "model.multi_modal_projector.")


def text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The language-model config, flattened: rope_theta/rope_scaling are the global layers' ones."""
    out = {k: v for k, v in config.items() if k not in ("text_config", "vision_config")}
    out.update(config.get("text_config") or {})
    params = out.get("rope_parameters") or {}
    full = params.get("full_attention") if isinstance(params.get("full_attention"), dict) else None
    local = params.get("sliding_attention") if isinstance(params.get("sliding_attention"), dict) else None
    if full is not None:
        out["rope_theta"] = full.get("rope_theta", 1_000_000.0)
        kind = full.get("rope_type") or full.get("type") or "default"
        out["rope_scaling"] = None if kind == "default" else dict(full)
        out.pop("rope_parameters")
    out.setdefault("rope_theta", 1_000_000.0)
    out["_local"] = dict(local or {"rope_theta": out.get("rope_local_base_freq", LOCAL_ROPE_BASE)})
    return out


def _refuse(what: str) -> ConvertError:
    return ConvertError(f"Gemma 3 config not supported: {what}")


def gemma3_dims(config: Mapping[str, Any]) -> Dims:
    c, d = gemma_decoder(config, _refuse, wide_layers=62)
    pattern = int(c.get("sliding_window_pattern") or SWA_PATTERN)
    types = list(c.get("layer_types") or [])
    if not types:
        types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(d.n_layer)]
    want = [
        "sliding_attention" if i % SWA_PATTERN < SWA_PATTERN - 1 else "full_attention"
        for i in range(d.n_layer)
    ]
    if types != want:
        raise _refuse(f"layer_types {types} differ from llama.cpp's 5 sliding : 1 global layout")
    local = c.get("_local") or {}
    if float(local.get("rope_theta", LOCAL_ROPE_BASE)) != LOCAL_ROPE_BASE:
        raise _refuse(
            f"sliding-layer rope base {local.get('rope_theta')} (llama.cpp uses {LOCAL_ROPE_BASE:g})"
        )
    if (local.get("rope_type") or "default") != "default":
        raise _refuse(f"rope scaling '{local.get('rope_type')}' on sliding layers")
    if c.get("attn_logit_softcapping") is not None:
        raise _refuse("attn_logit_softcapping (Gemma 3 has none; llama.cpp's gemma3 does not apply it)")
    if c.get("use_bidirectional_attention"):
        raise _refuse("use_bidirectional_attention (an encoder, not a causal LM)")
    if c.get("num_experts") or c.get("num_local_experts"):
        raise _refuse("mixture of experts")
    return d


def gemma3_hparams(writer: Any, config: Mapping[str, Any]) -> None:
    writer.add_sliding_window(int(config.get("sliding_window") or 4096))
    writer.add_rope_freq_base_swa(LOCAL_ROPE_BASE)
    if config.get("final_logit_softcapping"):
        writer.add_final_logit_softcapping(float(config["final_logit_softcapping"]))


FAMILY = Family(
    name="gemma3",
    hf_architectures=("Gemma3ForCausalLM", "Gemma3ForConditionalGeneration"),
    model_types=("gemma3_text", "gemma3"),
    lora_targets=LLAMA_TARGETS,
    gguf_arch="gemma3",
    lora_gguf=True,
    dims=gemma3_dims,
    tied_embeddings=True,
    skip=("rotary_emb.inv_freq", "embed_scale"),
    lora_shapes=LLAMA_LORA_SHAPES,
    norm_offset=1.0,
    text_config=text_config,
    renames=(("model.language_model.", "model."), ("language_model.model.", "model."),
             ("language_model.lm_head.", "lm_head.")),
    dropped=VISION,
    hparams=gemma3_hparams,
)  # fmt: skip
