"""Quantize a float GGUF with llama.cpp's own quantizer (llama_cpp.llama_model_quantize).

K-quants and the rest come from the reference implementation, including its per-tensor choices
(e.g. falling back to another type where a row length is not a multiple of the 256-wide K block).
The types themselves (names, ftypes, blocks, which need an imatrix) are medkit.formats.gguf_types.
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkit.errors import ConvertError, DiskSpaceError
from medkit.formats.gguf_types import BY_FTYPE, BY_NAME, EXPORT_TYPES, ftype_of, lookup


@dataclass
class QuantResult:
    path: Path
    qtype: str
    seconds: float
    fallbacks: int  # tensors llama.cpp wrote in another type (row length not a multiple of the block)
    n_tensors: int
    refined: Any = None  # what ``post`` returned (medkit.convert.quant.gptq.RefineResult)


def quantize(
    src: Path,
    dst: Path,
    qtype: str,
    *,
    threads: int | None = None,
    imatrix: Any = None,
    overrides: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
    copy: bool = False,
    post: Callable[[Path], Any] | None = None,
) -> QuantResult:
    """Quantize float GGUF ``src`` into ``dst`` (written under a temp name, renamed on success), weighing
    columns by ``imatrix`` (medkit.convert.quant.imatrix_file.IMatrix), with per-tensor ``overrides`` ({regex: GGML
    type}) and ``metadata`` added to the file's keys. ``copy``: keep ``src``'s tensors as they are (a
    quantized ``src`` too; llama.cpp's only_copy) and only rewrite the keys, file type ``qtype``.
    ``post(tmp)`` runs on the written file before it is renamed into place (GPTQ codes)."""
    import llama_cpp
    import llama_cpp._logger as lc_log

    from medkit.convert.quant.imatrix_file import attach, check_fits
    from medkit.formats.files import atomic_path

    if lookup(qtype).is_float:
        quants = ", ".join(t for t in EXPORT_TYPES if not BY_NAME[t].is_float)
        raise ConvertError(f"'{qtype}' is a float type, not a quant type (valid: {quants})")
    if not Path(src).is_file():
        raise ConvertError("no such GGUF to quantize", where=str(src))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype_of(qtype)
    params.only_copy = copy
    params.nthread = threads or min(os.cpu_count() or 1, 8)
    if imatrix is None and BY_NAME[qtype].imatrix and not copy:
        raise ConvertError(
            f"{qtype} needs an importance matrix: llama.cpp's i-quants below 4 bits are unusable without one",
            hint="drop --imatrix none for a run, or give --calib FILE or --imatrix PATH",
        )
    if imatrix is not None:
        check_fits(imatrix, Path(src))
    keep = attach(params, imatrix, overrides, metadata)  # noqa: F841 (the params point into it)
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
        refined = post(tmp) if post is not None else None
    log = "".join(lines)
    found = re.search(r"(\d+) of (\d+) tensor\(s\) required fallback", log)
    return QuantResult(
        path=Path(dst),
        qtype=qtype,
        seconds=time.perf_counter() - t0,
        fallbacks=int(found.group(1)) if found else 0,
        n_tensors=int(found.group(2)) if found else 0,
        refined=refined,
    )


def estimate_bytes(src: Path, qtype: str) -> int:
    """About how large quantizing float GGUF ``src`` to ``qtype`` comes out (src size x bytes-per-weight ratio)."""
    from medkit.formats.gguf_header import read_gguf_info

    try:
        ftype = read_gguf_info(src).file_type
        found = BY_FTYPE.get(ftype) if ftype is not None else None
        src_bpw = (found.bytes_per_weight if found else None) or 2.0
    except Exception:  # an unreadable source fails in the quantizer, with its own message
        src_bpw = 2.0
    return int(Path(src).stat().st_size * (lookup(qtype).bytes_per_weight or 2.0) / src_bpw)


def _raise_if_disk_full(src: Path, dst: Path, tmp: Path, qtype: str) -> None:
    """After a failed quantize: DiskSpaceError naming the folder and the space needed when the disk filled."""
    import shutil

    from medkit.formats.files import fmt_bytes

    written = tmp.stat().st_size if tmp.exists() else 0
    free = shutil.disk_usage(dst.parent).free
    needed = estimate_bytes(src, qtype)
    if free + written < needed or free < 2**20:
        raise DiskSpaceError(
            f"disk full while quantizing to {qtype}: need about {fmt_bytes(needed)}, "
            f"{fmt_bytes(free + written)} available in {dst.parent}",
            where=str(dst),
        )
