"""The importance matrix in memory and in llama.cpp's imatrix GGUF, and handed to llama.cpp's quantizer.

    write_imatrix(im, run.export / IMATRIX_FILE)     # llama.cpp's imatrix GGUF (llama-quantize --imatrix)
    im = read_imatrix(path); check_fits(im, model_gguf)
    keep = attach(params, im, overrides)             # fills llama_model_quantize_params (keep `keep` alive)

File layout (llama.cpp tools/imatrix): general.type = "imatrix"; imatrix.datasets (string array),
imatrix.chunk_count and imatrix.chunk_size (uint32); per weight `<name>.in_sum2` (F32, ne = {in, 1}: the
sum of x^2 per column) and `<name>.counts` (F32, ne = {1, 1}: tokens seen). The quantizer reads sum/count.
"""

from __future__ import annotations

import ctypes
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medkit.errors import ConvertError

SUM2, COUNTS = ".in_sum2", ".counts"

IMATRIX_FILE = "imatrix.gguf"


@dataclass
class IMatrix:
    """Per GGUF weight name: the sum of squared inputs per column, and how many tokens were summed."""

    sums: dict[str, np.ndarray]
    counts: dict[str, float]
    datasets: list[str] = field(default_factory=list)
    chunk_count: int = 0
    chunk_size: int = 0
    arch: str = ""
    seconds: float = 0.0
    tokens: int = 0
    metadata: dict[str, str] = field(default_factory=dict)  # extra string keys (medkit.* provenance)
    grams: Any = None  # X^T X per weight (collect(grams=...)), a gram_store.GramStore or a layerwise.Recompute: not in the file
    seqs: list[list[int]] | None = (
        None  # the calibration token ids, when computed here (GPTQ reads them again)
    )
    path: str | None = None  # the file it was read from (named in every mismatch line)
    flops: float = 0.0  # matmul FLOPs the pass ran (forward and Gram sums), for its MFU; 0 when unknown
    mfu: str = ""  # the pass's FLOPs, FLOP/s and MFU in words (medkit.train.flops.mfu_line)

    def means(self) -> dict[str, np.ndarray]:
        """What the quantizer weighs columns by: mean x^2 (1.0 where a tensor saw no token, as llama.cpp)."""
        out = {}
        for name, s in self.sums.items():
            n = self.counts.get(name, 0.0)
            out[name] = (s / n if n > 0 else np.ones_like(s)).astype(np.float32)
        return out


def record_in_run(source: Any, record: dict[str, Any]) -> None:
    """Store what an export quantized with in its run's run.json: under ``imatrix`` when it wrote into the
    run's own export/, else under ``imatrix_elsewhere`` keyed by the output folder, so an export to another
    folder (--out) never overwrites what export/'s own files were made with."""
    run = source.run
    if Path(source.out_dir).resolve() == Path(run.export).resolve():
        run.update_manifest(imatrix=record)
        return
    elsewhere = dict(run.read_manifest().get("imatrix_elsewhere") or {})
    elsewhere[str(Path(source.out_dir).resolve())] = record
    run.update_manifest(imatrix_elsewhere=elsewhere)


def write_imatrix(im: IMatrix, path: Path) -> Path:
    """Write ``im`` as llama.cpp's imatrix GGUF at ``path`` (under a temp name, renamed when complete)."""
    import gguf

    from medkit.formats.files import atomic_path

    if not im.sums:
        raise ConvertError("the importance matrix has no tensors", where=str(path))
    with atomic_path(Path(path)) as tmp:
        w = gguf.GGUFWriter(str(tmp), im.arch)
        w.add_type(gguf.GGUFType.IMATRIX)
        w.add_array(gguf.Keys.IMatrix.DATASETS, im.datasets)
        w.add_uint32(gguf.Keys.IMatrix.CHUNK_COUNT, int(im.chunk_count))
        w.add_uint32(gguf.Keys.IMatrix.CHUNK_SIZE, int(im.chunk_size))
        for key, val in im.metadata.items():
            w.add_string(key, str(val))
        for name in sorted(im.sums):
            w.add_tensor(name + SUM2, im.sums[name].astype(np.float32).reshape(1, -1))
            w.add_tensor(name + COUNTS, np.array([[im.counts[name]]], dtype=np.float32))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return Path(path)


