"""PEFT LoRA adapter -> GGUF LoRA adapter that llama.cpp applies over a GGUF of the same base.

llama.cpp reads ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha`` and, for every
adapted base tensor ``T``, the pair ``T.lora_a`` (numpy shape (r, n_in)) and ``T.lora_b`` ((n_out, r)); it
adds ``(alpha / r) * B @ A`` to ``T``. What this module takes care of:

* HF module names -> GGUF tensor names through the gguf package's TensorNameMap;
* Q and K of families with ``permute_qk`` (llama, mistral): the base GGUF holds their rows interleaved
  for rotary, so lora_b rows get the same permutation (lora_a, V, O and the MLP are untouched);
* rsLoRA and per-module rank/alpha patterns: llama.cpp knows one alpha and divides by each tensor's rank,
  so the adapter-wide alpha is set from the most common (rank, scale) and any other factor is folded into B;
* gpt2 Conv1D layers (fan_in_fan_out): PEFT's A and B are already in Linear orientation, like the base GGUF;
* adapters llama.cpp cannot apply (embeddings, lm_head, modules_to_save, DoRA, LoRA bias) are refused;
* the base's identity: ``medkit.adapter.base_id`` (medkit.convert.gguf.fingerprint.BASE_KEY), the fingerprint of
  the base's HF weights (``st1:`` + sha256 over each safetensors tensor's name, dtype, shape and first and
  last 4 KiB), or what a base GGUF records under ``medkit.base.id``; every model GGUF medkit's writer makes
  records its own fingerprint there, so a loader compares the two strings.

The base model's dimensions and the fit check live in medkit.convert.adapter.lora_base; the family facts
(Q/K permutation, tensor names) come from the registry, medkit.convert.arch.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkit.convert import arch
from medkit.convert.adapter.lora_base import (
    ADAPTER_WEIGHTS,
    LORA_KEY,
    BaseInfo,
    adapter_shapes,
    base_info,
    check_adapter_matches,
    read_adapter_config,
    read_safetensors,
)
from medkit.convert.arch.base import permute_rows
from medkit.convert.gguf.fingerprint import BASE_KEY, base_fingerprint
from medkit.errors import ConvertError, RuntimeLoadError
from medkit.formats.files import atomic_path, check_free_space

__all__ = [  # the base-side names are re-exported: callers (merge, tests) import them from here
    "BaseInfo",
    "LoraPair",
    "base_info",
    "check_adapter_matches",
    "describe",
    "load_lora_pairs",
    "read_safetensors",
    "write_lora_gguf",
]
if TYPE_CHECKING:
    import numpy as np

_REFUSED_MODULES = ("embed_tokens", "lm_head", "wte", "wpe", "embed_out", "embed_positions")


@dataclass
class LoraPair:
    module: str  # HF module path, e.g. model.layers.3.self_attn.q_proj
    a: np.ndarray  # (r, n_in)
    b: np.ndarray  # (n_out, r)
    scale: float  # what PEFT multiplies B @ A by

    @property
    def rank(self) -> int:
        return int(self.a.shape[0])


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rank_pattern/alpha_pattern lookup: a key matches the end of the module path."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _refuse_unsupported(cfg: dict[str, Any], keys: list[str], where: Path) -> None:
    why = None
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        why = f"it is a {cfg.get('peft_type')} adapter, only LoRA can be converted"
    elif cfg.get("use_dora"):
        why = "DoRA adapters are not supported by llama.cpp"
    elif cfg.get("modules_to_save") or any("modules_to_save" in k for k in keys):
        why = f"it has modules_to_save ({cfg.get('modules_to_save')}), which llama.cpp cannot apply"
    elif str(cfg.get("bias", "none")) != "none" or any(k.endswith(".bias") for k in keys):
        why = f"it trains biases (bias={cfg.get('bias')!r}), which llama.cpp cannot apply"
    elif any("lora_embedding" in k or "lora_magnitude" in k for k in keys):
        why = "it adapts an embedding layer, which llama.cpp cannot apply"
    else:
        hit = sorted({m for k in keys for m in _REFUSED_MODULES if f".{m}." in f".{k}"})
        if hit:
            why = f"it adapts {', '.join(hit)} (embeddings / lm_head), which llama.cpp cannot apply"
    if why:
        raise ConvertError(
            f"cannot write a GGUF LoRA adapter: {why}",
            where=str(where),
            hint="merge it instead (medkit merge) and export the merged model",
        )


def load_lora_pairs(adapter_dir: str | Path) -> tuple[dict[str, Any], list[LoraPair]]:
    """The adapter's config and its (A, B, scale) per module, as float32 numpy, checked for llama.cpp."""
    import numpy as np

    adapter_dir = Path(adapter_dir)
    cfg = read_adapter_config(adapter_dir)
    _refuse_unsupported(cfg, list(adapter_shapes(adapter_dir)), adapter_dir)
    weights = adapter_dir / ADAPTER_WEIGHTS
    tensors = {k: arr for k, (_, arr) in read_safetensors(weights).items()}
    halves: dict[str, dict[str, np.ndarray]] = {}
    for key, value in tensors.items():
        m = LORA_KEY.match(key)
        if not m:
            raise ConvertError(f"unexpected tensor '{key}' in a LoRA adapter", where=str(weights))
        halves.setdefault(m["module"], {})[m["ab"]] = value
    pairs: list[LoraPair] = []
    alpha0 = float(cfg.get("lora_alpha", cfg.get("r", 8)))
    for module, ab in sorted(halves.items(), key=lambda kv: _natural(kv[0])):
        if set(ab) != {"A", "B"}:
            raise ConvertError(f"module '{module}' has lora_A or lora_B missing", where=str(weights))
        a, b = np.ascontiguousarray(ab["A"]), np.ascontiguousarray(ab["B"])
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1]:
            raise ConvertError(f"module '{module}': A {a.shape} and B {b.shape} are not a LoRA pair")
        r = a.shape[0]
        alpha = float(_pattern_value(cfg.get("alpha_pattern") or {}, module, alpha0))
        scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        pairs.append(LoraPair(module, a, b, scale))
    if not pairs:
        raise ConvertError("the adapter holds no LoRA tensors", where=str(weights))
    return cfg, pairs


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def gguf_alpha(pairs: list[LoraPair]) -> float:
    """One adapter-wide alpha such that alpha / r equals PEFT's scale for the most common (r, scale)."""
    (r, scale), _ = Counter((p.rank, p.scale) for p in pairs).most_common(1)[0]
    return scale * r


