"""The base model a PEFT LoRA adapter goes with: its dimensions (from a HF folder, a GGUF or a hub id)
and whether the adapter's tensors fit them, every differing dimension named in one line.

Which families can be converted, their GGUF architecture, block path and LoRA module shapes come from
the family registry (medkit.convert.arch); a GGUF base is read by medkit.formats.gguf_header. Torch-free.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkit.convert import arch
from medkit.convert.arch import Family
from medkit.errors import ConvertError, RuntimeLoadError

ADAPTER_WEIGHTS = "adapter_model.safetensors"
LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[A-Za-z0-9_-]+)?\.weight$"
)


# ---- the base model an adapter goes with ------------------------------------------------------------


def _lora_families() -> list[arch.Family]:
    return [f for f in arch.families() if f.lora_gguf]


def _supported() -> str:
    return ", ".join(f.name for f in _lora_families())


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
    # Gated DeltaNet heads of a hybrid (Qwen3.5): (K heads, V heads, K head width, V head width), else None
    linear: tuple[int, int, int, int] | None = None

    @property
    def family(self) -> Family:
        fam = arch.by_model_type(self.model_type)
        assert fam is not None  # BaseInfo is only made for registered families
        return fam


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
    fam = arch.by_model_type(mt)
    if fam is None or not fam.lora_gguf or fam.gguf_arch is None:
        raise ConvertError(f"unsupported architecture '{mt}' (supported: {_supported()})", where=source)
    d = fam.read_dims(cfg, where=source)
    if d.n_vocab is None:
        raise ConvertError(f"config.json lacks or has a bad 'vocab_size' entry for {fam.name}", where=source)
    text = fam.view(cfg)
    keys = ("linear_num_key_heads", "linear_num_value_heads", "linear_key_head_dim", "linear_value_head_dim")
    linear = tuple(int(text[k]) for k in keys) if all(text.get(k) for k in keys) else None
    return BaseInfo(
        mt, fam.gguf_arch, d.n_layer, d.n_embd, d.n_head, d.n_head_kv, d.head_dim, d.n_ff, d.n_vocab,
        tok_size, source, linear,  # type: ignore[arg-type]
    )  # fmt: skip


def info_from_gguf(path: Path) -> BaseInfo:
    """BaseInfo of a model GGUF, from its header (medkit.formats.gguf_header)."""
    from medkit.formats.gguf_header import GGUFArray, read_gguf_info

    try:
        info = read_gguf_info(path, what="GGUF")
    except RuntimeLoadError as exc:
        raise ConvertError(f"cannot read GGUF: {exc.message}", where=str(path)) from exc
    fam = arch.by_gguf_arch(info.arch)
    if fam is None or not fam.lora_gguf:
        supported = ", ".join(dict.fromkeys(str(f.gguf_arch) for f in _lora_families()))
        raise ConvertError(
            f"unsupported GGUF architecture '{info.arch or '?'}' (supported: {supported})", where=str(path)
        )
    if info.kind == "adapter":
        raise ConvertError("this GGUF is a LoRA adapter, not a base model", where=str(path))
    try:
        hidden, n_head = (
            int(info.get("{arch}.embedding_length")),
            int(info.get("{arch}.attention.head_count")),
        )
        state, groups = info.get("{arch}.ssm.state_size"), info.get("{arch}.ssm.group_count")
        rank = info.get("{arch}.ssm.time_step_rank")
        linear = (int(groups), int(rank), int(state), int(state)) if state and groups and rank else None
        blocks = int(info.get("{arch}.block_count")) - int(info.get("{arch}.nextn_predict_layers", 0) or 0)
        ff = info.meta.get(f"{info.arch}.feed_forward_length")  # per-layer widths (Gemma 4): 0, not checked
        ff = 0 if isinstance(ff, GGUFArray) else int(info.get("{arch}.feed_forward_length"))
        return BaseInfo(
            fam.model_types[0], info.arch, blocks, hidden, n_head,
            int(info.get("{arch}.attention.head_count_kv", n_head)),
            int(info.get("{arch}.attention.key_length", hidden // n_head)),
            ff, int(info.get("{arch}.vocab_size", info.n_vocab or 0)),
            None, str(path), linear,
        )  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise ConvertError(f"GGUF header lacks the {info.arch} dimensions ({exc})", where=str(path)) from exc


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


def read_safetensors(path: Path, *, load: bool = True) -> dict[str, tuple[tuple[int, ...], Any]]:
    """name -> (shape, float32 array or None) of a safetensors file (medkit.convert.gguf.safetensors_io, no
    torch). A truncated or malformed file raises ConvertError."""
    import numpy as np

    from medkit.convert.gguf.safetensors_io import read_header, read_tensor

    return {
        name: (t.shape, np.array(read_tensor(t), dtype=np.float32) if load else None)
        for name, t in read_header(path).items()
    }


def adapter_shapes(adapter_dir: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape in adapter_model.safetensors, without loading the data."""
    weights = Path(adapter_dir) / ADAPTER_WEIGHTS
    if not weights.is_file():
        raise ConvertError(f"no {ADAPTER_WEIGHTS} (PEFT adapter weights)", where=str(adapter_dir))
    return {k: shape for k, (shape, _) in read_safetensors(weights, load=False).items()}


