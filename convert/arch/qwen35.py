"""Qwen3.5 (Qwen3_5ForCausalLM, and the language model of Qwen3_5ForConditionalGeneration; GGUF `qwen35`):
Gated DeltaNet (linear attention) layers and gated full-attention layers, 3 : 1, plus a multi-token-
prediction block (MTP, `nextn`) the released checkpoints carry and transformers does not load.

What llama.cpp's qwen35 expects, and what this module does for it:
* DeltaNet layers (``linear_attn.*``): in_proj_qkv -> attn_qkv, in_proj_z -> attn_gate, in_proj_a/b ->
  ssm_alpha/ssm_beta, out_proj -> ssm_out, conv1d (C, 1, K) squeezed to ssm_conv1d (C, K), A_log written
  as ssm_a = -exp(A_log), dt_bias as ssm_dt.bias, the gated norm as ssm_norm (as is: HF multiplies by w);
* with more V heads than K heads, every V-head-indexed tensor goes from HF's grouped order (the V heads of
  K head 0, then of K head 1, ...) to llama.cpp's tiled order (V head 0 of every K head, then 1, ...): the
  V rows of in_proj_qkv, the rows of in_proj_z / in_proj_a / in_proj_b, A_log, dt_bias, the V channels of
  conv1d and the columns of out_proj (and the LoRA B rows / A columns of those projections);
* every other norm (block norms, q_norm/k_norm, final norm, the MTP norms) is written as w + 1 (HF's
  RMSNorm computes x * (1 + w));
* gated attention: q_proj holds query and gate interleaved per head (2 x heads x head_dim rows), written
  as is (llama.cpp splits it per head); rotary rows are not permuted (NEOX-style);
* partial rotary (a quarter of head_dim) and the mrope sections (padded to 4) -> rope.dimension_count /
  rope.dimension_sections; text positions are the same on every section, as transformers gives them;
* the MTP block ``mtp.*`` -> one more block after the decoder's (blk.N: its decoder layer, nextn.eh_proj,
  nextn.enorm / hnorm, nextn.shared_head_norm) and nextn_predict_layers, as llama.cpp's converter does.
  A checkpoint without the MTP weights (a folder transformers saved) is written without that block:
  llama.cpp runs the decoder without it (the MTP block only drafts tokens for speculative decoding).
Refused in one line: mixture of experts (Qwen3.5-MoE is its own architecture), V and K heads of different
widths (llama.cpp's qwen35 has one state size), V heads not a multiple of K heads, attention biases, a
layer layout other than the one full_attention_interval gives, rope scaling.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from medkit.convert.arch.base import LLAMA_LORA_SHAPES, LLAMA_TARGETS, Dims, Family, decoder_dims
from medkit.errors import ConvertError

if TYPE_CHECKING:
    import numpy as np

    from medkit.convert.arch.base import Transform

VISION = ("model.visual.", "visual.")
MTP_PARTS = {"fc": "nextn.eh_proj", "pre_fc_norm_embedding": "nextn.enorm",
             "pre_fc_norm_hidden": "nextn.hnorm", "norm": "nextn.shared_head_norm"}  # fmt: skip
DEFAULT_SECTIONS = [11, 11, 10]  # transformers' Qwen3_5TextRotaryEmbedding default mrope_section


def _refuse(what: str) -> ConvertError:
    return ConvertError(f"Qwen3.5 config not supported: {what}")


def text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The language model's config (text_config of a ConditionalGeneration checkpoint, flattened)."""
    out = {k: v for k, v in config.items() if k not in ("text_config", "vision_config")}
    out.update(config.get("text_config") or {})
    return out


def _rope(config: Mapping[str, Any]) -> Mapping[str, Any]:
    return config.get("rope_parameters") or config.get("rope_scaling") or {}