def read_imatrix(path: Path) -> IMatrix:
    """Read an imatrix GGUF (medkit's or llama-imatrix's); anything else is one ConvertError line."""
    import gguf

    if not Path(path).is_file():
        raise ConvertError("no such importance matrix file", where=str(path))
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as exc:  # truncated, not a GGUF, ...
        raise ConvertError(
            f"not a readable imatrix GGUF ({type(exc).__name__}: {exc})", where=str(path)
        ) from None

    def value(key: str) -> Any:
        f = reader.get_field(key)
        return f.contents() if f is not None else None

    keys = (gguf.Keys.IMatrix.DATASETS, gguf.Keys.IMatrix.CHUNK_COUNT, gguf.Keys.IMatrix.CHUNK_SIZE)
    missing = [k for k in keys if value(k) is None]
    if missing:
        raise ConvertError(f"not an imatrix GGUF: no {', '.join(missing)}", where=str(path))
    tensors = {t.name: t for t in reader.tensors}
    im = IMatrix({}, {}, [str(d) for d in value(gguf.Keys.IMatrix.DATASETS)],
                 int(value(gguf.Keys.IMatrix.CHUNK_COUNT)), int(value(gguf.Keys.IMatrix.CHUNK_SIZE)),
                 str(value("general.architecture") or ""), path=str(path))  # fmt: skip
    for key in (k for k in reader.fields if k.startswith("medkit.")):
        if isinstance(value(key), str):
            im.metadata[key] = value(key)
    for tname, t in tensors.items():
        if not tname.endswith(SUM2):
            continue
        name = tname[: -len(SUM2)]
        cnt = tensors.get(name + COUNTS)
        if cnt is None or t.tensor_type != gguf.GGMLQuantizationType.F32 or cnt.tensor_type != t.tensor_type:
            raise ConvertError(f"imatrix entry {name} lacks F32 {SUM2} and {COUNTS} tensors", where=str(path))
        if int(np.prod(cnt.shape)) != 1:
            raise ConvertError(
                f"imatrix entry {name} is per-expert (MoE); medkit reads dense ones", where=str(path)
            )
        im.sums[name] = np.asarray(t.data, dtype=np.float32).reshape(-1).astype(np.float64)
        im.counts[name] = float(np.asarray(cnt.data).reshape(-1)[0])
        if not np.isfinite(im.sums[name]).all() or not math.isfinite(im.counts[name]):
            raise ConvertError(f"imatrix entry {name} holds NaN or infinite values", where=str(path))
    if not im.sums:
        raise ConvertError("the imatrix GGUF holds no tensor importances", where=str(path))
    if not any(s.any() for s in im.sums.values()):  # llama.cpp would weigh every column by 0
        raise ConvertError("the importance matrix is all zeros (no column has any weight)", where=str(path))
    return im


def check_fits(im: IMatrix, model_gguf: Path, where: str | None = None) -> None:
    """Every imatrix entry names a weight of ``model_gguf`` and has its row length, and every weight the
    quantizer weighs by it (the 2-D blk.* and output weights) has an entry; else one ConvertError naming
    the imatrix file."""
    from medkit.formats.gguf_header import tensor_table

    where = where or im.path
    shapes = {name: t.shape for name, t in tensor_table(model_gguf).items()}  # no 5-s vocabulary parse
    for name, s in sorted(im.sums.items()):
        if name not in shapes:
            raise ConvertError(f"the importance matrix names {name}, which the model does not have "
                               "(made for another model?)", where=where)  # fmt: skip
        if shapes[name][0] != s.size:
            raise ConvertError(f"the importance of {name} has {s.size} values; the model's rows have "
                               f"{shapes[name][0]} (made for another model?)", where=where)  # fmt: skip
    weighed = sorted(
        n for n, s in shapes.items()
        if len(s) == 2 and n.endswith(".weight") and (n.startswith("blk.") or n == "output.weight")
    )  # fmt: skip
    missing = [n for n in weighed if n not in im.sums]
    if missing:
        raise ConvertError(f"the importance matrix covers {len(weighed) - len(missing)} of the model's "
                           f"{len(weighed)} quantized weights; missing {', '.join(missing[:3])}"
                           + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
                           + " (made for another model?)", where=where)  # fmt: skip


