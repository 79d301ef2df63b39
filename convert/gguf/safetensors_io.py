"""The one safetensors reader of medkit.convert, without torch (the convert extra has none).

The HF -> GGUF writer (model weights) and the LoRA converter (adapter weights) both read here: one dtype
table, one exact bfloat16 widening, one set of checks on a truncated or corrupt file.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medkit.errors import ConvertError

DTYPES = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16, "F64": np.float64}
MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


@dataclass(frozen=True)
class StTensor:
    """Where one tensor lies in a safetensors file (byte offsets from the start of the file)."""

    file: Path
    dtype: str  # the safetensors code: F32, F16, BF16, F64
    shape: tuple[int, ...]
    start: int
    end: int


def read_header(path: Path) -> dict[str, StTensor]:
    """name -> StTensor of every tensor in ``path``, checked against the file's size; ConvertError on a
    corrupt or truncated file or an unsupported dtype."""
    path = Path(path)
    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            if n <= 0 or n > min(size - 8, MAX_HEADER):
                raise ValueError(f"header length {n} does not fit a {size}-byte file")
            header = json.loads(fh.read(n))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ConvertError(
            f"corrupt safetensors header: {exc} (the file is corrupt or truncated)", where=str(path)
        ) from None
    base = 8 + n
    out: dict[str, StTensor] = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (start, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        if dtype not in DTYPES:
            raise ConvertError(f"tensor '{name}' has unsupported dtype {dtype}", where=str(path))
        need = int(np.prod(shape, dtype=np.int64)) * np.dtype(DTYPES[dtype]).itemsize
        if end - start != need or base + end > size:
            raise ConvertError(
                f"truncated or corrupt safetensors: tensor '{name}' needs bytes {base + start}-{base + end}, "
                f"file has {size}",
                where=str(path),
            )
        out[name] = StTensor(path, dtype, shape, base + start, base + end)
    return out


def widen_bf16(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) as float32, exactly: a bfloat16 is the top half of a float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_tensor(t: StTensor) -> np.ndarray:
    """The tensor, memory-mapped: float32, or float16 when stored so (a read-only view); bfloat16 is
    widened exactly to float32 (it is the top half of one), float64 narrowed to float32."""
    count = int(np.prod(t.shape, dtype=np.int64))
    if count == 0:
        return np.zeros(t.shape, dtype=np.float32)
    raw: np.ndarray = np.memmap(t.file, dtype=DTYPES[t.dtype], mode="r", offset=t.start, shape=(count,))
    if t.dtype == "BF16":
        return widen_bf16(raw).reshape(t.shape)
    if t.dtype == "F64":
        return raw.astype(np.float32).reshape(t.shape)
    return raw.reshape(t.shape)