def qwen35_dims(config: Mapping[str, Any]) -> Dims:
    if config.get("num_experts") or config.get("num_local_experts"):
        raise _refuse("mixture of experts (Qwen3.5-MoE is llama.cpp's qwen35moe)")
    if config.get("attention_bias"):
        raise _refuse("attention_bias=true (llama.cpp's qwen35 has no biases)")
    nk, nv = int(config["linear_num_key_heads"]), int(config["linear_num_value_heads"])
    if int(config["linear_key_head_dim"]) != int(config["linear_value_head_dim"]):
        raise _refuse(
            f"linear_key_head_dim {config['linear_key_head_dim']} != linear_value_head_dim "
            f"{config['linear_value_head_dim']} (llama.cpp's qwen35 has one DeltaNet state size)"
        )
    if nv % nk:
        raise _refuse(f"{nv} DeltaNet V heads over {nk} K heads (not a multiple)")
    d = decoder_dims({"head_dim": 256, **config})
    interval = int(config.get("full_attention_interval") or 4)
    want = ["linear_attention" if (i + 1) % interval else "full_attention" for i in range(d.n_layer)]
    types = list(config.get("layer_types") or want)
    if types != want:
        raise _refuse(f"layer_types {types} differ from the layout full_attention_interval {interval} gives")
    kind = _rope(config).get("rope_type") or _rope(config).get("type") or "default"
    if kind != "default":
        raise _refuse(f"rope scaling '{kind}'")
    return d


def mtp_layers(config: Mapping[str, Any]) -> int:
    """MTP layers the GGUF carries: the config's, unless medkit found no MTP weights (``_no_mtp``)."""
    return 0 if config.get("_no_mtp") else int(config.get("mtp_num_hidden_layers") or 0)


def gguf_blocks(config: Mapping[str, Any]) -> int:
    return int(config["num_hidden_layers"]) + mtp_layers(config)


def with_weights(config: Mapping[str, Any], names: list[str]) -> tuple[dict[str, Any], str | None]:
    """(config for these weights, a line to say or None): no MTP block in the weights, none in the GGUF."""
    out = dict(config)
    text = text_config(config)
    if int(text.get("mtp_num_hidden_layers") or 0) and not any(_mtp_name(n) is not None for n in names):
        target = out["text_config"] if isinstance(out.get("text_config"), dict) else out
        if target is not out:
            out["text_config"] = target = dict(target)
        target["_no_mtp"] = True
        return out, "the checkpoint has no MTP (mtp.*) weights: GGUF written without the nextn block"
    return out, None


def qwen35_hparams(writer: Any, config: Mapping[str, Any]) -> None:
    n_layer = int(config["num_hidden_layers"])
    sections = list(_rope(config).get("mrope_section") or DEFAULT_SECTIONS)
    writer.add_rope_dimension_sections((sections + [0, 0, 0, 0])[:4])
    if n := mtp_layers(config):
        writer.add_nextn_predict_layers(n)
    writer.add_ssm_conv_kernel(int(config["linear_conv_kernel_dim"]))
    writer.add_ssm_state_size(int(config["linear_key_head_dim"]))
    writer.add_ssm_group_count(int(config["linear_num_key_heads"]))
    writer.add_ssm_time_step_rank(int(config["linear_num_value_heads"]))
    writer.add_ssm_inner_size(int(config["linear_value_head_dim"]) * int(config["linear_num_value_heads"]))
    if config.get("layer_types"):
        recurrent = [t == "linear_attention" for t in config["layer_types"]]
        # the installed gguf package names the key but has no add_recurrent_layers yet
        key = f"{writer.arch}.attention.recurrent_layers"
        writer.add_array(key, recurrent + [False] * (gguf_blocks(config) - n_layer))
    writer.add_full_attention_interval(int(config.get("full_attention_interval") or 4))


# ---- tensors ----------------------------------------------------------------------------------------


class _Fn:
    """A transform that says the shape it writes (the squeezed conv1d) and that it stays float32 (llama.cpp
    keeps ssm_conv1d in float32 in every file type)."""

    keep_f32 = True

    def __init__(self, fn: Transform, shape_of: Any):
        self.fn, self.shape_of = fn, shape_of

    def __call__(self, w: np.ndarray) -> np.ndarray:
        return self.fn(w)


