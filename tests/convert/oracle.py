"""llama.cpp's own converter (convert_hf_to_gguf.py of the installed llama-cpp-python's sdist) as an oracle,
and a field-by-field comparison of two GGUF files: tensor names, shapes, types and values, and metadata.

The converter is fetched once by pip into ~/.cache/medkit/oracle (benchmarks/scale_bench.py does the
fetching); a test that needs it is skipped with the reason when it cannot be had offline.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

ORACLE_ROOT = Path.home() / ".cache" / "medkit" / "oracle"
# keys only one side writes: medkit's provenance and names, keys llama.cpp derives when absent
MEDKIT_ONLY = ("general.", "medkit.", "{arch}.vocab_size", "tokenizer.ggml.eot_token_id")
ORACLE_ONLY = ("tokenizer.ggml.pre",)


def llama_cpp_convert(hf: Path, out: Path, outtype: str) -> Path | str:
    """Run llama.cpp's converter on ``hf``; the GGUF path, or a line saying why it could not run."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from benchmarks.scale_bench import llama_cpp_converter

    found = llama_cpp_converter(ORACLE_ROOT)
    if isinstance(found, str):
        return found
    script, gguf_py = found
    run = ("import runpy, sys; sys.path[:0] = [sys.argv[1], sys.argv[2]]; sys.argv = sys.argv[3:]; "
           "runpy.run_path(sys.argv[0], run_name='__main__')")  # fmt: skip
    cmd = [sys.executable, "-c", run, str(gguf_py), str(script.parent), str(script), str(hf),
           "--outtype", outtype, "--outfile", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        return "convert_hf_to_gguf.py failed: " + (proc.stderr.strip().splitlines() or ["?"])[-1]
    return out


def _value(field: Any) -> Any:
    import gguf

    if field.types and field.types[0] == gguf.GGUFValueType.ARRAY:
        sub = field.types[-1]
        items = [field.parts[i] for i in field.data]
        if sub == gguf.GGUFValueType.STRING:
            return [bytes(p).decode("utf-8") for p in items]
        return [p.tolist()[0] for p in items]
    part = field.parts[field.data[0]]
    return bytes(part).decode("utf-8") if field.types[0] == gguf.GGUFValueType.STRING else part.tolist()[0]


def gguf_contents(path: Path) -> tuple[dict[str, Any], dict[str, tuple[int, tuple[int, ...], np.ndarray]]]:
    """(metadata key -> value, tensor name -> (type, shape, raw data)) of a GGUF file."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    meta = {k: _value(f) for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {
        t.name: (int(t.tensor_type), tuple(int(x) for x in t.shape), np.array(t.data)) for t in reader.tensors
    }
    return meta, tensors


def _show(v: Any) -> Any:
    return f"{v[:8]}... ({len(v)})" if isinstance(v, list) and len(v) > 8 else v


def differences(ours: Path, theirs: Path, arch: str) -> list[str]:
    """Every difference between medkit's GGUF and llama.cpp's converter's, one line each (empty: identical)."""
    meta_a, ten_a = gguf_contents(ours)
    meta_b, ten_b = gguf_contents(theirs)
    only_a = tuple(k.format(arch=arch) for k in MEDKIT_ONLY)
    out = []
    for key in sorted(set(meta_a) | set(meta_b)):
        if key.startswith("general.") or key not in meta_b and key.startswith(only_a):
            continue  # names and provenance; keys llama.cpp derives when absent
        if key not in meta_a and key.startswith(ORACLE_ONLY):
            continue
        a, b = meta_a.get(key, "<absent>"), meta_b.get(key, "<absent>")
        if a != b and not (isinstance(a, float) and isinstance(b, float) and np.isclose(a, b, rtol=1e-6)):
            out.append(f"metadata {key}: medkit {_show(a)} vs llama.cpp {_show(b)}")
    for name in sorted(set(ten_a) | set(ten_b)):
        if name not in ten_a or name not in ten_b:
            out.append(f"tensor {name}: only in {'medkit' if name in ten_a else 'llama.cpp'}")
            continue
        (ta, sa, da), (tb, sb, db) = ten_a[name], ten_b[name]
        if (ta, sa) != (tb, sb):
            out.append(f"tensor {name}: type/shape {ta} {sa} vs {tb} {sb}")
        elif not np.array_equal(da, db):
            out.append(
                f"tensor {name}: values differ (max {float(np.abs(da.astype(np.float64) - db).max()):.3g})"
            )
    return out