def _expected(info: BaseInfo, module: str) -> tuple[tuple[str, int], tuple[str, int]] | None:
    """((name, n_in), (name, n_out)) the base expects for an adapted module, or None if unknown."""
    d = arch.Dims(
        info.n_layers,
        info.hidden,
        info.n_head,
        info.n_head_kv,
        info.head_dim,
        info.intermediate,
        0,
        linear=info.linear,
    )
    shapes = info.family.lora_shapes
    key = next((k for k in shapes if module.endswith(k)), None)
    if key is None:
        return None
    n_in, n_out = shapes[key]
    return d.width(n_in), d.width(n_out)


def _layer_index(module: str) -> int | None:
    """The block index in a HF module path (model.layers.3.mlp, transformer.h.0.attn, ...), or None."""
    names = sorted({re.escape(f.blocks.rsplit(".", 1)[-1]) for f in _lora_families()})
    m = re.search(rf"\.(?:{'|'.join(names)})\.(\d+)\.", module)
    return int(m.group(1)) if m else None


def check_adapter_matches(adapter_dir: str | Path, info: BaseInfo) -> None:
    """Raise ConvertError naming every dimension (arch, hidden size, layers, vocab...) that differs."""
    adapter_dir = Path(adapter_dir)
    cfg = read_adapter_config(adapter_dir)
    shapes = adapter_shapes(adapter_dir)
    diffs: dict[str, tuple[Any, Any]] = {}
    own = adapter_dir / "config.json"  # some trainers save the base config next to the adapter
    if own.is_file():
        mt = _json(own).get("model_type")
        if mt and arch.gguf_arch_of(mt) != info.arch:
            diffs["architecture"] = (mt, info.model_type)
    blocks = info.family.blocks
    foreign = [
        f.name for f in _lora_families() if f.blocks != blocks and any(f"{f.blocks}." in k for k in shapes)
    ]
    if foreign and not any(f"{blocks}." in k for k in shapes):  # e.g. transformer.h.* on a llama base
        diffs.setdefault("architecture", ("/".join(foreign), info.model_type))
    modules: dict[str, dict[str, tuple[int, ...]]] = {}
    for key, shape in shapes.items():
        m = LORA_KEY.match(key)
        if m:
            modules.setdefault(m["module"], {})[m["ab"]] = shape
        elif "embed" in key or "lm_head" in key or ".wte." in key:
            rows = max(shape) if "lora_embedding_A" in key else shape[0]
            if len(shape) == 2 and rows != info.vocab and "lora_embedding_B" not in key:
                diffs["vocab"] = (rows, info.vocab)
    layers = [i for k in modules if (i := _layer_index(k)) is not None]
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
            if n_in and ab["A"][-1] != n_in:
                diffs.setdefault(in_name, (ab["A"][-1], n_in))
            if n_out and ab["B"][0] != n_out:
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
