"""PEFT LoRA adapter -> GGUF LoRA adapter that llama.cpp applies over a GGUF of the same base.

llama.cpp reads ``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha`` and, for every
adapted base tensor ``T``, the pair ``T.lora_a`` (numpy shape (r, n_in)) and ``T.lora_b`` ((n_out, r)); it
adds ``(alpha / r) * B @ A`` to ``T``. What this module takes care of:

* HF module names -> GGUF tensor names through the gguf package's TensorNameMap;
* llama/mistral Q and K: the base GGUF holds their rows interleaved for rotary, so lora_b rows get the
  same permutation (lora_a, V, O and the MLP are untouched);
* rsLoRA and per-module rank/alpha patterns: llama.cpp knows one alpha and divides by each tensor's rank,
  so the adapter-wide alpha is set from the most common (rank, scale) and any other factor is folded into B;
* gpt2 Conv1D layers (fan_in_fan_out): PEFT's A and B are already in Linear orientation, like the base GGUF;
* adapters llama.cpp cannot apply (embeddings, lm_head, modules_to_save, DoRA, LoRA bias) are refused.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkit.errors import ConvertError
from medkit.runs import atomic_path, check_free_space

if TYPE_CHECKING:
    import numpy as np

ADAPTER_WEIGHTS = "adapter_model.safetensors"
_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight$")
_REFUSED_MODULES = ("embed_tokens", "lm_head", "wte", "wpe", "embed_out", "embed_positions")
# HF model_types whose Q/K rows the base GGUF stores interleaved (llama.cpp's "llama" rope layout).
_PERMUTED_QK = {"llama", "mistral"}


# ---- the base model an adapter goes with ------------------------------------------------------------

SUPPORTED = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "gpt2": "gpt2"}  # HF type -> GGUF arch
_FROM_GGUF_ARCH = {"llama": "llama", "qwen2": "qwen2", "gpt2": "gpt2"}
_LAYER = re.compile(r"\.(?:layers|h)\.(\d+)\.")


@dataclass(frozen=True)
class BaseInfo:
    """The dimensions of a base model that decide whether (and how) an adapter applies to it."""

    model_type: str  # HF model_type: llama, mistral, qwen2, gpt2
    arch: str  # GGUF architecture
    n_layers: int
    hidden: int
    n_head: int
    n_head_kv: int
    head_dim: int
    intermediate: int
    vocab: int  # embedding rows
    tokenizer_size: int | None  # tokens the tokenizer defines, when known
    source: str


def _json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConvertError(f"cannot read {path.name}: {exc}", where=str(path)) from exc


def read_adapter_config(adapter_dir: Path) -> dict[str, Any]:
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise ConvertError("no adapter_config.json (not a PEFT adapter folder)", where=str(adapter_dir))
    return _json(path)


def tokenizer_size(folder: Path) -> int | None:
    """Number of token ids a tokenizer.json defines (vocab plus added tokens), or None without one."""
    path = Path(folder) / "tokenizer.json"
    if not path.is_file():
        return None
    data = _json(path)
    vocab = (data.get("model") or {}).get("vocab") or {}
    size = (max(vocab.values()) + 1) if isinstance(vocab, dict) and vocab else len(vocab)
    added = [t.get("id", -1) for t in data.get("added_tokens") or []]
    return max([size, *(i + 1 for i in added)])


def info_from_config(cfg: dict[str, Any], source: str, tok_size: int | None = None) -> BaseInfo:
    mt = cfg.get("model_type", "?")
    if mt not in SUPPORTED:
        raise ConvertError(
            f"unsupported architecture '{mt}' (supported: {', '.join(SUPPORTED)})", where=source
        )
    if mt == "gpt2":
        hidden, n_head = int(cfg["n_embd"]), int(cfg["n_head"])
        return BaseInfo(
            mt, "gpt2", int(cfg["n_layer"]), hidden, n_head, n_head, hidden // n_head,
            int(cfg.get("n_inner") or 4 * hidden), int(cfg["vocab_size"]), tok_size, source,
        )  # fmt: skip
    hidden, n_head = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    return BaseInfo(
        mt, SUPPORTED[mt], int(cfg["num_hidden_layers"]), hidden, n_head,
        int(cfg.get("num_key_value_heads") or n_head), int(cfg.get("head_dim") or hidden // n_head),
        int(cfg["intermediate_size"]), int(cfg["vocab_size"]), tok_size, source,
    )  # fmt: skip


def info_from_gguf(path: Path) -> BaseInfo:
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # the reader raises several types on a bad file
        raise ConvertError(f"cannot read GGUF: {exc}", where=str(path)) from exc

    def val(key: str, default: Any = None) -> Any:
        f = reader.get_field(key)
        return default if f is None else f.contents()

    arch = val("general.architecture", "?")
    if arch not in _FROM_GGUF_ARCH:
        raise ConvertError(
            f"unsupported GGUF architecture '{arch}' (supported: {', '.join(_FROM_GGUF_ARCH)})",
            where=str(path),
        )
    tokens = reader.get_field("tokenizer.ggml.tokens")
    n_tok = len(tokens.data) if tokens is not None else None
    hidden, n_head = int(val(f"{arch}.embedding_length")), int(val(f"{arch}.attention.head_count"))
    return BaseInfo(
        _FROM_GGUF_ARCH[arch], arch, int(val(f"{arch}.block_count")), hidden, n_head,
        int(val(f"{arch}.attention.head_count_kv", n_head)),
        int(val(f"{arch}.attention.key_length", hidden // n_head)), int(val(f"{arch}.feed_forward_length")),
        int(val(f"{arch}.vocab_size", n_tok or 0)), None, str(path),
    )  # fmt: skip


def base_info(spec: str | Path) -> BaseInfo:
    """BaseInfo of an HF folder, a .gguf file, or a hub id in the local cache."""
    p = Path(spec)
    if p.is_file() and p.suffix == ".gguf":
        return info_from_gguf(p)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ConvertError("no config.json (not a Hugging Face model folder)", where=str(p))
        return info_from_config(_json(p / "config.json"), str(p), tokenizer_size(p))
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(str(spec)).to_dict()
    except Exception as exc:  # offline, unknown id, ...
        raise ConvertError(f"cannot read the config of base model '{spec}': {exc}".splitlines()[0]) from exc
    return info_from_config(cfg, str(spec))


_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2"}


def read_safetensors(path: Path, *, load: bool = True) -> dict[str, tuple[tuple[int, ...], Any]]:
    """name -> (shape, float32 array or None) of a safetensors file, read without torch (the convert
    extra has none). A truncated or malformed file raises ConvertError."""
    import numpy as np

    bad = f"corrupt or truncated safetensors ({path.stat().st_size} bytes)"
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            if not 0 < n < 100 << 20:
                raise ConvertError(bad, where=str(path))
            header = json.loads(fh.read(n))
            data = fh.read() if load else b""
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConvertError(bad, where=str(path)) from exc
    size = path.stat().st_size - 8 - n
    out: dict[str, tuple[tuple[int, ...], Any]] = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        begin, end = meta["data_offsets"]
        shape = tuple(int(d) for d in meta["shape"])
        if end > size or begin > end:
            raise ConvertError(bad, where=str(path))
        arr = None
        if load:
            code = _ST_DTYPES.get(meta["dtype"])
            if code is None:
                raise ConvertError(f"tensor '{name}' has unsupported dtype {meta['dtype']}", where=str(path))
            arr = np.frombuffer(
                data, dtype=code, count=(end - begin) // np.dtype(code).itemsize, offset=begin
            )
            if meta["dtype"] == "BF16":  # bfloat16 is the top half of a float32
                arr = (arr.astype(np.uint32) << 16).view(np.float32)
            arr = arr.astype(np.float32).reshape(shape)
        out[name] = (shape, arr)
    return out


def adapter_shapes(adapter_dir: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape in adapter_model.safetensors, without loading the data."""
    weights = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ConvertError(f"no {ADAPTER_WEIGHTS} (PEFT adapter weights)", where=str(adapter_dir))
    return {k: shape for k, (shape, _) in read_safetensors(weights, load=False).items()}


