"""HF folder (safetensors) -> GGUF f32/f16/bf16, written one tensor at a time with gguf.GGUFWriter.

Tensor infos are planned from the safetensors headers first, then each tensor is memory-mapped,
transformed (Q/K permutation, Conv1D transpose), cast and written before the next one is touched,
so peak memory stays near the largest tensor. Output goes to a temp file renamed on success.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medkit.convert import arch
from medkit.convert.arch.layout import (
    add_hparams,
    block_count,
    computed_tensors,
    plan_tensor,
    tensor_name_map,
)
from medkit.convert.gguf.safetensors_io import StTensor, read_header, read_tensor
from medkit.errors import ConvertError

FLOAT_TYPES = ("f32", "f16", "bf16")


def read_config(folder: Path, *, trust_remote_code: bool = False) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise ConvertError("no config.json: not a Hugging Face model folder", where=str(folder))
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConvertError(f"config.json is not valid JSON: {exc}", where=str(path)) from exc
    if config.get("auto_map") and not trust_remote_code:
        raise ConvertError(
            "the model declares custom code (auto_map); medkit does not run it unless --trust-remote-code",
            where=str(path),
        )
    return config


class WeightReader:
    """Safetensors (or, with allow_pickle, PyTorch .bin) tensors of a HF folder, one at a time."""

    def __init__(self, folder: Path, *, allow_pickle: bool = False):
        self.folder = folder
        self.entries: dict[str, StTensor] = {}
        self._pickled: dict[str, Any] | None = None
        files = sorted(folder.glob("*.safetensors"))
        files = [f for f in files if not f.name.startswith(("adapter_", "."))]
        if files:
            for f in files:
                self.entries.update(read_header(f))
        elif list(folder.glob("pytorch_model*.bin")):
            if not allow_pickle:
                raise ConvertError(
                    "only pickle weights (pytorch_model*.bin) found; medkit reads safetensors only "
                    "unless --allow-pickle",
                    where=str(folder),
                )
            self._load_pickle(sorted(folder.glob("pytorch_model*.bin")))
        else:
            raise ConvertError("no model weights (*.safetensors)", where=str(folder))

    def _load_pickle(self, files: list[Path]) -> None:
        import torch

        self._pickled = {}
        for f in files:
            self._pickled.update(torch.load(f, map_location="cpu", weights_only=True, mmap=True))
        for name, t in self._pickled.items():
            self.entries[name] = StTensor(f, "torch", tuple(t.shape), 0, 0)

    def names(self) -> list[str]:
        return list(self.entries)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name].shape

    def get(self, name: str) -> np.ndarray:
        """The tensor as float32 (or float16 when stored so); bf16 is widened exactly to float32."""
        e = self.entries[name]
        if self._pickled is not None:
            return self._pickled[name].float().numpy()
        return read_tensor(e)  # a read-only view where it can be; the cast to the output type copies it


@dataclass
class _Planned:
    hf_name: str | None  # None: a tensor medkit computes (rope_freqs)
    gguf_name: str
    shape: tuple[int, ...]
    qtype: Any  # gguf.GGMLQuantizationType
    transform: Any = None
    data: np.ndarray | None = None

    @property
    def nbytes(self) -> int:
        n = int(np.prod(self.shape, dtype=np.int64))
        return n * {0: 4, 1: 2, 30: 2}[int(self.qtype)]


@dataclass
class GGUFResult:
    path: Path
    arch: str
    ftype: str
    n_tensors: int
    n_params: int
    seconds: float
    eot_token_id: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    not_exported: int = 0  # tensors of parts medkit does not export (a multimodal model's vision tower)
    notes: list[str] = field(default_factory=list)  # what the export leaves out, one line each


def _fast_writer_class() -> type:
    """gguf.GGUFWriter packing large string/number arrays (the vocabulary) in one go, not item by item."""
    import gguf

    vt = gguf.GGUFValueType
    numeric = {vt.INT32: "<i4", vt.UINT32: "<u4", vt.FLOAT32: "<f4"}

    class FastWriter(gguf.GGUFWriter):
        def _pack_val(self, val: Any, vtype: Any, add_vtype: bool, sub_type: Any = None) -> bytes:
            if vtype != vt.ARRAY or len(val) < 256 or self.endianess != gguf.GGUFEndian.LITTLE:
                return super()._pack_val(val, vtype, add_vtype, sub_type)
            ltype = sub_type if sub_type is not None else vt.get_type(val[0])
            head = (struct.pack("<I", int(vtype)) if add_vtype else b"") + struct.pack(
                "<IQ", int(ltype), len(val)
            )
            if ltype == vt.STRING:
                enc = [v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in val]
                return head + b"".join(struct.pack("<Q", len(b)) + b for b in enc)
            if ltype in numeric:
                return head + np.asarray(val, dtype=numeric[ltype]).tobytes()
            return super()._pack_val(val, vtype, add_vtype, sub_type)

    return FastWriter


def _plan(family: arch.Family, config: dict[str, Any], reader: WeightReader, ftype: str) -> list[_Planned]:
    import gguf

    name_map = tensor_name_map(family, block_count(family, config))
    target = {
        "f32": gguf.GGMLQuantizationType.F32,
        "f16": gguf.GGMLQuantizationType.F16,
        "bf16": gguf.GGMLQuantizationType.BF16,
    }[ftype]
    plan: list[_Planned] = []
    for gguf_name, data in computed_tensors(family, config):  # rope_freqs, LongRoPE factors
        plan.append(_Planned(None, gguf_name, data.shape, gguf.GGMLQuantizationType.F32, data=data))
    for hf_name in reader.names():
        shape = reader.shape(hf_name)
        planned = plan_tensor(family, config, name_map, hf_name, len(shape))
        if planned is None:
            continue
        gguf_name, transform = planned
        if family.conv1d and transform is not None:
            shape = shape[::-1]
        shape = tuple(getattr(transform, "shape_of", tuple)(shape))  # a squeezed conv1d (Qwen3.5)
        # norms, biases and what llama.cpp keeps in float32 (a transform's keep_f32: Qwen3.5's conv1d) stay f32
        f32 = len(shape) < 2 or getattr(transform, "keep_f32", False)
        qtype = gguf.GGMLQuantizationType.F32 if f32 else target
        plan.append(_Planned(hf_name, gguf_name, shape, qtype, transform))
    if not any(p.gguf_name == "token_embd.weight" for p in plan):
        raise ConvertError("no token embedding tensor found in the weights", where=str(reader.folder))
    return plan


def _cast(arr: np.ndarray, qtype: Any) -> np.ndarray:
    import gguf

    if qtype == gguf.GGMLQuantizationType.F32:
        return np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == gguf.GGMLQuantizationType.F16:
        return np.ascontiguousarray(arr, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(arr, dtype=np.float32), qtype)


def write_gguf(
    folder: Path,
    out: Path,
    ftype: str = "f16",
    *,
    name: str | None = None,
    metadata: dict[str, str | int | float] | None = None,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> GGUFResult:
    """Write ``folder`` (a HF causal-LM folder) as an f32/f16/bf16 GGUF at ``out`` (atomically)."""
    import gguf

    from medkit.convert.gguf.vocab import OWN_VOCABS, add_vocab
    from medkit.formats.files import atomic_path, check_free_space
    from medkit.provenance import ADAPTER_KEY, recorded_merge_hash

    if ftype not in FLOAT_TYPES:
        raise ConvertError(f"write_gguf writes {', '.join(FLOAT_TYPES)}, not '{ftype}'")
    t0 = time.perf_counter()
    folder, out = Path(folder), Path(out)
    merged_from = recorded_merge_hash(folder)  # a `medkit merge` folder: the adapter its weights hold
    if merged_from and ADAPTER_KEY not in (metadata or {}):
        metadata = {**(metadata or {}), ADAPTER_KEY: merged_from}
    from medkit.convert.gguf.fingerprint import MODEL_KEY, model_fingerprint

    if MODEL_KEY not in (metadata or {}) and (found := model_fingerprint(folder)):
        metadata = {
            **(metadata or {}),
            MODEL_KEY: found,
        }  # which weights: an adapter's base is compared to it
    config = read_config(folder, trust_remote_code=trust_remote_code)
    family = arch.detect(config, where=str(folder / "config.json"))
    assert family.gguf_arch is not None  # detect() returns exported families only
    reader = WeightReader(folder, allow_pickle=allow_pickle)
    notes: list[str] = []
    if family.with_weights is not None:  # what the config declares and these weights lack
        config, note = family.with_weights(config, reader.names())
        notes += [note] if note else []
    plan = _plan(family, config, reader, ftype)
    embd = next(p for p in plan if p.gguf_name == "token_embd.weight")
    n_vocab = int(embd.shape[0])
    check_free_space(out.parent, sum(p.nbytes for p in plan) + 16 * 2**20, what=out.name)
    from medkit.formats.gguf_types import ftype_of  # the one table of GGUF types and their numbers

    file_type = ftype_of(ftype)
    with atomic_path(out) as tmp:
        writer = _fast_writer_class()(tmp, family.gguf_arch)
        try:
            writer.add_name(name or folder.name)
            writer.add_file_type(int(file_type))
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
            add_hparams(writer, family, config, n_vocab)
            vocab = (OWN_VOCABS[family.vocab] if family.vocab else add_vocab)(writer, folder, n_vocab)
            for key, value in (metadata or {}).items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    writer.add_string(key, str(value))
                elif isinstance(value, int):
                    writer.add_uint64(key, value)
                else:
                    writer.add_float64(key, value)
            for p in plan:
                writer.add_tensor_info(
                    p.gguf_name, p.shape, np.dtype(np.float32), p.nbytes, raw_dtype=p.qtype
                )
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for p, arr in _tensors(plan, reader):
                writer.write_tensor_data(_cast(arr, p.qtype))
        finally:
            writer.close()
    eot = vocab.eot_id
    return GGUFResult(
        path=out,
        arch=family.name,
        ftype=ftype,
        n_tensors=len(plan),
        n_params=sum(int(np.prod(p.shape)) for p in plan),
        seconds=time.perf_counter() - t0,
        eot_token_id=eot,
        metadata=dict(metadata or {}),
        not_exported=sum(1 for n in reader.names() if family.hf_name(n) is None),
        notes=notes,
    )


def _tensors(plan: list[_Planned], reader: WeightReader) -> Iterator[tuple[_Planned, np.ndarray]]:
    for p in plan:
        arr = p.data if p.hf_name is None else reader.get(p.hf_name)
        assert arr is not None
        if p.transform is not None:
            arr = p.transform(arr)
        if tuple(arr.shape) != tuple(p.shape):
            raise ConvertError(f"tensor '{p.hf_name}' has shape {arr.shape}, expected {p.shape}")
        yield p, arr
