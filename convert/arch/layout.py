"""A family's HF checkpoint -> GGUF: hyperparameters (gguf.Keys.LLM / Attention / Rope) and tensor plan.

Generic over `Family`: what differs between families is read from the family's fields (norm, rope,
Q/K permutation, Conv1D layers, skipped buffers, tied embeddings), never from its name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medkit.convert.arch.base import Family, permute_rows, transpose
from medkit.errors import ConvertError

if TYPE_CHECKING:
    import numpy as np

    from medkit.convert.arch.base import Transform


def _get(config: Mapping[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def rope_settings(config: Mapping[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope theta, scaling dict or None) from either transformers 4 or 5 style configs."""
    params = config.get("rope_parameters") or {}
    theta = _get(config, "rope_theta", default=params.get("rope_theta", 10000.0))
    scaling = config.get("rope_scaling") or (
        params if params.get("rope_type", "default") != "default" else None
    )
    if scaling and (scaling.get("rope_type") or scaling.get("type")) in (None, "default"):
        scaling = None
    return float(theta), scaling


def add_hparams(writer: Any, family: Family, config: Mapping[str, Any], n_vocab: int) -> None:
    """Write the architecture hyperparameters of ``config`` (a ``family`` checkpoint) to a GGUFWriter."""
    _add_generic(writer, family, config, n_vocab)
    if family.hparams is not None:  # after the generic keys: a family's per-layer arrays replace scalars
        family.hparams(writer, family.view(config))


def _add_generic(writer: Any, family: Family, config: Mapping[str, Any], n_vocab: int) -> None:
    d, blocks = family.read_dims(config), block_count(family, config)
    config = family.view(config)
    writer.add_context_length(d.n_ctx)
    writer.add_embedding_length(d.n_embd)
    writer.add_block_count(blocks)
    writer.add_feed_forward_length(d.n_ff)
    writer.add_head_count(d.n_head)
    writer.add_head_count_kv(d.n_head_kv)
    writer.add_vocab_size(n_vocab)
    key, default = family.norm_eps
    eps = float(config.get(key, default))
    if family.norm == "layer":
        writer.add_layer_norm_eps(eps)
    else:
        writer.add_layer_norm_rms_eps(eps)
    if not family.rope:
        return
    if d.head_dim != d.n_embd // d.n_head:
        writer.add_key_length(d.head_dim)
        writer.add_value_length(d.head_dim)
    writer.add_rope_dimension_count(rotary_dims(config, d.head_dim))
    theta, scaling = rope_settings(config)
    writer.add_rope_freq_base(theta)
    if scaling and (scaling.get("rope_type") or scaling.get("type")) not in family.rope_types:
        _add_rope_scaling(writer, scaling)


def block_count(family: Family, config: Mapping[str, Any]) -> int:
    """GGUF block_count of a config.json: the decoder's layers, plus what a family adds (Qwen3.5's MTP layers)."""
    return family.gguf_blocks(family.view(config)) if family.gguf_blocks else family.read_dims(config).n_layer


def rotary_dims(config: Mapping[str, Any], head_dim: int) -> int:
    """Dimensions of each head that rotary embeddings turn (partial_rotary_factor, as transformers)."""
    params = config.get("rope_parameters") or {}
    partial = _get(config, "partial_rotary_factor", default=params.get("partial_rotary_factor", 1.0))
    return int(head_dim * float(partial))


def _add_rope_scaling(writer: Any, scaling: dict[str, Any]) -> None:
    import gguf

    kind = scaling.get("rope_type") or scaling.get("type")
    factor = float(scaling.get("factor", 1.0))
    if kind == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(factor)
    elif kind == "yarn":
        writer.add_rope_scaling_type(gguf.RopeScalingType.YARN)
        writer.add_rope_scaling_factor(factor)
        if scaling.get("original_max_position_embeddings"):
            writer.add_rope_scaling_orig_ctx_len(int(scaling["original_max_position_embeddings"]))
    elif kind == "llama3":
        pass  # carried by the rope_freqs tensor, see rope_factors()
    else:
        raise ConvertError(f"rope scaling '{kind}' is not supported (supported: linear, yarn, llama3)")


def llama3_rope_factors(config: Mapping[str, Any], head_dim: int) -> np.ndarray | None:
    """Per-frequency divisors for Llama-3 rope scaling (llama.cpp's rope_freqs tensor), or None."""
    import numpy as np

    theta, scaling = rope_settings(config)
    if not scaling or (scaling.get("rope_type") or scaling.get("type")) != "llama3":
        return None
    factor = float(scaling["factor"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    old_ctx = float(scaling["original_max_position_embeddings"])
    freqs = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def rope_factors(family: Family, config: Mapping[str, Any]) -> np.ndarray | None:
    """The rope_freqs tensor a ``family`` checkpoint needs, or None."""
    if not family.rope_freqs:
        return None
    return llama3_rope_factors(family.view(config), family.read_dims(config).head_dim)


def computed_tensors(family: Family, config: Mapping[str, Any]) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) of the tensors computed from the config, not read from the weights."""
    factors = rope_factors(family, config)
    out = [("rope_freqs.weight", factors)] if factors is not None else []
    if family.extra_tensors is not None:
        out += family.extra_tensors(family.view(config))
    return out


def tensor_name_map(family: Family, n_layer: int) -> Any:
    """gguf's TensorNameMap for the family's GGUF architecture and depth."""
    import gguf

    return gguf.get_tensor_name_map(family.model_arch(), n_layer)


def plan_tensor(
    family: Family, config: Mapping[str, Any], name_map: Any, hf_name: str, ndim: int
) -> tuple[str, Transform | None] | None:
    """(GGUF name, transform) for one HF tensor; None when the tensor is not written."""
    if hf_name.endswith(family.skip):
        return None
    key = family.hf_name(hf_name)  # a multimodal checkpoint's language model, under the usual names
    if key is None:
        return None  # a part medkit does not export (a vision tower)
    if key.startswith("lm_head.") and family.tied(config):
        return None  # tied embeddings: llama.cpp reuses token_embd, no output.weight
    if family.name_prefix and not key.startswith((family.name_prefix, "lm_head.")):
        key = family.name_prefix + key  # checkpoints saved from the bare model (GPT2Model) lack it
    if family.own_tensor is not None and (own := family.own_tensor(family.view(config), key)) is not None:
        return None if own[0] is None else (own[0], own[1])
    gguf_name = name_map.get_name(key, try_suffixes=(".weight", ".bias"))
    if gguf_name is None:
        raise ConvertError(f"tensor '{hf_name}' has no GGUF name for {family.name}")
    if not gguf_name.endswith((".weight", ".bias")):
        gguf_name += ".weight"  # a bare parameter (Gemma 4's layer_scalar): llama.cpp names it a weight
    transform: Transform | None = None
    d = family.read_dims(config)
    if family.permute_qk and ".self_attn.q_proj." in hf_name:
        transform = permute_rows(d.n_head)
    elif family.permute_qk and ".self_attn.k_proj." in hf_name:
        transform = permute_rows(d.n_head_kv)
    elif family.conv1d and ndim == 2 and any(p in key for p in family.conv1d):
        transform = transpose
    elif family.norm_offset and key.endswith("norm.weight"):
        transform = _shift(family.norm_offset)
    return gguf_name, transform


def _shift(offset: float) -> Transform:
    """Norm weights stored as (w - offset) by HF (Gemma: x * (1 + w)) -> the w llama.cpp multiplies by."""

    def fn(w: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.asarray(w, dtype=np.float32) + np.float32(offset)

    return fn
