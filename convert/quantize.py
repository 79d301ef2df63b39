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

from medkit.errors import ConvertError

# medkit name -> llama_cpp constant name (llama.h's llama_ftype)
QUANT_FTYPES = {
    "q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0",
    "q6_k": "LLAMA_FTYPE_MOSTLY_Q6_K",
    "q5_k_m": "LLAMA_FTYPE_MOSTLY_Q5_K_M",
    "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M",
    "q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0",
}
FLOAT_TYPES = ("f32", "f16", "bf16")
ALL_TYPES = FLOAT_TYPES + tuple(QUANT_FTYPES)
# bytes per weight, for free-space estimates (blocks include their scales)
BYTES_PER_WEIGHT = {
    "f32": 4.0,
    "f16": 2.0,
    "bf16": 2.0,
    "q8_0": 34 / 32,
    "q6_k": 210 / 256,
    "q5_k_m": 176 / 256,
    "q4_k_m": 144 / 256,
    "q4_0": 18 / 32,
}


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

    if qtype not in QUANT_FTYPES:
        raise ConvertError(f"unknown quant type '{qtype}' (valid: {', '.join(QUANT_FTYPES)})")
    if not Path(src).is_file():
        raise ConvertError("no such GGUF to quantize", where=str(src))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANT_FTYPES[qtype])
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
