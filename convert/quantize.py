"""Quantize a float GGUF with llama.cpp's own quantizer (llama_cpp.llama_model_quantize).

K-quants and the rest come from the reference implementation, including its per-tensor choices
(e.g. falling back to another type where a row length is not a multiple of the 256-wide K block).
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from medkit.errors import ConvertError, DiskSpaceError


@dataclass(frozen=True)
class QuantType:
    """One GGUF file type: its name, llama.cpp's llama_ftype number and whether medkit exports it."""

    name: str
    ftype: int  # llama.h llama_ftype == gguf.LlamaFileType == GGUF general.file_type
    bytes_per_weight: float | None = None  # set for the types medkit exports (free-space estimates)
    imatrix: bool = False  # llama.cpp refuses it without an importance matrix

    @property
    def exported(self) -> bool:
        return self.bytes_per_weight is not None

    @property
    def is_float(self) -> bool:
        return self.name in ("f32", "f16", "bf16")


# Every llama.cpp file type, the one table every name <-> ftype lookup uses. Numbers: llama.h's
# LLAMA_FTYPE_* (llama_cpp.LLAMA_FTYPE_MOSTLY_<NAME>) and gguf.LlamaFileType.MOSTLY_<NAME>; a test
# checks both. Types medkit exports carry bytes per weight (blocks include their scales).
QUANT_TYPES: tuple[QuantType, ...] = (
    QuantType("f32", 0, 4.0),
    QuantType("f16", 1, 2.0),
    QuantType("bf16", 32, 2.0),
    QuantType("q8_0", 7, 34 / 32),
    QuantType("q6_k", 18, 210 / 256),
    QuantType("q5_k_m", 17, 176 / 256),
    QuantType("q4_k_m", 15, 144 / 256),
    QuantType("q4_0", 2, 18 / 32),
    QuantType("q4_1", 3),
    QuantType("q5_0", 8),
    QuantType("q5_1", 9),
    QuantType("q2_k", 10),
    QuantType("q3_k_s", 11),
    QuantType("q3_k_m", 12),
    QuantType("q3_k_l", 13),
    QuantType("q4_k_s", 14),
    QuantType("q5_k_s", 16),
    QuantType("iq2_xxs", 19, imatrix=True),
    QuantType("iq2_xs", 20, imatrix=True),
    QuantType("q2_k_s", 21, imatrix=True),
    QuantType("iq3_xs", 22),
    QuantType("iq3_xxs", 23),
    QuantType("iq1_s", 24, imatrix=True),
    QuantType("iq4_nl", 25),
    QuantType("iq3_s", 26),
    QuantType("iq3_m", 27),
    QuantType("iq2_s", 28, imatrix=True),
    QuantType("iq2_m", 29, imatrix=True),
    QuantType("iq4_xs", 30),
    QuantType("iq1_m", 31, imatrix=True),
    QuantType("tq1_0", 36),
    QuantType("tq2_0", 37),
    QuantType("mxfp4_moe", 38),
    QuantType("nvfp4", 39),
    QuantType("q1_0", 40),
    QuantType("q2_0", 41),
)
BY_NAME = {t.name: t for t in QUANT_TYPES}
BY_FTYPE = {t.ftype: t for t in QUANT_TYPES}
FLOAT_TYPES = tuple(t.name for t in QUANT_TYPES if t.exported and t.is_float)
ALL_TYPES = tuple(t.name for t in QUANT_TYPES if t.exported)  # what `medkit export --gguf` writes
EXPORT_QUANTS = tuple(t for t in ALL_TYPES if t not in FLOAT_TYPES)
BYTES_PER_WEIGHT = {t.name: t.bytes_per_weight for t in QUANT_TYPES if t.bytes_per_weight is not None}


def type_name(ftype: int | None) -> str:
    """llama.cpp ftype number -> type name ('q4_k_m'); an unknown number reads 'ftype<N>'."""
    if ftype is None:
        return "unknown"
    t = BY_FTYPE.get(int(ftype))
    return t.name if t else f"ftype{int(ftype)}"