def v_order(n: int, head: int, config: Mapping[str, Any]) -> np.ndarray:
    """Index that takes ``n`` V-head-indexed entries (``head`` wide each) from HF's grouped order to
    llama.cpp's tiled order: out[j] = in[order[j]]."""
    import numpy as np

    nk, nv = int(config["linear_num_key_heads"]), int(config["linear_num_value_heads"])
    idx = np.arange(n).reshape(nk, nv // nk, n // nv if head < 0 else head)
    return np.ascontiguousarray(idx.transpose(1, 0, 2)).reshape(n)


def v_rows(config: Mapping[str, Any], part: str) -> tuple[int, int] | None:
    """(first V-indexed row, head width) of a DeltaNet projection's output rows, or None when none are."""
    nk, nv = int(config["linear_num_key_heads"]), int(config["linear_num_value_heads"])
    if nk == nv:
        return None
    dk, dv = int(config["linear_key_head_dim"]), int(config["linear_value_head_dim"])
    return {"in_proj_qkv": (2 * nk * dk, dv), "in_proj_z": (0, dv), "in_proj_a": (0, 1), "in_proj_b": (0, 1),
            "conv1d": (2 * nk * dk, dv), "A_log": (0, 1), "dt_bias": (0, 1)}.get(part)  # fmt: skip


def reorder_rows(w: np.ndarray, config: Mapping[str, Any], part: str) -> np.ndarray:
    import numpy as np

    found = v_rows(config, part)
    if found is None:
        return w
    start, head = found
    order = v_order(w.shape[0] - start, head, config)
    return np.concatenate([w[:start], w[start:][order]])


def reorder_columns(w: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
    """out_proj's input columns (V heads) in llama.cpp's tiled order."""
    if v_rows(config, "in_proj_z") is None:
        return w
    return w[:, v_order(w.shape[1], int(config["linear_value_head_dim"]), config)]


def _delta_net(config: Mapping[str, Any], part: str) -> tuple[str, Transform | None] | None:
    """(GGUF name without the block, transform) of a DeltaNet tensor (``part``: its name after linear_attn.)."""
    import numpy as np

    base = part.split(".")[0]

    def rows(w: np.ndarray) -> np.ndarray:
        return reorder_rows(w, config, base)

    projections = {"in_proj_qkv": "attn_qkv", "in_proj_z": "attn_gate", "in_proj_a": "ssm_alpha",
                   "in_proj_b": "ssm_beta"}  # fmt: skip
    if part == f"{base}.weight" and base in projections:
        return f"{projections[base]}.weight", rows
    if part == "out_proj.weight":
        return "ssm_out.weight", lambda w: reorder_columns(w, config)
    if part == "norm.weight":
        return "ssm_norm.weight", None  # the gated norm multiplies by w itself: no + 1
    if part == "A_log":
        # exp in float64, rounded once (torch's float32 exp may be an ulp off the correctly rounded value)
        return "ssm_a", lambda w: rows((-np.exp(np.asarray(w, dtype=np.float64))).astype(np.float32))
    if part == "dt_bias":
        return "ssm_dt.bias", rows
    if part == "conv1d.weight":
        return "ssm_conv1d.weight", _Fn(
            lambda w: rows(w.reshape(w.shape[0], w.shape[-1])), lambda s: (s[0], s[-1])
        )
    return None


def _mtp_name(name: str) -> str | None:
    """The rest of an MTP tensor's name (``fc.weight``, ``layers.0.mlp.up_proj.weight``), or None."""
    for prefix in ("mtp.", "model.mtp."):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return None


@functools.cache
def _name_map(blocks: int) -> Any:
    import gguf

    return gguf.get_tensor_name_map(gguf.MODEL_ARCH.QWEN35, blocks)


def _plus_one(w: np.ndarray) -> np.ndarray:
    import numpy as np

    return np.asarray(w, dtype=np.float32) + np.float32(1.0)


def own_tensor(config: Mapping[str, Any], key: str) -> tuple[str | None, Transform | None] | None:
    """(GGUF name, transform) of a DeltaNet or MTP tensor (name None: not written), or None: the generic plan."""
    n_layer = int(config["num_hidden_layers"])
    rest = _mtp_name(key)
    if rest is not None:
        if not mtp_layers(config):
            return None, None
        head, _, tail = rest.partition(".")
        if head in MTP_PARTS:
            return f"blk.{n_layer}.{MTP_PARTS[head]}.{tail}", _plus_one if head != "fc" else None
        parts = rest.split(".", 2)  # layers, i, the decoder-layer tensor
        if head != "layers" or len(parts) < 3 or not parts[1].isdecimal():
            raise ConvertError(f"tensor '{key}' is not part of a Qwen3.5 MTP block")
        hf = f"model.layers.{n_layer + int(parts[1])}.{parts[2]}"
        name = _name_map(gguf_blocks(config)).get_name(hf, try_suffixes=(".weight", ".bias"))
        if name is None:
            raise ConvertError(f"tensor '{key}' has no GGUF name for qwen35")
        return name, _plus_one if hf.endswith("norm.weight") else None
    if ".linear_attn." in key:
        layer = key.split(".")[2]
        found = _delta_net(config, key.split(".linear_attn.", 1)[1])
        if found is None:
            raise ConvertError(f"tensor '{key}' has no GGUF name for qwen35")
        return f"blk.{layer}.{found[0]}", found[1]
    return None


def lora_fix(module: str, a: np.ndarray, b: np.ndarray, dims: Dims) -> tuple[np.ndarray, np.ndarray]:
    """A DeltaNet projection's LoRA in llama.cpp's V-head order: B's rows as the weight's rows (in_proj_*),
    A's columns as out_proj's columns; everything else as PEFT wrote it."""
    if ".linear_attn." not in module or dims.linear is None:
        return a, b
    keys = ("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim")
    config = dict(zip(keys, dims.linear, strict=True))
    part = module.rsplit(".", 1)[-1]
    if part == "out_proj":
        return reorder_columns(a, config), b
    return a, reorder_rows(b, config, part)


# LoRA 'auto' targets: attention + MLP + the DeltaNet projections, by measurement on the tiny model (24 steps,
# r 4, lr 1e-2, 67 QA examples): validation loss 6.502 -> 5.833 with attention + MLP only (12,288 trainable
# parameters; three layers in four have no attention), -> 5.731 with in_proj_qkv / in_proj_z / out_proj
# added (17,664). in_proj_a / in_proj_b (one row per V head) are left out; llama.cpp applies LoRA to all five.
DELTANET_TARGETS = ("in_proj_qkv", "in_proj_z", "out_proj")
QWEN35_TARGETS = (*LLAMA_TARGETS, *DELTANET_TARGETS)

FAMILY = Family(
    name="qwen35",
    hf_architectures=("Qwen3_5ForCausalLM", "Qwen3_5ForConditionalGeneration"),
    model_types=("qwen3_5_text", "qwen3_5"),
    lora_targets=QWEN35_TARGETS,
    gguf_arch="qwen35",
    lora_gguf=True,
    dims=qwen35_dims,
    skip=("rotary_emb.inv_freq",),
    lora_shapes={
        **LLAMA_LORA_SHAPES,
        "q_proj": ("hidden", "attn2"),  # query and gate rows
        "in_proj_qkv": ("hidden", "conv"),
        "in_proj_z": ("hidden", "value"),
        "out_proj": ("value", "hidden"),
        "in_proj_a": ("hidden", "vheads"),
        "in_proj_b": ("hidden", "vheads"),
    },  # fmt: skip
    norm_offset=1.0,
    text_config=text_config,
    renames=(("model.language_model.", "model."),),
    dropped=VISION,
    hparams=qwen35_hparams,
    gguf_blocks=gguf_blocks,
    own_tensor=own_tensor,
    with_weights=with_weights,
    lora_fix=lora_fix,
)
