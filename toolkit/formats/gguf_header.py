"""The one GGUF header reader: metadata and tensor shapes, checked before llama.cpp sees a file.

Everything in medkit that reads a GGUF header asks `read_gguf_info` (runtime, chat, eval's shape check,
verify's file type, the LoRA converter's base dimensions and adapter description, quantize, provenance);
thin functions elsewhere only interpret the fields it returns; `calibration` says how a GGUF was
quantized (eval's and verify's tables ask it). The header is scanned here (the gguf
package supplies value types and block sizes). Nothing here imports llama_cpp or torch.
"""

from __future__ import annotations

import math
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.errors import RuntimeLoadError
from medkit.formats.gguf_types import BY_FTYPE

__all__ = [
    "GGUFArray",
    "GGUFInfo",
    "calibration",
    "check_adapter_fits",
    "is_calibrated",
    "read_gguf_info",
    "read_gguf_kind",
]


# -- GGUF checks (before llama.cpp sees the file) ---------------------------------------
@dataclass
class GGUFInfo:
    """What the runtime needs to know about a GGUF file, read without llama.cpp."""

    path: Path
    kind: str  # general.type: "model" or "adapter"
    arch: str
    name: str = ""
    n_embd: int | None = None
    n_layer: int | None = None
    n_vocab: int | None = None
    chat_template: str | None = None
    lora_alpha: float | None = None
    file_type: int | None = (
        None  # general.file_type: llama.cpp's ftype (names: medkit.convert.quant.quantize)
    )
    tensors: dict[str, tuple[int, ...]] = field(default_factory=dict)  # name -> shape (GGUF ne order)
    meta: dict[str, Any] = field(default_factory=dict, repr=False)  # every key; arrays as GGUFArray(n)

    def get(self, key: str, default: Any = None) -> Any:
        """A metadata value; ``{arch}`` in ``key`` is this file's architecture; arrays give their length."""
        value = self.meta.get(key.replace("{arch}", self.arch))
        if isinstance(value, GGUFArray):
            return value.n
        return default if value is None else value


_U64 = struct.Struct("<Q")


class _Scan:
    """A fast walk over a GGUF header. The gguf package's GGUFReader makes a numpy array of every vocab
    string (5 s for SmolLM2's 49k vocab); value types and block sizes still come from the gguf package."""

    def __init__(self, buf: Any):
        self.buf, self.off = buf, 0

    def take(self, fmt: str) -> Any:
        val = struct.unpack_from("<" + fmt, self.buf, self.off)
        self.off += struct.calcsize("<" + fmt)
        return val[0] if len(val) == 1 else val

    def string(self) -> str:
        n = self.take("Q")
        if self.off + n > len(self.buf):
            raise struct.error("string runs past the end of the file")
        self.off += n
        return bytes(self.buf[self.off - n : self.off]).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        from gguf import GGUFValueType as T

        fmts = {T.UINT8: "B", T.INT8: "b", T.UINT16: "H", T.INT16: "h", T.UINT32: "I", T.INT32: "i",
                T.FLOAT32: "f", T.BOOL: "?", T.UINT64: "Q", T.INT64: "q", T.FLOAT64: "d"}  # fmt: skip
        if vtype == T.STRING:
            return self.string()
        if vtype == T.ARRAY:
            etype, n = self.take("I"), self.take("Q")
            if etype == T.STRING:  # tight loop: vocabularies hold ~10^5 strings
                off, unpack = self.off, _U64.unpack_from
                for _ in range(n):
                    off += 8 + unpack(self.buf, off)[0]
                if off > len(self.buf):
                    raise struct.error("array runs past the end of the file")
                self.off = off
            elif etype == T.ARRAY:
                for _ in range(n):
                    self.value(etype)
            else:
                self.off += n * struct.calcsize(fmts[T(etype)])
            return GGUFArray(n)
        return self.take(fmts[T(vtype)])


@dataclass(frozen=True)
class GGUFArray:
    n: int  # arrays are skipped; only their length is kept


@dataclass(frozen=True)
class TensorInfo:
    shape: tuple[int, ...]  # GGUF ne order (row length first)
    ggml: str  # GGMLQuantizationType name ('Q4_0', 'F16', ...)
    offset: int  # of its data, from the start of the file
    nbytes: int


def tensor_table(path: str | os.PathLike[str]) -> dict[str, TensorInfo]:
    """Every tensor's shape, type and place in the file (for reading or rewriting its bytes in place)."""
    return _scan(Path(path))[2]