def permute_rows_for_rope(rows: np.ndarray, n_head: int) -> np.ndarray:
    """HF's split-half rotary row order -> llama.cpp's interleaved order, per head (rows = output dim)."""
    return permute_rows(n_head)(rows)


@functools.lru_cache(maxsize=8)
def _name_map(family_name: str, n_layers: int) -> Any:
    from medkit.convert.arch.layout import tensor_name_map

    family = arch.by_name(family_name)
    assert family is not None
    return tensor_name_map(family, n_layers)  # slow to build: once per family and depth


def gguf_tensor_name(module: str, info: BaseInfo) -> str:
    """GGUF name of the base weight a HF module writes into, e.g. blk.3.attn_q.weight."""
    key = info.family.hf_name(module)  # a multimodal checkpoint's language model, under the usual names
    name = (
        None
        if key is None
        else _name_map(info.family.name, info.n_layers).get_name(key + ".weight", try_suffixes=(".weight",))
    )
    if name is None:
        raise ConvertError(f"no GGUF tensor for adapted module '{module}' in a {info.arch} model")
    return name


def lora_tensors(pairs: list[LoraPair], info: BaseInfo, alpha: float) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, float32 array) for every lora_a / lora_b, permuted and rescaled for llama.cpp."""
    import numpy as np

    out: list[tuple[str, np.ndarray]] = []
    for p in pairs:
        name = gguf_tensor_name(p.module, info)
        b = p.b
        factor = p.scale * p.rank / alpha  # what llama.cpp's alpha / r misses for this module
        if not math.isclose(factor, 1.0, rel_tol=1e-7):
            b = b * np.float32(factor)
        a = p.a
        if info.family.permute_qk:
            if p.module.endswith("q_proj"):
                b = permute_rows_for_rope(b, info.n_head)
            elif p.module.endswith("k_proj"):
                b = permute_rows_for_rope(b, info.n_head_kv)
        if info.family.lora_fix is not None:
            dims = arch.Dims(info.n_layers, info.hidden, info.n_head, info.n_head_kv, info.head_dim,
                             info.intermediate, 0, linear=info.linear)  # fmt: skip
            a, b = info.family.lora_fix(p.module, a, b, dims)
        out.append((f"{name}.lora_a", np.ascontiguousarray(a, dtype=np.float32)))
        out.append((f"{name}.lora_b", np.ascontiguousarray(b, dtype=np.float32)))
    return out


def write_lora_gguf(
    adapter_dir: str | Path,
    out_path: str | Path,
    *,
    base_dir: str | Path | None = None,
    force: bool = False,
    dtype: str = "f32",
    metadata: dict[str, str] | None = None,
) -> Path:
    """Write ``adapter_dir`` (PEFT LoRA) as a GGUF LoRA adapter at ``out_path``; returns the path.

    ``base_dir`` is the base model the adapter was trained on: an HF folder or a GGUF file (its
    architecture and head counts decide names and Q/K permutation); by default the adapter config's
    ``base_model_name_or_path`` when that is a local folder or file. ``dtype`` is f32 or f16.
    """
    import gguf
    import numpy as np

    adapter_dir, out = Path(adapter_dir), Path(out_path)
    if out.exists() and not force:
        raise ConvertError(f"{out} exists; pass --force to overwrite it")
    if dtype not in ("f32", "f16"):
        raise ConvertError(f"adapter dtype must be f32 or f16, not '{dtype}'")
    cfg, pairs = load_lora_pairs(adapter_dir)
    base = base_dir if base_dir is not None else cfg.get("base_model_name_or_path")
    if not base:
        raise ConvertError(
            "the adapter does not name its base model",
            where=str(adapter_dir),
            hint="pass the base folder or .gguf",
        )
    info = base_info(base)  # a folder, a .gguf, or a hub id whose config is in the local cache
    check_adapter_matches(adapter_dir, info)
    alpha = gguf_alpha(pairs)
    tensors = lora_tensors(pairs, info, alpha)
    if dtype == "f16":
        tensors = [(n, t.astype(np.float16)) for n, t in tensors]
    check_free_space(out.parent, sum(t.nbytes for _, t in tensors) + (1 << 20), what=str(out))
    from medkit.provenance import ADAPTER_KEY, adapter_hash

    sha = adapter_hash(adapter_dir)  # the adapter this file holds, for eval's / chat's staleness check
    metadata = {**(metadata or {}), **({ADAPTER_KEY: sha} if sha else {})}
    if Path(str(base)).exists() and (found := base_fingerprint(base)):  # a hub id: not recorded
        metadata[BASE_KEY] = found  # the base's identity: the runtime compares it with the model's
    with atomic_path(out) as tmp:
        writer = gguf.GGUFWriter(str(tmp), info.arch)
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        writer.add_name(f"{adapter_dir.resolve().parent.name or 'medkit'} LoRA adapter")
        writer.add_string("medkit.adapter.base", str(cfg.get("base_model_name_or_path") or base))
        writer.add_uint32("medkit.adapter.rank", int(Counter(p.rank for p in pairs).most_common(1)[0][0]))
        writer.add_bool("medkit.adapter.rslora", bool(cfg.get("use_rslora")))
        for key, value in (metadata or {}).items():
            writer.add_string(key, str(value))
        for name, tensor in tensors:
            writer.add_tensor(name, tensor)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return out


def describe(path: str | Path) -> dict[str, Any]:
    """Alpha, tensor count and ranks of a GGUF LoRA adapter (for reports and tests), from its header."""
    from medkit.formats.gguf_header import read_gguf_info

    try:
        info = read_gguf_info(path, what="GGUF")
    except RuntimeLoadError as exc:
        raise ConvertError(f"cannot read GGUF: {exc.message}", where=str(path)) from exc
    ranks = sorted({int(shape[-1]) for name, shape in info.tensors.items() if name.endswith(".lora_a")})
    return {
        "type": info.get("general.type"),
        "adapter_type": info.get("adapter.type"),
        "alpha": info.lora_alpha,
        "architecture": info.get("general.architecture"),
        "tensors": list(info.tensors),
        "ranks": ranks,
    }
