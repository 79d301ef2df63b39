"""`medkit merge` tensor by tensor: W + scale * B @ A for each base weight read from the memory-mapped
safetensors, written straight into the merged safetensors file, so a 7B merge holds one tensor, not the model.

    why = stream_reason(base_dir, adapter_dir)       # None: this merge streams; else why PEFT's merge is used
    n = merge_streaming(base_dir, adapter_dir, out_dir, "bfloat16")

It streams a plain LoRA adapter (PEFT's LORA type: lora_A/lora_B per Linear or Conv1D weight, one rank and
alpha for all, rsLoRA or not, fan_in_fan_out or not) into a local safetensors base, merged in float32 (as
PEFT merges on a CPU) and stored in the target dtype. DoRA, per-module ranks, embedding LoRA, modules_to_save
and pickle or 4-bit bases take PEFT's merge (medkit.convert.adapter.merge), which loads the model.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from medkit.convert.gguf.safetensors_io import DTYPES
from medkit.errors import ConvertError

PREFIX = "base_model.model."
ST_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}
ITEMSIZE = {code: np.dtype(DTYPES[code]).itemsize for code in ("F32", "F16", "BF16")}
FLOAT_TYPES = ("F32", "F16", "BF16", "F64")
OUT_FILE = "model.safetensors"


def _adapter_tensors(adapter_dir: Path) -> dict[str, Any]:
    from medkit.convert.gguf.safetensors_io import read_header

    path = adapter_dir / "adapter_model.safetensors"
    return read_header(path) if path.is_file() else {}


def stream_reason(base_dir: Path, adapter_dir: Path) -> str | None:
    """None when this adapter merges into this base tensor by tensor, else why not (PEFT's merge then)."""
    try:
        cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    except (OSError, ValueError):
        return "no readable adapter_config.json"
    if cfg.get("peft_type") != "LORA":
        return f"a {cfg.get('peft_type')} adapter"
    for key in ("use_dora", "rank_pattern", "alpha_pattern", "modules_to_save", "layer_replication"):
        if cfg.get(key):
            return f"the adapter sets {key}"
    if not Path(base_dir).is_dir() or not list(Path(base_dir).glob("*.safetensors")):
        return "the base is not a local safetensors folder"
    names = list(_adapter_tensors(adapter_dir))
    if not names:
        return "the adapter has no adapter_model.safetensors"
    if any(".lora_A." not in n and ".lora_B." not in n for n in names):
        return "the adapter holds tensors other than lora_A/lora_B"
    return None


def _pairs(adapter_dir: Path) -> dict[str, tuple[Any, Any]]:
    """{base weight name: (A entry, B entry)} of the adapter."""
    tensors = _adapter_tensors(adapter_dir)
    out: dict[str, list[Any]] = {}
    for name, entry in tensors.items():
        module, _, rest = name.removeprefix(PREFIX).partition(".lora_")
        side = rest.split(".")[0]  # "A" or "B"
        out.setdefault(module + ".weight", [None, None])["AB".index(side)] = entry
    bad = next((n for n, (a, b) in out.items() if a is None or b is None), None)
    if bad:
        raise ConvertError(f"the adapter has only one of lora_A/lora_B for {bad}", where=str(adapter_dir))
    return {n: (a, b) for n, (a, b) in out.items()}


def _header(entries: dict[str, tuple[str, tuple[int, ...]]]) -> tuple[bytes, list[tuple[str, int]]]:
    """The safetensors header of {name: (dtype, shape)} in order, and each tensor's byte count."""
    meta: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    at, sizes = 0, []
    for name, (dtype, shape) in entries.items():
        n = ITEMSIZE[dtype] * math.prod(shape)
        meta[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [at, at + n]}
        sizes.append((name, n))
        at += n
    raw = json.dumps(meta, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    return len(raw).to_bytes(8, "little") + raw, sizes


def merge_streaming(base_dir: Path, adapter_dir: Path, out_dir: Path, dtype: str) -> int:
    """Write ``out_dir``/model.safetensors (every base tensor, LoRA-merged where the adapter has one, float
    ones in ``dtype``) and the base's config.json with that dtype; returns how many weights were merged."""
    import torch

    from medkit.convert.gguf.safetensors_io import read_tensor
    from medkit.convert.gguf.writer import WeightReader

    cfg = json.loads((adapter_dir / "adapter_config.json").read_text())
    r, alpha = int(cfg["r"]), float(cfg.get("lora_alpha", cfg["r"]))
    scale = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    fan_in_fan_out = bool(cfg.get("fan_in_fan_out"))
    reader = WeightReader(Path(base_dir))
    pairs = _pairs(adapter_dir)
    missing = next((n for n in pairs if n not in reader.entries), None)
    if missing:
        raise ConvertError(
            f"the adapter targets {missing}, which the base does not have", where=str(adapter_dir)
        )
    target = ST_DTYPES[dtype]
    layout = {}
    for name, e in reader.entries.items():
        layout[name] = (target if e.dtype in FLOAT_TYPES else e.dtype, tuple(e.shape))
    unknown = next((n for n, (d, _) in layout.items() if d not in ITEMSIZE), None)
    if unknown:
        raise ConvertError(
            f"cannot stream tensor {unknown} of type {layout[unknown][0]}", where=str(base_dir)
        )
    head, sizes = _header(layout)
    torch_dtype = getattr(torch, dtype)  # "float32" | "float16" | "bfloat16", the keys of ST_DTYPES
    merged = 0
    with open(out_dir / OUT_FILE, "wb") as f:
        f.write(head)
        for name, n in sizes:
            w = torch.from_numpy(np.array(reader.get(name), dtype=np.float32))
            if name in pairs:
                a, b = (torch.from_numpy(np.array(read_tensor(e), dtype=np.float32)) for e in pairs[name])
                delta = b @ a
                w += scale * (delta.T if fan_in_fan_out else delta)
                merged += 1
            data = w.to(torch_dtype).contiguous().view(torch.uint8).numpy()
            if data.nbytes != n:
                raise ConvertError(
                    f"tensor {name} came out {data.nbytes} bytes, not {n}", where=str(base_dir)
                )
            f.write(data.tobytes())
            del w, data
    config = json.loads((Path(base_dir) / "config.json").read_text())
    config.pop("torch_dtype", None)
    config["dtype"] = dtype
    (out_dir / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if (Path(base_dir) / "generation_config.json").is_file():
        shutil.copyfile(Path(base_dir) / "generation_config.json", out_dir / "generation_config.json")
    return merged
