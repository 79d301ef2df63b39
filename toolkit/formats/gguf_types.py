"""The GGUF file types (llama.cpp's llama_ftype): the one table of quant and float types.

QUANT_TYPES below is the one table of GGUF file types: recipe validation, `medkit export --gguf` (help
and parsing), the quantizer (medkit.convert.quant.quantize), `medkit verify`, eval columns, the GGUF
header reader and RunDir.ggufs() ordering all ask it. Adding a type medkit exports is one row here
(exported=True) plus its line in tests/convert. A leaf: imports nothing of medkit but medkit.errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from medkit.errors import ConvertError


@dataclass(frozen=True)
class QuantType:
    """One GGUF file type (llama.cpp's llama_ftype) and what medkit needs to know about it."""

    name: str
    ftype: int  # llama.h llama_ftype == gguf.LlamaFileType == GGUF general.file_type
    ggml: str | None  # the GGML tensor type most weights get (gguf.GGMLQuantizationType member)
    block: int | None  # weights per block of that tensor type (1: a float type, not block-quantized)
    block_bytes: int | None  # bytes per block, scales included (gguf.GGML_QUANT_SIZES)
    exported: bool = False  # `medkit export --gguf` writes it (and a recipe's export.gguf may ask for it)
    # needs an importance matrix: llama.cpp refuses it without one, or (the i-quants below 4 bits) its
    # output is unusable without one. Every other quantized type gains from one too (medkit export).
    imatrix: bool = False

    @property
    def is_float(self) -> bool:
        """f32/f16/bf16: written by medkit's GGUF writer; every other type by llama.cpp's quantizer."""
        return self.block == 1

    @property
    def bytes_per_weight(self) -> float | None:
        return self.block_bytes / self.block if self.block and self.block_bytes else None


def _t(name: str, ftype: int, ggml: str | None, block: int | None, size: int | None, **kw: bool) -> QuantType:
    return QuantType(name, ftype, ggml, block, size, **kw)


# Every llama.cpp file type. Numbers: llama.h's LLAMA_FTYPE_* (llama_cpp.LLAMA_FTYPE_MOSTLY_<NAME>) and
# gguf.LlamaFileType.MOSTLY_<NAME>; block sizes: gguf.GGML_QUANT_SIZES. Tests check all three.
# The exported rows are listed from the highest precision down (the order help text shows).
QUANT_TYPES: tuple[QuantType, ...] = (
    _t("f32", 0, "F32", 1, 4, exported=True),
    _t("f16", 1, "F16", 1, 2, exported=True),
    _t("bf16", 32, "BF16", 1, 2, exported=True),
    _t("q8_0", 7, "Q8_0", 32, 34, exported=True),
    _t("q6_k", 18, "Q6_K", 256, 210, exported=True),
    _t("q5_k_m", 17, "Q5_K", 256, 176, exported=True),
    _t("q4_k_m", 15, "Q4_K", 256, 144, exported=True),
    _t("q4_0", 2, "Q4_0", 32, 18, exported=True),
    _t("iq4_nl", 25, "IQ4_NL", 32, 18, exported=True),
    _t("iq4_xs", 30, "IQ4_XS", 256, 136, exported=True),
    _t("q3_k_l", 13, "Q3_K", 256, 110, exported=True),
    _t("q3_k_m", 12, "Q3_K", 256, 110, exported=True),
    _t("q3_k_s", 11, "Q3_K", 256, 110, exported=True),
    _t("iq3_s", 26, "IQ3_S", 256, 110, exported=True, imatrix=True),
    _t("iq3_xxs", 23, "IQ3_XXS", 256, 98, exported=True, imatrix=True),
    _t("q2_k", 10, "Q2_K", 256, 84, exported=True),
    _t("iq2_xs", 20, "IQ2_XS", 256, 74, exported=True, imatrix=True),
    _t("q4_1", 3, "Q4_1", 32, 20),
    _t("q5_0", 8, "Q5_0", 32, 22),
    _t("q5_1", 9, "Q5_1", 32, 24),
    _t("q4_k_s", 14, "Q4_K", 256, 144),
    _t("q5_k_s", 16, "Q5_K", 256, 176),
    _t("iq2_xxs", 19, "IQ2_XXS", 256, 66, imatrix=True),
    _t("q2_k_s", 21, "Q2_K", 256, 84, imatrix=True),
    _t("iq3_xs", 22, "IQ3_S", 256, 110, imatrix=True),
    _t("iq1_s", 24, "IQ1_S", 256, 50, imatrix=True),
    _t("iq3_m", 27, "IQ3_S", 256, 110, imatrix=True),
    _t("iq2_s", 28, "IQ2_S", 256, 82, imatrix=True),
    _t("iq2_m", 29, "IQ2_S", 256, 82, imatrix=True),
    _t("iq1_m", 31, "IQ1_M", 256, 56, imatrix=True),
    _t("tq1_0", 36, "TQ1_0", 256, 54),
    _t("tq2_0", 37, "TQ2_0", 256, 66),
    _t("mxfp4_moe", 38, "MXFP4", 32, 17),
    _t("nvfp4", 39, "NVFP4", 64, 36),
    _t("q1_0", 40, "Q1_0", 128, 18),
    _t("q2_0", 41, None, None, None),  # newer than the gguf package: no tensor type to size it by
)
BY_NAME = {t.name: t for t in QUANT_TYPES}
BY_FTYPE = {t.ftype: t for t in QUANT_TYPES}
EXPORT_TYPES = tuple(t.name for t in QUANT_TYPES if t.exported)  # what `medkit export --gguf` writes
FLOAT_TYPES = tuple(t for t in EXPORT_TYPES if BY_NAME[t].is_float)  # written by medkit.convert.gguf.writer
QUANT_SOURCES = ("f16", "f32")  # float outputs the quantizer reads, in order of preference (else a temp f16)


def lookup(name: str) -> QuantType:
    """The table row of an exported type ('Q4_K_M' works too); ConvertError listing the valid ones."""
    t = BY_NAME.get(name.strip().lower())
    if t is None or not t.exported:
        why = "medkit does not export" if t else "unknown"
        raise ConvertError(f"{why} GGUF type '{name}' (valid: {', '.join(EXPORT_TYPES)})", hint=AUTO_HINT)
    return t


def type_name(ftype: int | None) -> str:
    """llama.cpp ftype number -> type name ('q4_k_m'); an unknown number reads 'ftype<N>'."""
    if ftype is None:
        return "unknown"
    t = BY_FTYPE.get(int(ftype))
    return t.name if t else f"ftype{int(ftype)}"


def ftype_of(name: str) -> int:
    """Type name (any llama.cpp file type) -> its ftype number; ConvertError for an unknown name."""
    t = BY_NAME.get(name.strip().lower())
    return t.ftype if t else lookup(name).ftype


def parse_types(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """'q4_0,f16' (or ['q4_0', 'f16']) -> ['q4_0', 'f16']; unknown names raise a ConvertError listing the
    valid ones. 'auto:90MB' / 'auto:4.5bpw' (a mix chosen under a size, medkit.convert.quant.mix) stays
    as its normalized spec."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    types = [t.strip().lower() for t in items if t.strip()]
    if not types:
        raise ConvertError(f"no GGUF type given (valid: {', '.join(EXPORT_TYPES)})", hint=AUTO_HINT)
    return list(dict.fromkeys(parse_budget(t).spec if is_auto(t) else lookup(t).name for t in types))


AUTO = "auto"
AUTO_HINT = "or auto:SIZE (e.g. auto:90MB, auto:4.5bpw): a per-tensor mix chosen by measurement"
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "kib": 2**10, "mib": 2**20, "gib": 2**30}


@dataclass(frozen=True)
class SizeBudget:
    """The size an `auto:SIZE` export must fit: a file size in bytes, or bits per quantizable weight."""

    spec: str  # normalized: 'auto:90mb', 'auto:4.5bpw'
    bytes: int | None = None
    bpw: float | None = None

    @property
    def file_stem(self) -> str:
        """What the GGUF file name carries ('auto-90mb'): no ':' in file names."""
        return self.spec.replace(":", "-")


def is_auto(name: str) -> bool:
    return name.strip().lower().split(":", 1)[0] == AUTO


def parse_budget(spec: str) -> SizeBudget:
    """'auto:90MB', 'auto:1.2GiB', 'auto:4.5bpw' -> SizeBudget; ConvertError saying the accepted forms."""
    text = spec.strip().lower()
    found = re.fullmatch(r"auto:\s*([0-9]*\.?[0-9]+)\s*(bpw|[kmg]i?b|b)", text)
    usage = "give auto:SIZE with SIZE like 90MB, 1.2GiB or 4.5bpw"
    if not found:
        raise ConvertError(f"cannot read the size in '{spec}'", hint=usage)
    value, unit = float(found.group(1)), found.group(2)
    if value <= 0 or (unit == "bpw" and value > 16):
        raise ConvertError(
            f"size '{spec}' is out of range (a size above 0, or 0-16 bits per weight)", hint=usage
        )
    norm = f"{AUTO}:{found.group(1)}{unit}"
    if unit == "bpw":
        return SizeBudget(norm, bpw=value)
    return SizeBudget(norm, bytes=int(value * _UNITS[unit]))


def precision_rank(name: str) -> tuple[float, int]:
    """Sort key, highest precision first: bytes per weight (descending), then table order; unknown last."""
    t = BY_NAME.get(name.lower())
    if t is None:
        return (1.0, len(QUANT_TYPES))
    return (-(t.bytes_per_weight or 0.0), QUANT_TYPES.index(t))