def _expected(info: BaseInfo, module: str) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """((name, n_in), (name, n_out)) the base expects for an adapted module, or None if unknown."""
    h, attn = ("hidden size", info.hidden), ("attention width", info.n_head * info.head_dim)
    kv, ff = ("key/value width", info.n_head_kv * info.head_dim), ("intermediate size", info.intermediate)
    table = {
        "q_proj": (h, attn), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (attn, h),
        "gate_proj": (h, ff), "up_proj": (h, ff), "down_proj": (ff, h),
        "attn.c_attn": (h, ("qkv width", 3 * info.hidden)), "attn.c_proj": (h, h),
        "mlp.c_fc": (h, ff), "mlp.c_proj": (ff, h),
    }  # fmt: skip
    return next((v for k, v in table.items() if module.endswith(k)), None)


def check_adapter_matches(adapter_dir: str | Path, info: BaseInfo) -> None:
    """Raise ConvertError naming every dimension (arch, hidden size, layers, vocab...) that differs."""
    adapter_dir = Path(adapter_dir)
    cfg = read_adapter_config(adapter_dir)
    shapes = adapter_shapes(adapter_dir)
    diffs: dict[str, tuple[Any, Any]] = {}
    own = adapter_dir / "config.json"  # some trainers save the base config next to the adapter
    if own.is_file():
        mt = _json(own).get("model_type")
        if mt and SUPPORTED.get(mt) != info.arch:
            diffs["architecture"] = (mt, info.model_type)
    gpt2_style = any(".h." in k and "transformer." in k for k in shapes)
    if gpt2_style != (info.model_type == "gpt2"):
        diffs.setdefault("architecture", ("gpt2" if gpt2_style else "llama-style", info.model_type))
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        m = _KEY.match(key)
        if m:
            modules.setdefault(m["module"], {})[m["ab"]] = shape
        elif "embed" in key or "lm_head" in key or ".wte." in key:
            rows = max(shape) if "lora_embedding_A" in key else shape[0]
            if len(shape) == 2 and rows != info.vocab and "lora_embedding_B" not in key:
                diffs["vocab"] = (rows, info.vocab)
    layers = [int(m.group(1)) for k in modules if (m := _LAYER.search(k))]
    if layers:
        n = max(layers) + 1
        if n > info.n_layers or (cfg.get("layers_to_transform") is None and n != info.n_layers):
            diffs["layers"] = (n, info.n_layers)
    if "architecture" not in diffs:
        for module, ab in modules.items():
            exp = _expected(info, module)
            if exp is None or "A" not in ab or "B" not in ab:
                continue
            (in_name, n_in), (out_name, n_out) = exp
            if ab["A"][-1] != n_in:
                diffs.setdefault(in_name, (ab["A"][-1], n_in))
            if ab["B"][0] != n_out:
                diffs.setdefault(out_name, (ab["B"][0], n_out))
    tok = tokenizer_size(adapter_dir)
    if tok is not None and "vocab" not in diffs:
        if tok > info.vocab or (info.tokenizer_size is not None and tok != info.tokenizer_size):
            diffs["vocab"] = (tok, info.tokenizer_size or info.vocab)
    if diffs:
        what = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in diffs.items())
        raise ConvertError(
            f"adapter does not fit base '{info.source}': {what} (adapter vs base)", where=str(adapter_dir)
        )


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
        m = _KEY.match(key)
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
    out = rows.shape[0]
    if out % (2 * n_head):
        raise ConvertError(f"cannot permute {out} rows into {n_head} rotary heads")
    return rows.reshape(n_head, 2, out // n_head // 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


@functools.lru_cache(maxsize=8)
def _name_map(arch_name: str, n_layers: int) -> Any:
    import gguf

    arch = next((a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name), None)
    if arch is None:
        raise ConvertError(f"gguf package does not know architecture '{arch_name}'")
    return gguf.get_tensor_name_map(arch, n_layers)  # slow to build: once per architecture and depth


def gguf_tensor_name(module: str, info: BaseInfo) -> str:
    """GGUF name of the base weight a HF module writes into, e.g. blk.3.attn_q.weight."""
    name = _name_map(info.arch, info.n_layers).get_name(module + ".weight", try_suffixes=(".weight",))
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
        if info.model_type in _PERMUTED_QK:
            if p.module.endswith("q_proj"):
                b = permute_rows_for_rope(b, info.n_head)
            elif p.module.endswith("k_proj"):
                b = permute_rows_for_rope(b, info.n_head_kv)
        out.append((f"{name}.lora_a", np.ascontiguousarray(p.a, dtype=np.float32)))
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
    """Alpha, tensor count and ranks of a GGUF LoRA adapter (for reports and tests)."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def field(key: str) -> Any:
        f = reader.get_field(key)
        return None if f is None else f.contents()

    ranks = sorted({int(t.shape[-1]) for t in reader.tensors if t.name.endswith(".lora_a")})
    return {
        "type": field("general.type"),
        "adapter_type": field(gguf.Keys.Adapter.TYPE),
        "alpha": field(gguf.Keys.Adapter.LORA_ALPHA),
        "architecture": field("general.architecture"),
        "tensors": [t.name for t in reader.tensors],
        "ranks": ranks,
    }