def ftype_of(name: str) -> int:
    """Type name -> llama.cpp ftype number; ConvertError for an unknown name."""
    t = BY_NAME.get(name.lower())
    if t is None:
        raise ConvertError(f"unknown GGUF type '{name}' (valid: {', '.join(ALL_TYPES)})")
    return t.ftype


def parse_types(spec: str) -> list[str]:
    """'q4_0,f16' -> ['q4_0', 'f16']; unknown names raise a ConvertError listing the valid ones."""
    types = [t.strip().lower() for t in spec.split(",") if t.strip()]
    if not types:
        raise ConvertError(f"no GGUF type given (valid: {', '.join(ALL_TYPES)})")
    bad = [t for t in types if t not in ALL_TYPES]
    if bad:
        raise ConvertError(f"unknown GGUF type '{bad[0]}' (valid: {', '.join(ALL_TYPES)})")
    return list(dict.fromkeys(types))


@dataclass
class QuantResult:
    path: Path
    qtype: str
    seconds: float
    fallbacks: int  # tensors llama.cpp wrote in another type (row length not a multiple of the block)
    n_tensors: int


def quantize(src: Path, dst: Path, qtype: str, *, threads: int | None = None) -> QuantResult:
    """Quantize float GGUF ``src`` into ``dst`` (written under a temp name, renamed on success)."""
    import llama_cpp
    import llama_cpp._logger as lc_log

    from medkit.runs import atomic_path

    if qtype not in EXPORT_QUANTS:
        raise ConvertError(f"unknown quant type '{qtype}' (valid: {', '.join(EXPORT_QUANTS)})")
    if not Path(src).is_file():
        raise ConvertError("no such GGUF to quantize", where=str(src))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_of(qtype)
    params.nthread = threads or min(os.cpu_count() or 1, 8)
    lines: list[str] = []

    @llama_cpp.llama_log_callback
    def capture(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        lines.append(text.decode("utf-8", "replace"))

    t0 = time.perf_counter()
    with atomic_path(Path(dst)) as tmp:
        llama_cpp.llama_log_set(capture, ctypes.c_void_p(0))  # llama.cpp logs every tensor; keep it quiet
        try:
            rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), ctypes.byref(params))
        finally:
            llama_cpp.llama_log_set(lc_log.llama_log_callback, ctypes.c_void_p(0))
        if rc != 0:
            _raise_if_disk_full(Path(src), Path(dst), tmp, qtype)  # llama.cpp says only "iostream error"
            last = " ".join("".join(lines).split())[-200:]
            raise ConvertError(f"llama.cpp quantizer failed for {qtype} (code {rc}): {last}", where=str(src))
    log = "".join(lines)
    found = re.search(r"(\d+) of (\d+) tensor\(s\) required fallback", log)
    return QuantResult(
        path=Path(dst),
        qtype=qtype,
        seconds=time.perf_counter() - t0,
        fallbacks=int(found.group(1)) if found else 0,
        n_tensors=int(found.group(2)) if found else 0,
    )


def estimate_bytes(src: Path, qtype: str) -> int:
    """About how large quantizing float GGUF ``src`` to ``qtype`` comes out (src size x bytes-per-weight ratio)."""
    from medkit.gguf_info import read_gguf_info

    try:
        src_bpw = BYTES_PER_WEIGHT.get(type_name(read_gguf_info(src).file_type)) or 2.0
    except Exception:  # an unreadable source fails in the quantizer, with its own message
        src_bpw = 2.0
    return int(Path(src).stat().st_size * BYTES_PER_WEIGHT[qtype] / src_bpw)


def _raise_if_disk_full(src: Path, dst: Path, tmp: Path, qtype: str) -> None:
    """After a failed quantize: DiskSpaceError naming the folder and the space needed when the disk filled."""
    import shutil

    from medkit.runs import fmt_bytes

    written = tmp.stat().st_size if tmp.exists() else 0
    free = shutil.disk_usage(dst.parent).free
    needed = estimate_bytes(src, qtype)
    if free + written < needed or free < 2**20:
        raise DiskSpaceError(
            f"disk full while quantizing to {qtype}: need about {fmt_bytes(needed)}, "
            f"{fmt_bytes(free + written)} available in {dst.parent}",
            where=str(dst),
        )
