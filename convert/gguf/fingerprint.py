"""Which model a file was made for: a fingerprint of a HF folder's weights, recorded in what medkit writes.

    medkit.base.id             in every model GGUF medkit's writer makes (the shared base of `medkit export
                               --base` too, kept by the quantizer): the fingerprint of its HF folder
    medkit.adapter.base_id     in an adapter GGUF (`--adapter-only`): the base it was trained on
    medkit.imatrix.source      in imatrix.gguf: the model whose activations it summed

The first two are the names the runtime compares (medkit.formats.gguf_header: MODEL_ID_KEY and
ADAPTER_BASE_ID_KEY); they are spelled again here because a convert module writes what the runtime
reads and the ground must not import a stage.

A reader compares two of these strings when both are known (an adapter over another base with equal
shapes, an importance matrix of another model whose names and row lengths happen to fit).

The fingerprint is ``st1:`` and the sha256 (hex) over the HF folder's safetensors tensors, sorted by name:
each one's name, dtype, shape and its first and last 4 KiB of bytes. Reading 8 KiB a tensor keeps it cheap
for an 8B model (under 3 MiB read), and two models of equal shapes but other weights differ in every
sampled byte. The same weights saved in another dtype are another fingerprint (another file).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

MODEL_KEY = "medkit.base.id"
BASE_KEY = "medkit.adapter.base_id"
IMATRIX_SOURCE_KEY = "medkit.imatrix.source"
_SAMPLE = 4096


def model_fingerprint(hf_dir: str | Path) -> str | None:
    """The fingerprint of a HF model folder's safetensors weights; None when it holds none (a .bin model, a
    GGUF file): nothing is recorded and nothing compared."""
    from medkit.convert.gguf.safetensors_io import read_header
    from medkit.errors import ConvertError

    folder = Path(hf_dir)
    files = sorted(folder.glob("*.safetensors")) if folder.is_dir() else []
    if not files:
        return None
    digest = hashlib.sha256()
    for f in files:  # shards in name order, tensors in name order within each
        try:
            tensors = read_header(f)
        except ConvertError:  # a dtype the GGUF writer does not read: the export says so, in its own line
            return None
        with open(f, "rb") as fh:
            for name in sorted(tensors):
                t = tensors[name]
                digest.update(f"{name}\0{t.dtype}\0{','.join(map(str, t.shape))}\0".encode())
                for start in sorted({t.start, max(t.start, t.end - _SAMPLE)}):
                    fh.seek(start)
                    digest.update(fh.read(min(_SAMPLE, t.end - start)))
    return "st1:" + digest.hexdigest()


def gguf_fingerprint(path: str | Path, key: str = MODEL_KEY) -> str | None:
    """The fingerprint a GGUF records under ``key`` (None: not recorded)."""
    from medkit.formats.gguf_header import read_gguf_info

    value = read_gguf_info(path, what="GGUF").meta.get(key)
    return value if isinstance(value, str) and value else None


def base_fingerprint(base: str | Path) -> str | None:
    """The fingerprint of an adapter's base: a HF folder's weights, or what a base GGUF records."""
    base = Path(base)
    if base.is_file() and base.suffix.lower() == ".gguf":
        return gguf_fingerprint(base)
    return model_fingerprint(base)
