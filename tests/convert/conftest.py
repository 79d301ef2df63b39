"""Convert fixtures: GGUF exports of the tiny models and of SmolLM2, each written once per session."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

# One thread: on a shared 2-core machine more threads busy-wait and run far slower.
THREADS = int(os.environ.get("MEDKIT_TEST_THREADS", "1"))
QUANTS = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")


def load_llama(path: Path, n_ctx: int = 256, logits_all: bool = False):
    from llama_cpp import Llama

    return Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_threads=THREADS,
        logits_all=logits_all,
        verbose=False,
    )


def copy_with_config(src: Path, dest: Path, **changes) -> Path:
    """A copy of the model folder ``src`` with config.json keys changed (a None value removes the key)."""
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


def assert_export_refused(folder: Path, words: str) -> None:
    """Exporting ``folder`` stops in one line matching ``words`` and leaves no file, finished or partial."""
    from medkit.convert.gguf.writer import write_gguf
    from medkit.errors import ConvertError

    out = folder.parent / "out.gguf"
    with pytest.raises(ConvertError, match=words) as err:
        write_gguf(folder, out, "f16")
    assert "\n" not in err.value.one_line()
    assert not out.exists() and not list(folder.parent.glob(".out.gguf*"))


@pytest.fixture(scope="session")
def tiny_gguf(tiny_model_dir, tmp_path_factory) -> Callable[[str, str], Path]:
    """tiny_gguf(arch, ftype) -> Path of the tiny ``arch`` model exported as ``ftype`` (f32/f16/bf16)."""
    from medkit.convert.gguf.writer import write_gguf

    cache: dict[tuple[str, str], Path] = {}

    def get(arch: str, ftype: str = "f16") -> Path:
        if (arch, ftype) not in cache:
            out = tmp_path_factory.mktemp(f"gguf-{arch}") / f"{arch}-{ftype}.gguf"
            cache[arch, ftype] = write_gguf(tiny_model_dir(arch), out, ftype).path
        return cache[arch, ftype]

    return get


@pytest.fixture(scope="session")
def smollm2_f16(smollm2_hf, tmp_path_factory) -> Path:
    """SmolLM2 (the dequantized HF folder) exported once as f16 GGUF."""
    from medkit.convert.gguf.writer import write_gguf

    out = tmp_path_factory.mktemp("smollm2-gguf") / "smollm2-f16.gguf"
    return write_gguf(smollm2_hf, out, "f16", metadata={"medkit.base_model": "SmolLM2-135M-Instruct"}).path


@pytest.fixture(scope="session")
def smollm2_quants(smollm2_f16) -> dict[str, Path]:
    """Every quant type, each made once from the shared f16 export by llama.cpp's quantizer."""
    from medkit.convert.quant.quantize import quantize

    out = {}
    for q in QUANTS:
        out[q] = smollm2_f16.with_name(f"smollm2-{q}.gguf")
        quantize(smollm2_f16, out[q], q, threads=THREADS)
    return out