def source_record(hf_dir: Path) -> dict[str, str]:
    """The medkit.imatrix.source key of an imatrix summed on ``hf_dir`` (none for a model without safetensors)."""
    from medkit.convert.gguf.fingerprint import IMATRIX_SOURCE_KEY, model_fingerprint

    found = model_fingerprint(hf_dir)
    return {IMATRIX_SOURCE_KEY: found} if found else {}


def check_source(im: IMatrix, hf_dir: Path) -> None:
    """The model an imatrix was summed on (medkit.imatrix.source, when recorded) is ``hf_dir``."""
    from medkit.convert.gguf.fingerprint import IMATRIX_SOURCE_KEY, model_fingerprint

    recorded = im.metadata.get(IMATRIX_SOURCE_KEY)
    current = model_fingerprint(hf_dir) if recorded else None
    if recorded and current and recorded != current:
        raise ConvertError(
            f"the importance matrix was computed on another model than {hf_dir} "
            f"(its {IMATRIX_SOURCE_KEY} {recorded[:16]}, the model's {current[:16]})",
            where=im.path,
            hint="use the model's own (--imatrix auto) or compute one for it",
        )


def attach(
    params: Any, im: IMatrix | None, overrides: dict[str, str] | None = None, kv: dict[str, Any] | None = None
) -> list[Any]:
    """Point llama_model_quantize_params at ``im`` (imatrix), per-tensor ``overrides`` ({regex: ggml type
    name}: tt_overrides) and ``kv`` metadata (kv_overrides: str, int, float or bool values).
    Returns what must stay alive until the quantizer returns (the arrays the params point into)."""
    import gguf
    import llama_cpp

    keep: list[Any] = []
    if im is not None:
        means = im.means()
        arr = (llama_cpp.llama_model_imatrix_data * (len(means) + 1))()
        for i, (name, m) in enumerate(sorted(means.items())):
            buf = np.ascontiguousarray(m, dtype=np.float32)
            keep += [buf, name.encode()]
            arr[i].name, arr[i].size = keep[-1], buf.size
            arr[i].data = buf.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        params.imatrix = arr  # the last entry stays zeroed: the terminator (name NULL)
        keep.append(arr)
    if overrides:
        tt = (llama_cpp.llama_model_tensor_override * (len(overrides) + 1))()
        for i, (pattern, ggml) in enumerate(overrides.items()):
            keep.append(pattern.encode())
            tt[i].pattern, tt[i].type = keep[-1], int(gguf.GGMLQuantizationType[ggml.upper()])
        params.tt_overrides = tt
        keep.append(tt)
    if kv:
        arr_kv = (llama_cpp.llama_model_kv_override * (len(kv) + 1))()
        for i, (key, val) in enumerate(kv.items()):
            arr_kv[i].key = key.encode()[:127]
            if isinstance(val, bool):
                arr_kv[i].tag, arr_kv[i].value.val_bool = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_BOOL, val
            elif isinstance(val, int):
                arr_kv[i].tag, arr_kv[i].value.val_i64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_INT, val
            elif isinstance(val, float):
                arr_kv[i].tag, arr_kv[i].value.val_f64 = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_FLOAT, val
            else:
                arr_kv[i].tag = llama_cpp.LLAMA_KV_OVERRIDE_TYPE_STR
                arr_kv[i].value.val_str = str(val).encode()[:127]
        params.kv_overrides = arr_kv
        keep.append(arr_kv)
    return keep
