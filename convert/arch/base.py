"""What a model family declares (`Family`), and the family-independent helpers every family uses.

A family module (llama.py, gpt2.py, ...) holds one ``FAMILY = Family(...)`` (or a ``FAMILIES`` tuple);
the registry in ``medkit.convert.arch`` finds it. Nothing here imports numpy, gguf or torch at import
time, so the registry is cheap to ask from training, eval and the CLI.

Tensor names come from the gguf package's TensorNameMap; what a family adds is the layout fix-up
(Q/K rows, Conv1D weights), the tensors to skip, and how its config.json spells the dimensions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from medkit.errors import ConvertError

if TYPE_CHECKING:
    import numpy as np

    Transform = Callable[[np.ndarray], np.ndarray]

# Dimension names a family's `lora_shapes` may use: (what the error message says, Dims attribute or formula)
SHAPE_NAMES = ("hidden", "attn", "kv", "ff", "qkv", "ff2", "per_layer", "attn2", "conv", "value", "vheads")


@dataclass(frozen=True)
class Dims:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx: int
    n_vocab: int | None = None
    linear: tuple[int, int, int, int] | None = None  # Gated DeltaNet (K heads, V heads, K width, V width)

    def width(self, what: str) -> tuple[str, int]:
        """(label, size) of one of SHAPE_NAMES, for LoRA shape checks and their messages."""
        table = {
            "hidden": ("hidden size", self.n_embd),
            "attn": ("attention width", self.n_head * self.head_dim),
            "kv": ("key/value width", self.n_head_kv * self.head_dim),
            "ff": ("intermediate size", self.n_ff),
            # fused Q, K, V rows (GPT-2: 3 x hidden; Phi-3: grouped K/V heads) and fused gate + up rows
            "qkv": ("qkv width", (self.n_head + 2 * self.n_head_kv) * self.head_dim),
            "ff2": ("gate+up width", 2 * self.n_ff),
            "per_layer": ("per-layer width", 0),  # differs by layer (Gemma 4): not checked (0)
            "attn2": ("query+gate width", 2 * self.n_head * self.head_dim),  # gated attention (Qwen3.5)
        }
        nk, nv, dk, dv = self.linear or (0, 0, 0, 0)  # Gated DeltaNet layers (Qwen3.5)
        table.update(conv=("DeltaNet qkv width", 2 * nk * dk + nv * dv), value=("DeltaNet value width", nv * dv),
                     vheads=("DeltaNet V heads", nv))  # fmt: skip
        return table[what]


@dataclass(frozen=True)
class Family:
    """Everything medkit knows about one model family, in one place."""

    name: str  # medkit's name for it (the module's name): llama, mistral, qwen2, gpt2
    hf_architectures: tuple[str, ...]  # config.json "architectures" entries
    model_types: tuple[str, ...]  # config.json "model_type" values
    lora_targets: tuple[str, ...]  # `lora.targets = ["auto"]`: the attention and MLP projections
    # GGUF export. gguf_arch is the general.architecture llama.cpp knows the family by (None: medkit
    # trains it but does not export it).
    gguf_arch: str | None = None
    lora_gguf: bool = False  # a PEFT LoRA of it can be written as a GGUF LoRA adapter
    dims: Callable[[Mapping[str, Any]], Dims] | None = None  # config.json -> Dims
    permute_qk: bool = False  # HF split-half rotary Q/K rows -> llama.cpp's interleaved rows
    conv1d: tuple[str, ...] = ()  # name parts of Conv1D layers ((in, out) weights, fan_in_fan_out)
    norm: str = "rms"  # "rms" (RMSNorm) or "layer" (LayerNorm)
    norm_eps: tuple[str, float] = ("rms_norm_eps", 1e-6)  # config key, default
    rope: bool = True  # rotary positions (else learned position embeddings)
    rope_freqs: bool = False  # Llama-3 rope scaling goes into llama.cpp's rope_freqs tensor
    rope_types: tuple[str, ...] = ()  # rope scaling types the family's hparams/extra_tensors write itself
    tied_embeddings: bool = False  # tie_word_embeddings when config.json does not say
    name_prefix: str = ""  # added to HF tensor names lacking it (checkpoints saved from the bare model)
    skip: tuple[str, ...] = ()  # HF tensor name endings that are not weights (buffers)
    blocks: str = "model.layers"  # HF module path of the transformer blocks
    # LoRA module name ending -> (input, output) dimension names from SHAPE_NAMES
    lora_shapes: Mapping[str, tuple[str, str]] = field(default_factory=dict, hash=False)
    # What some families add (Gemma, multimodal checkpoints, Phi-3), all optional:
    norm_offset: float = 0.0  # added to every *norm.weight (Gemma's RMSNorm computes x * (1 + w))
    text_config: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None  # config.json -> text part
    renames: tuple[tuple[str, str], ...] = ()  # HF tensor-name prefix -> the prefix the name map knows
    dropped: tuple[str, ...] = ()  # HF tensor-name prefixes not exported (a vision tower), said once
    hparams: Callable[[Any, Mapping[str, Any]], None] | None = None  # (GGUFWriter, text config) extra keys
    # text config -> [(GGUF name, float32 array)] tensors computed from the config (Phi-3 LongRoPE factors)
    extra_tensors: Callable[[Mapping[str, Any]], list[tuple[str, Any]]] | None = None
    # a tokenizer model the family writes its own way (Gemma 4's `gemma4`): a key of
    # medkit.convert.gguf.vocab.OWN_VOCABS (the registry names it; the writer lives with the vocab code)
    vocab: str | None = None
    # What Qwen3.5 adds (a hybrid with an MTP block), all optional:
    gguf_blocks: Callable[[Mapping[str, Any]], int] | None = (
        None  # text config -> GGUF block_count if not n_layer
    )
    # (text config, HF name) -> (GGUF name or None: not written, transform) of tensors the family lays out
    # itself, or None for the generic plan; a transform with `shape_of` (shape -> shape) writes another shape
    own_tensor: Callable[[Mapping[str, Any], str], tuple[str | None, Any] | None] | None = None
    # (config.json, tensor names) -> (config for those weights, a line to say or None): what the config
    # declares and the weights lack (Qwen3.5's MTP block in a folder transformers saved)
    with_weights: Callable[[Mapping[str, Any], list[str]], tuple[dict[str, Any], str | None]] | None = None
    # (module, lora_a, lora_b, Dims) -> (lora_a, lora_b) as llama.cpp's tensors need them (Qwen3.5's V heads)
    lora_fix: Callable[[str, Any, Any, Dims], tuple[Any, Any]] | None = None

    @property
    def exports(self) -> bool:
        return self.gguf_arch is not None

    def model_arch(self) -> Any:
        """The gguf package's MODEL_ARCH member for this family's GGUF architecture."""
        import gguf

        arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == self.gguf_arch), None)
        if arch is None:
            raise ConvertError(f"gguf package does not know architecture '{self.gguf_arch}'")
        return arch

    def view(self, config: Mapping[str, Any]) -> Mapping[str, Any]:
        """The config of the language model (the text part of a multimodal config.json), or ``config``."""
        return self.text_config(config) if self.text_config is not None else config

    def hf_name(self, name: str) -> str | None:
        """A HF tensor/module name as the gguf name map knows it; None for a part not exported."""
        if name.startswith(self.dropped):
            return None
        for old, new in self.renames:
            if name.startswith(old):
                return new + name[len(old) :]
        return name

    def read_dims(self, config: Mapping[str, Any], where: str = "config.json") -> Dims:
        """Dims from a HF config; a missing or bad entry is one ConvertError line."""
        if self.dims is None:
            raise ConvertError(f"medkit does not export {self.name} models", where=where)
        try:
            return self.dims(self.view(config))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConvertError(f"config.json lacks or has a bad '{exc}' entry for {self.name}") from exc

    def tied(self, config: Mapping[str, Any]) -> bool:
        return bool(self.view(config).get("tie_word_embeddings", self.tied_embeddings))


# ---- shared pieces family modules build from ------------------------------------------------------

LLAMA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LLAMA_LORA_SHAPES: Mapping[str, tuple[str, str]] = {
    "q_proj": ("hidden", "attn"), "k_proj": ("hidden", "kv"), "v_proj": ("hidden", "kv"),
    "o_proj": ("attn", "hidden"), "gate_proj": ("hidden", "ff"), "up_proj": ("hidden", "ff"),
    "down_proj": ("ff", "hidden"),
}  # fmt: skip


def decoder_dims(config: Mapping[str, Any]) -> Dims:
    """Dims of a Llama-style config (hidden_size, num_attention_heads, num_key_value_heads, ...)."""
    n_embd, n_head = int(config["hidden_size"]), int(config["num_attention_heads"])
    return Dims(
        n_layer=int(config["num_hidden_layers"]),
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=int(config.get("num_key_value_heads") or n_head),
        head_dim=int(config.get("head_dim") or n_embd // n_head),
        n_ff=int(config["intermediate_size"]),
        n_ctx=int(config.get("max_position_embeddings") or 2048),
        n_vocab=int(config["vocab_size"]) if config.get("vocab_size") else None,
    )


def gemma_decoder(
    config: Mapping[str, Any], refuse: Callable[[str], ConvertError], wide_layers: int
) -> tuple[Mapping[str, Any], Dims]:
    """(config with Gemma's config-class defaults, its Dims) for Gemma 2 and 3, refusing a
    query_pre_attn_scalar llama.cpp would not use: it scales q by 1/sqrt(head_dim), by 1/sqrt(hidden/heads)
    for the 27B, which has ``wide_layers`` layers."""
    c = config
    if "head_dim" not in c:  # Gemma2Config's and Gemma3TextConfig's defaults, which config.json may leave out
        c = {"head_dim": 256, "num_attention_heads": 8, "num_key_value_heads": 4, **c}
    d = decoder_dims(c)
    scale_dim = d.n_embd // d.n_head if d.n_layer == wide_layers else d.head_dim
    if float(c.get("query_pre_attn_scalar", 256)) != float(scale_dim):
        raise refuse(f"query_pre_attn_scalar {c.get('query_pre_attn_scalar')} (llama.cpp uses {scale_dim})")
    return c, d


def permute_rows(n_head: int) -> Transform:
    """HF split-half rotary rows -> llama.cpp interleaved rows, per head (weights, biases, lora_b)."""

    def fn(w: np.ndarray) -> np.ndarray:
        rows = w.shape[0]
        if rows % (2 * n_head):
            raise ConvertError(f"cannot permute {rows} rows into {n_head} rotary heads")
        return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    return fn


def transpose(w: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.ascontiguousarray(w.T)
