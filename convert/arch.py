"""Architectures medkit exports: HF config -> GGUF hyperparameters and tensor names/transforms.

Supported: llama (TinyLlama, Llama-3.x, SmolLM2), mistral (written as GGUF `llama`), qwen2, gpt2.
The tensor names come from gguf's TensorNameMap; what is ours is the per-architecture layout fix-up:
Q/K rows of llama/mistral go from HF's split-half rotary layout to llama.cpp's interleaved one, and
GPT-2's Conv1D weights are transposed to the (out, in) layout every other linear layer uses.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from medkit.errors import ConvertError

Transform = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ArchSpec:
    name: str  # medkit's name: llama / mistral / qwen2 / gpt2
    gguf_arch: str  # key of gguf.MODEL_ARCH
    permute_qk: bool = False
    conv1d: bool = False


ARCHS: dict[str, ArchSpec] = {
    "LlamaForCausalLM": ArchSpec("llama", "LLAMA", permute_qk=True),
    "MistralForCausalLM": ArchSpec("mistral", "LLAMA", permute_qk=True),
    "Qwen2ForCausalLM": ArchSpec("qwen2", "QWEN2"),
    "GPT2LMHeadModel": ArchSpec("gpt2", "GPT2", conv1d=True),
}
MODEL_TYPES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM", "qwen2": "Qwen2ForCausalLM"}
MODEL_TYPES["gpt2"] = "GPT2LMHeadModel"
SUPPORTED = ", ".join(sorted({s.name for s in ARCHS.values()}))


def detect_arch(config: dict[str, Any], where: str = "config.json") -> ArchSpec:
    """The ArchSpec for a HF config, or a ConvertError naming the architecture and the supported ones."""
    names = list(config.get("architectures") or [])
    for name in names:
        if name in ARCHS:
            return ARCHS[name]
    model_type = config.get("model_type")
    if not names and model_type in MODEL_TYPES:
        return ARCHS[MODEL_TYPES[model_type]]
    found = names[0] if names else (model_type or "unknown")
    raise ConvertError(f"unsupported architecture '{found}' (supported: {SUPPORTED})", where=where)


def gguf_arch_name(spec: ArchSpec) -> str:
    import gguf

    return gguf.MODEL_ARCH_NAMES[getattr(gguf.MODEL_ARCH, spec.gguf_arch)]


def _get(config: dict[str, Any], *keys: str, default: Any = None) -> Any:
    for key in keys:
        if config.get(key) is not None:
            return config[key]
    return default


def rope_settings(config: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope theta, scaling dict or None) from either transformers 4 or 5 style configs."""
    params = config.get("rope_parameters") or {}
    theta = _get(config, "rope_theta", default=params.get("rope_theta", 10000.0))
    scaling = config.get("rope_scaling") or (
        params if params.get("rope_type", "default") != "default" else None
    )
    if scaling and (scaling.get("rope_type") or scaling.get("type")) in (None, "default"):
        scaling = None
    return float(theta), scaling


@dataclass(frozen=True)
class Dims:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx: int


def dims(spec: ArchSpec, config: dict[str, Any]) -> Dims:
    try:
        if spec.name == "gpt2":
            n_embd = int(config["n_embd"])
            return Dims(
                n_layer=int(config["n_layer"]),
                n_embd=n_embd,
                n_head=int(config["n_head"]),
                n_head_kv=int(config["n_head"]),
                head_dim=n_embd // int(config["n_head"]),
                n_ff=int(config.get("n_inner") or 4 * n_embd),
                n_ctx=int(config.get("n_positions") or config.get("n_ctx") or 1024),
            )
        n_embd, n_head = int(config["hidden_size"]), int(config["num_attention_heads"])
        return Dims(
            n_layer=int(config["num_hidden_layers"]),
            n_embd=n_embd,
            n_head=n_head,
            n_head_kv=int(config.get("num_key_value_heads") or n_head),
            head_dim=int(config.get("head_dim") or n_embd // n_head),
            n_ff=int(config["intermediate_size"]),
            n_ctx=int(config.get("max_position_embeddings") or 2048),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConvertError(f"config.json lacks or has a bad '{exc}' entry for {spec.name}") from exc


def add_hparams(writer: Any, spec: ArchSpec, config: dict[str, Any], n_vocab: int) -> None:
    """Write the architecture hyperparameters (gguf.Keys.LLM / Keys.Attention / Keys.Rope)."""
    d = dims(spec, config)
    writer.add_context_length(d.n_ctx)
    writer.add_embedding_length(d.n_embd)
    writer.add_block_count(d.n_layer)
    writer.add_feed_forward_length(d.n_ff)
    writer.add_head_count(d.n_head)
    writer.add_head_count_kv(d.n_head_kv)
    writer.add_vocab_size(n_vocab)
    if spec.name == "gpt2":
        writer.add_layer_norm_eps(float(config.get("layer_norm_epsilon", 1e-5)))
        return
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    if d.head_dim != d.n_embd // d.n_head:
        writer.add_key_length(d.head_dim)
        writer.add_value_length(d.head_dim)
    writer.add_rope_dimension_count(d.head_dim)
    theta, scaling = rope_settings(config)
    writer.add_rope_freq_base(theta)
    if scaling:
        _add_rope_scaling(writer, scaling)


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
        pass  # carried by the rope_freqs tensor, see llama3_rope_factors()
    else:
        raise ConvertError(f"rope scaling '{kind}' is not supported (supported: linear, yarn, llama3)")


def llama3_rope_factors(config: dict[str, Any], head_dim: int) -> np.ndarray | None:
    """Per-frequency divisors for Llama-3 rope scaling (llama.cpp's rope_freqs tensor), or None."""
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


def _permute_rows(n_head: int) -> Transform:
    """HF split-half rotary rows -> llama.cpp interleaved rows, per head (weights and biases)."""

    def fn(w: np.ndarray) -> np.ndarray:
        rows = w.shape[0]
        return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    return fn


def _transpose(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.T)


SKIP_SUFFIXES = ("rotary_emb.inv_freq", ".attn.bias", ".attn.masked_bias")


def plan_tensor(
    spec: ArchSpec, config: dict[str, Any], name_map: Any, hf_name: str, ndim: int
) -> tuple[str, Transform | None] | None:
    """(GGUF name, transform) for one HF tensor; None when the tensor is not written."""
    if hf_name.endswith(SKIP_SUFFIXES):
        return None
    tied = bool(config.get("tie_word_embeddings", spec.name in ("gpt2",)))
    if hf_name.startswith("lm_head.") and tied:
        return None  # tied embeddings: llama.cpp reuses token_embd, no output.weight
    key = hf_name
    if spec.name == "gpt2" and not key.startswith(("transformer.", "lm_head.")):
        key = "transformer." + key  # checkpoints saved from GPT2Model lack the prefix
    gguf_name = name_map.get_name(key, try_suffixes=(".weight", ".bias"))
    if gguf_name is None:
        raise ConvertError(f"tensor '{hf_name}' has no GGUF name for {spec.name}")
    transform: Transform | None = None
    d = dims(spec, config)
    if spec.permute_qk and ".self_attn.q_proj." in hf_name:
        transform = _permute_rows(d.n_head)
    elif spec.permute_qk and ".self_attn.k_proj." in hf_name:
        transform = _permute_rows(d.n_head_kv)
    elif spec.conv1d and ndim == 2 and any(p in key for p in (".attn.c_", ".mlp.c_")):
        transform = _transpose
    return gguf_name, transform
