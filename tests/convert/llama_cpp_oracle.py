"""llama.cpp's own converter (convert_hf_to_gguf.py from the installed llama-cpp-python's sdist) as the oracle
of a family's export: same tensor names, shapes, types and values, same metadata.

    script = converter()                    # the converter, or pytest.skip when it cannot be had offline
    ref = convert(folder, out, "f32", pre="llama-bpe")
    assert diff(medkit_gguf, ref) == []

The converter recognises a BPE pre-tokenizer by hashing how the real checkpoint's tokenizer encodes a test
string; the tiny tokenizers trained here match no known hash, so ``pre`` (what medkit read from the
tokenizer's own definition) is handed to it: that one key is medkit's on both sides. It runs in a child
process with its own gguf-py, never imported here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

# Keys that are not the model: who wrote it, names, medkit's own provenance.
IGNORED_PREFIXES = ("general.", "medkit.")
# Keys llama.cpp derives when a GGUF lacks them (llama-model.cpp / llama-vocab.cpp). medkit writes some the
# converter leaves out: the end-of-turn id its chat template closes turns with, and add_bos/add_eos as the
# HF tokenizer behaves (llama.cpp's default for `llama-bpe` is to add a BOS the HF tokenizer may not add;
# the tiny-export tests check llama.cpp tokenizes as transformers does).
DERIVED_WHEN_ABSENT = (
    "attention.key_length", "attention.value_length", "tokenizer.ggml.add_space_prefix",
    "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token", "tokenizer.ggml.eot_token_id",
    ".vocab_size",  # the length of tokenizer.ggml.tokens
)  # fmt: skip

_WRAPPER = (
    "import sys, runpy; root, pre = sys.argv[1], sys.argv[2]; sys.path[:0] = [root, root + '/gguf-py']\n"
    "from conversion import base\n"
    "if pre: base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre\n"
    "sys.argv = [root + '/convert_hf_to_gguf.py'] + sys.argv[3:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def _cache() -> Path:
    return Path(os.environ.get("MEDKIT_CACHE") or Path.home() / ".cache" / "medkit") / "oracle"


def converter() -> Path:
    """The folder of llama.cpp's converter (convert_hf_to_gguf.py, conversion/, gguf-py/) of the installed
    llama-cpp-python, extracted once from its sdist (pip download); pytest.skip when it cannot be had."""
    import importlib.metadata

    import pytest

    version = importlib.metadata.version("llama-cpp-python")
    where = _cache() / f"llama.cpp-{version}"
    if (where / "convert_hf_to_gguf.py").is_file() and (where / "conversion").is_dir():
        return where
    sdist = _cache() / "sdist"
    sdist.mkdir(parents=True, exist_ok=True)
    tars = sorted(sdist.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not tars:
        cmd = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-deps",
               "--no-binary", "llama-cpp-python", "-d", str(sdist)]  # fmt: skip
        subprocess.run(cmd, capture_output=True, timeout=900)
        tars = sorted(sdist.glob(f"llama_cpp_python-{version}.tar.gz"))
    if not tars:
        pytest.skip(f"llama-cpp-python {version} sdist (llama.cpp's converter) not available offline")
    top = f"llama_cpp_python-{version}/vendor/llama.cpp/"
    tmp = Path(tempfile.mkdtemp(prefix=".llama.cpp-", dir=_cache()))
    with tarfile.open(tars[0]) as tar:
        keep = (top + "conversion/", top + "gguf-py/")
        members = [
            m for m in tar.getmembers() if m.name == top + "convert_hf_to_gguf.py" or m.name.startswith(keep)
        ]
        tar.extractall(tmp, members=members, filter="data")
    (tmp / top).rename(where)
    return where


def convert(folder: Path, out: Path, outtype: str = "f32", *, pre: str | None = None) -> Path:
    """``folder`` converted by llama.cpp's converter to ``out``; AssertionError with its last lines if it fails."""
    root = converter()
    cmd = [sys.executable, "-c", _WRAPPER, str(root), pre or "", str(folder), "--outtype", outtype,
           "--outfile", str(out)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, "llama.cpp's converter failed: " + "\n".join(done.stderr.splitlines()[-8:])
    return out


def _value(field: Any) -> Any:
    import gguf

    if not field.types:
        return None
    if field.types[0] == gguf.GGUFValueType.ARRAY:
        if field.types[-1] == gguf.GGUFValueType.STRING:
            return [bytes(field.parts[i]).decode("utf-8", "replace") for i in field.data]
        return [float(field.parts[i][0]) for i in field.data]
    if field.types[0] == gguf.GGUFValueType.STRING:
        return bytes(field.parts[-1]).decode("utf-8", "replace")
    return float(field.parts[-1][0])


def metadata(path: Path) -> dict[str, Any]:
    import gguf

    out = {}
    for name, field in gguf.GGUFReader(str(path)).fields.items():
        if name.startswith("GGUF.") or name.startswith(IGNORED_PREFIXES):
            continue
        out[name] = _value(field)
    return out


def diff(ours: Path, theirs: Path, *, ulp: tuple[str, ...] = ()) -> list[str]:
    """Every difference between two GGUFs: tensors (names, shapes, types, values) and metadata (values, and
    keys only one side has, except those llama.cpp derives when absent); [] when they are the same model.
    Tensors named ending with one of ``ulp`` may differ by one float32 rounding step (a value the
    converter computes with torch's float32 exp, which is not always correctly rounded)."""
    import gguf

    problems: list[str] = []
    mine, ref = metadata(ours), metadata(theirs)
    for key in sorted(mine.keys() | ref.keys()):
        if key not in mine or key not in ref:
            if not key.endswith(DERIVED_WHEN_ABSENT):
                problems.append(f"metadata {key}: only in {'medkit' if key in mine else 'llama.cpp'}'s")
        elif mine[key] != ref[key] and not (
            isinstance(mine[key], float) and np.isclose(mine[key], ref[key], rtol=1e-6)
        ):
            problems.append(f"metadata {key}: medkit {str(mine[key])[:80]} != llama.cpp {str(ref[key])[:80]}")
    ta = {t.name: t for t in gguf.GGUFReader(str(ours)).tensors}
    tb = {t.name: t for t in gguf.GGUFReader(str(theirs)).tensors}
    for name in sorted(ta.keys() ^ tb.keys()):
        problems.append(f"tensor {name}: only in {'medkit' if name in ta else 'llama.cpp'}'s")
    for name in sorted(ta.keys() & tb.keys()):
        a, b = ta[name], tb[name]
        if a.tensor_type != b.tensor_type or list(a.shape) != list(b.shape):
            problems.append(
                f"tensor {name}: {a.tensor_type.name}{list(a.shape)} != {b.tensor_type.name}{list(b.shape)}"
            )
        elif name.endswith(ulp) and np.allclose(np.asarray(a.data), np.asarray(b.data), rtol=2.4e-7, atol=0):
            continue
        elif not np.array_equal(np.asarray(a.data), np.asarray(b.data)):
            worst = float(np.abs(np.asarray(a.data, np.float32) - np.asarray(b.data, np.float32)).max())
            problems.append(f"tensor {name}: values differ (max {worst:.3g})")
    return problems