def _scan(p: Path) -> tuple[dict[str, Any], dict[str, tuple[int, ...]], dict[str, TensorInfo]]:
    """Metadata, tensor shapes (GGUF ne order) and tensor infos of ``p``; RuntimeLoadError if it is cut
    short."""
    import mmap

    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    size = p.stat().st_size
    if size < 24:
        raise RuntimeLoadError(f"GGUF file is truncated ({size} bytes)", where=str(p))
    with p.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        sc = _Scan(buf)
        try:
            _, version, n_tensors, n_kv = sc.take("4sIQQ")
            if version not in (2, 3):
                raise RuntimeLoadError(f"unsupported GGUF version {version}", where=str(p))
            kv: dict[str, Any] = {}
            for _ in range(n_kv):
                key = sc.string()
                kv[key] = sc.value(sc.take("I"))
            infos = []
            for _ in range(n_tensors):
                name = sc.string()
                dims = tuple(sc.take("Q") for _ in range(sc.take("I")))
                infos.append((name, dims, sc.take("I"), sc.take("Q")))
        except (struct.error, ValueError, KeyError, OverflowError) as exc:
            raise RuntimeLoadError(f"GGUF header is truncated or corrupt ({exc})", where=str(p)) from exc
        align = int(kv.get("general.alignment", 32))
        start = (sc.off + align - 1) // align * align
    end = start
    table = {}
    for name, dims, ttype, offset in infos:
        try:
            kind = GGMLQuantizationType(ttype)
            block, nbytes = GGML_QUANT_SIZES[kind]
        except (ValueError, KeyError) as exc:
            raise RuntimeLoadError(f"tensor {name} has unknown type {ttype}", where=str(p)) from exc
        table[name] = TensorInfo(dims, kind.name, start + offset, math.prod(dims) // block * nbytes)
        end = max(end, start + offset + table[name].nbytes)
    if end > size:
        raise RuntimeLoadError(f"GGUF file is truncated ({size} of {end} bytes)", where=str(p))
    return kv, {name: dims for name, dims, _, _ in infos}, table


def read_gguf_info(path: str | os.PathLike[str], what: str = "model") -> GGUFInfo:
    """Check that ``path`` is a complete GGUF file and read its header; RuntimeLoadError if not."""
    p = Path(path)
    if p.is_dir():
        raise RuntimeLoadError(f"is a directory, not a {what} file", where=str(p))
    if not p.is_file():
        raise RuntimeLoadError(f"{what} file not found", where=str(p))
    with p.open("rb") as fh:
        magic = fh.read(4)
    if magic != b"GGUF":
        raise RuntimeLoadError(f"not a GGUF file (starts with {magic!r}, expected b'GGUF')", where=str(p))
    kv, tensors, _ = _scan(p)
    arch = str(kv.get("general.architecture") or "")
    tok = kv.get("tokenizer.ggml.tokens")
    info = GGUFInfo(
        path=p,
        kind=str(kv.get("general.type") or "model"),
        arch=arch,
        name=str(kv.get("general.name") or ""),
        n_embd=kv.get(f"{arch}.embedding_length"),
        n_layer=kv.get(f"{arch}.block_count"),
        n_vocab=tok.n if isinstance(tok, GGUFArray) else None,
        chat_template=kv.get("tokenizer.chat_template"),
        lora_alpha=kv.get("adapter.lora.alpha"),
        file_type=kv.get("general.file_type") if isinstance(kv.get("general.file_type"), int) else None,
        tensors=tensors,
        meta=kv,
    )
    if what == "adapter" and (info.kind != "adapter" or kv.get("adapter.type") != "lora"):
        raise RuntimeLoadError(
            f"not a LoRA adapter GGUF (general.type={info.kind!r}, adapter.type={kv.get('adapter.type')!r})",
            where=str(p),
        )
    if what == "model" and info.kind == "adapter":
        raise RuntimeLoadError("this is a LoRA adapter, not a model: pass it with --adapter", where=str(p))
    return info


def read_gguf_kind(path: str | os.PathLike[str]) -> str | None:
    """A GGUF's general.type ("model" when the key is absent, as in llama.cpp), read only as far as that
    key (it comes first in files gguf writes: no walk over the vocabulary); None when the file is not a
    readable GGUF. For sorting files cheaply; loading still checks the whole header."""
    import mmap

    p = Path(path)
    try:
        with p.open("rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            sc = _Scan(buf)
            magic, version, _, n_kv = sc.take("4sIQQ")
            if magic != b"GGUF" or version not in (2, 3):
                return None
            for _ in range(n_kv):
                key, value = sc.string(), sc.value(sc.take("I"))
                if key == "general.type":
                    return str(value)
    except (OSError, ValueError, struct.error, KeyError, OverflowError):
        return None
    return "model"


MEDKIT_IMATRIX_KEY = "medkit.imatrix"  # bool, on every GGUF medkit quantizes (convert/export.py)
# what llama-quantize --imatrix writes (any one of them is enough)
LLAMA_IMATRIX_KEYS = (
    "quantize.imatrix.file",
    "quantize.imatrix.dataset",
    "quantize.imatrix.entries_count",
    "quantize.imatrix.chunks_count",
)
MIX_KEY = "medkit.quant.mix"  # an `auto:SIZE` per-tensor mix (convert/quant/mix.py)
GPTQ_KEY = "medkit.gptq"  # bool: the codes were chosen by GPTQ (convert/quant/gptq.py)
# the calibration labels, least to most: a twin of a file below the best of its name gets "-<label>"
LEVELS = ("plain", "imatrix", "imatrix+gptq")


def calibration(source: GGUFInfo | str | os.PathLike[str]) -> str | None:
    """How a model GGUF was quantized: "imatrix" (with an importance matrix), "imatrix+gptq" (its codes
    chosen by GPTQ as well), "plain" (neither), each followed by " mix" for an `auto:SIZE` mix; None for
    a float file (f32/f16/bf16) and for one with neither a file type nor a calibration key."""
    info = source if isinstance(source, GGUFInfo) else read_gguf_info(source, what="GGUF")
    qtype = BY_FTYPE.get(info.file_type) if info.file_type is not None else None
    if qtype is not None and qtype.is_float:
        return None
    meta = info.meta
    calibrated = meta.get(MEDKIT_IMATRIX_KEY) is True or any(k in meta for k in LLAMA_IMATRIX_KEYS)
    if not calibrated and info.file_type is None and MEDKIT_IMATRIX_KEY not in meta:
        return None  # no file type and no calibration key: nothing says it is quantized
    how = ("imatrix+gptq" if meta.get(GPTQ_KEY) is True else "imatrix") if calibrated else "plain"
    return how + (" mix" if MIX_KEY in meta else "")


def level(label: str | None) -> int:
    """Rank of a calibration label in LEVELS (-1: a float file)."""
    return LEVELS.index(label.removesuffix(" mix")) if label else -1


def is_calibrated(label: str | None) -> bool:
    """Whether a `calibration` label says the file was quantized with an importance matrix."""
    return level(label) >= LEVELS.index("imatrix")


def check_adapter_fits(base: GGUFInfo, adapter: GGUFInfo) -> None:
    """Refuse an adapter made for another base, naming the dimensions that differ."""
    where = str(adapter.path)
    if adapter.arch and adapter.arch != base.arch:
        raise RuntimeLoadError(
            f"adapter is for architecture '{adapter.arch}', the model is '{base.arch}'", where=where
        )
    problems: list[str] = []
    for name, a_shape in sorted(adapter.tensors.items()):
        if not name.endswith(".lora_a"):
            continue
        target = name[: -len(".lora_a")]
        b_shape = adapter.tensors.get(target + ".lora_b")
        w_shape = base.tensors.get(target)
        if w_shape is None:
            problems.append(f"{target} is not in the model (n_layer {base.n_layer})")
        elif b_shape is None:
            problems.append(f"{target}.lora_b is missing")
        elif target != "token_embd.weight" and (a_shape[0], b_shape[1]) != (w_shape[0], w_shape[1]):
            problems.append(
                f"{target}: adapter in x out = {a_shape[0]} x {b_shape[1]}, model {w_shape[0]} x {w_shape[1]}"
            )
        elif target != "token_embd.weight" and a_shape[1] != b_shape[0]:
            problems.append(f"{target}: lora_a rank {a_shape[1]} != lora_b rank {b_shape[0]}")
        if len(problems) >= 2:
            break
    if problems:
        if base.n_embd:
            problems.append(f"model n_embd {base.n_embd}, n_layer {base.n_layer}")
        raise RuntimeLoadError("adapter was made for another base: " + "; ".join(problems), where=where)


# The base model's identity (a fingerprint of its weights, written by medkit's GGUF writers): a model GGUF
# carries its own under MODEL_ID_KEY, an adapter GGUF the one of the base it was trained on under
# ADAPTER_BASE_ID_KEY. Equal shapes do not make the same base; these two keys do, when both are present.
MODEL_ID_KEY = "medkit.base.id"
ADAPTER_BASE_ID_KEY = "medkit.adapter.base_id"


def check_adapter_base(base: GGUFInfo, adapter: GGUFInfo) -> None:
    """Refuse an adapter whose recorded base identity differs from the model's (skipped when either file
    does not record one: files from other tools, older medkit versions)."""
    want, have = adapter.meta.get(ADAPTER_BASE_ID_KEY), base.meta.get(MODEL_ID_KEY)
    if isinstance(want, str) and isinstance(have, str) and want and have and want != have:
        raise RuntimeLoadError(
            f"adapter was trained on another base (base id {want[:16]}, this model's {have[:16]})",
            where=str(adapter.path),
            hint="load it over the base it was made for",
        )
