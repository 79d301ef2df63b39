"""The one place that loads a base model (train, merge, eval): hub id, local HF folder or .gguf file.

A .gguf base is dequantized once into a cache folder (``$MEDKIT_CACHE/dequantized/<sha>/``, default
``~/.cache/medkit``) and from then on loaded like any HF folder, so 4-bit bitsandbytes loading works too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medkit import network
from medkit.errors import ModelError
from medkit.formats.files import cache_root

network.block_hub_code()  # bitsandbytes and transformers look for hub kernels: never here (MEDKIT_HUB_KERNELS=1)

DONE_MARKER = "medkit-dequantized.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

Kind = Literal["hub", "local", "gguf"]


@dataclass(frozen=True)
class BaseSpec:
    """What a recipe's ``base`` names: a hub id, a local HF folder or a .gguf file."""

    spec: str
    kind: Kind
    path: Path | None = None  # the folder or file for "local" / "gguf"

    @property
    def is_gguf(self) -> bool:
        return self.kind == "gguf"

    @property
    def is_local(self) -> bool:
        return self.kind in ("local", "gguf")


def resolve_base(spec: str | os.PathLike[str]) -> BaseSpec:
    """Tell what ``spec`` is; a path that should exist but does not raises ModelError."""
    text = os.fspath(spec).strip()
    if not text:
        raise ModelError("empty base model name")
    path = Path(text).expanduser()
    if text.lower().endswith(".gguf"):
        if not path.is_file():
            raise ModelError(f"GGUF base not found: {path}")
        return BaseSpec(text, "gguf", path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"not a Hugging Face model folder (no config.json): {path}")
        return BaseSpec(text, "local", path.resolve())
    if path.exists():
        raise ModelError(
            f"unsupported model file: {path}", hint="give a Hugging Face folder, a hub id or a .gguf file"
        )
    looks_like_path = text.startswith((".", "/", "~")) or os.sep in text.strip("/").replace("/", "", 1)
    if looks_like_path or not _HUB_ID.match(text):
        raise ModelError(f"model folder not found: {path}")
    return BaseSpec(text, "hub")


@contextlib.contextmanager
def hub_offline(active: bool = True) -> Iterator[None]:
    """Hub libraries in offline mode while a local model or data file is read (``active``), restored after.

    A local load needs no request, yet `datasets` sends one to count loads of its packaged builders, and
    any other request the libraries try raises instead of reaching out. Only modules already imported are
    switched (their flags are read per call); environment variables and hub-id loads are left alone.
    """
    if not active:
        yield
        return
    import sys

    from huggingface_hub import constants

    flags = [(constants, "HF_HUB_OFFLINE", True)]
    if "datasets" in sys.modules:
        from datasets import config

        flags += [(config, "HF_HUB_OFFLINE", True), (config, "HF_UPDATE_DOWNLOAD_COUNTS", False)]
    saved = [(mod, name, getattr(mod, name)) for mod, name, _ in flags]
    for mod, name, value in flags:
        setattr(mod, name, value)
    try:
        yield
    finally:
        for mod, name, value in saved:
            setattr(mod, name, value)


def _as_base(spec: str | os.PathLike[str] | BaseSpec) -> BaseSpec:
    return spec if isinstance(spec, BaseSpec) else resolve_base(spec)


def loadable(spec: str | os.PathLike[str] | BaseSpec) -> str:
    """What to hand ``from_pretrained``: the hub id, the folder, or the dequantized cache of a GGUF."""
    base = _as_base(spec)
    if base.kind == "hub":
        return base.spec
    assert base.path is not None
    if base.kind == "gguf":
        return str(ensure_dequantized(base.path))
    return str(base.path)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
WEIGHT_GLOBS = ("*.safetensors", "pytorch_model*.bin", "*.safetensors.index.json")


def load_tokenizer(spec: str | os.PathLike[str] | BaseSpec, *, chat_template: str | None = None):
    """The one loader of a base's tokenizer: AutoTokenizer for a hub id or folder. A .gguf base is read
    from its dequantized folder when there is one, else from the GGUF itself once, then from a tokenizer
    cache (``$MEDKIT_CACHE/tokenizers/<sha>``), so no model is dequantized for its tokenizer.
    ``chat_template`` (jinja text or a file) replaces the model's own."""
    from transformers import AutoTokenizer

    base = _as_base(spec)
    if base.is_gguf and base.path is not None and not (dequantized_dir(base.path) / "config.json").is_file():
        tok = _gguf_tokenizer(base.path)
    else:
        where = loadable(base)
        if base.kind == "local" and not any((Path(where) / n).is_file() for n in TOKENIZER_FILES):
            raise ModelError(f"no tokenizer in {where} (expected one of {', '.join(TOKENIZER_FILES)})")
        try:
            with hub_offline(base.is_local):
                tok = AutoTokenizer.from_pretrained(where)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise ModelError(f"cannot load a tokenizer from {base.spec}: {_first_line(exc)}") from None
    if chat_template:
        tok.chat_template = read_chat_template(chat_template)
    return tok


def _gguf_tokenizer(path: Path):
    """The tokenizer inside a GGUF, converted once and cached as a whole folder (or not at all)."""
    from transformers import AutoTokenizer

    cached = cache_root() / "tokenizers" / file_sha256(path)[:24]
    try:
        with hub_offline():
            if (cached / "tokenizer_config.json").is_file():
                return AutoTokenizer.from_pretrained(str(cached))
            tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot read the tokenizer of {path}: {_first_line(exc)}") from None
    cached.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{cached.name}.", suffix=".partial", dir=cached.parent)
    try:
        tok.save_pretrained(tmp)
        os.replace(tmp, cached)
    except OSError:  # another process won the race, or the cache is read-only: the tokenizer still works
        shutil.rmtree(tmp, ignore_errors=True)
    return tok


def read_chat_template(template: str) -> str:
    """Jinja text as is, or the text of the file it names."""
    if "{{" in template or "{%" in template:
        return template
    path = Path(template).expanduser()
    if not path.is_file():
        raise ModelError(f"chat template file not found: {path}")
    return path.read_text()


def load_model(
    spec: str | os.PathLike[str] | BaseSpec,
    *,
    dtype: Any = "auto",
    device_map: Any = None,
    quantization_config: Any = None,
    trust_remote_code: bool = False,
):
    """AutoModelForCausalLM for ``spec`` (same call for hub ids, folders and dequantized GGUFs)."""
    from transformers import AutoModelForCausalLM

    base = _as_base(spec)
    where = loadable(base)
    if base.kind == "local" and not any(any(Path(where).glob(g)) for g in WEIGHT_GLOBS):
        raise ModelError(f"no model weights (*.safetensors or pytorch_model.bin) in {where}")
    kwargs: dict[str, Any] = {"dtype": _dtype(dtype), "trust_remote_code": trust_remote_code}
    if device_map is not None:
        kwargs["device_map"] = device_map
    if quantization_config is not None:
        kwargs["quantization_config"] = quantization_config
    try:
        with hub_offline(base.is_local):
            return AutoModelForCausalLM.from_pretrained(where, **kwargs)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"cannot load model {base.spec}: {_first_line(exc)}") from None


def _dtype(dtype: Any) -> Any:
    if isinstance(dtype, str) and dtype != "auto":
        import torch

        aliases = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "half": "float16"}
        name = aliases.get(dtype, dtype)
        value = getattr(torch, name, None)
        if not isinstance(value, torch.dtype):
            raise ModelError(f"unknown dtype {dtype!r}")
        return value
    return dtype


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def file_sha256(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def _memo_sha(path: Path) -> str:
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA_MEMO:
        _SHA_MEMO[key] = file_sha256(path)
    return _SHA_MEMO[key]


def same_base(a: str | None, b: str | None) -> bool:
    """Whether two recorded base models are one model: the same spec (a hub id, a path), or two local copies
    of it, as a `package:` base resolves to a file inside each environment's site-packages: files with the
    same sha256, HF folders with the same config.json and the same weight files (names and sizes)."""
    if a is None or b is None:
        return False
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.is_file() and pb.is_file():
        return pa.stat().st_size == pb.stat().st_size and _memo_sha(pa.resolve()) == _memo_sha(pb.resolve())
    if pa.is_dir() and pb.is_dir():

        def shape(d: Path) -> tuple[bytes, list[tuple[str, int]]]:
            config = d / "config.json"
            weights = sorted(
                (f.name, f.stat().st_size) for f in d.iterdir() if f.suffix in (".safetensors", ".bin")
            )
            return (config.read_bytes() if config.is_file() else b""), weights

        return shape(pa) == shape(pb) and bool(shape(pa)[1])
    return False


def dequantized_dir(gguf_path: str | os.PathLike[str]) -> Path:
    """Where the dequantized HF folder of this GGUF lives in the cache (keyed by the file's sha256)."""
    return cache_root() / "dequantized" / _memo_sha(Path(gguf_path).resolve())[:24]


def ensure_dequantized(gguf_path: str | os.PathLike[str]) -> Path:
    """The cached HF folder for ``gguf_path``, built once (under a lock, atomically) if missing."""
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise ModelError(f"GGUF base not found: {gguf_path}")
    target = dequantized_dir(gguf_path)
    if (target / DONE_MARKER).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{target.name}.lock"):
        if (target / DONE_MARKER).is_file():  # another process built it while we waited
            return target
        if target.exists():  # an incomplete folder from an older crash
            shutil.rmtree(target, ignore_errors=True)
        return dequantize_gguf_to_hf(gguf_path, target)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "a+") as fh:
        try:
            import fcntl
        except ImportError:  # Windows: no lock, the atomic rename still keeps the folder whole
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _unpacked() -> dict[str, Any]:
    """Ask for plain dequantized weights where transformers can keep GGUF blocks packed (5.x)."""
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers always dequantize
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def check_gguf(path: Path) -> int:
    """Check the GGUF magic and version (cheap; the full parse is left to the loader)."""
    with open(path, "rb") as fh:
        head = fh.read(24)
    if head[:4] != b"GGUF":
        raise ModelError(f"not a GGUF file (bad magic): {path}")
    if len(head) < 24:
        raise ModelError(f"corrupt GGUF (truncated header): {path}")
    version = int.from_bytes(head[4:8], "little")
    if version not in (2, 3):
        raise ModelError(f"unsupported GGUF version {version}: {path}")
    return version


def _check_same_logits(src: Any, folder: Path, tok: Any, gguf_path: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    ids = tok("The patient has a fever of 38.5 C and a dry cough.", return_tensors="pt").input_ids
    reloaded = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    with torch.no_grad():
        diff = (reloaded(input_ids=ids).logits - src(input_ids=ids).logits).abs().max().item()
    if not diff <= 1e-4:
        raise ModelError(
            f"dequantized copy of {gguf_path} does not reproduce its logits (max diff {diff:.2e})"
        )


def _make_readable(folder: Path) -> None:
    """mkdtemp makes 0700 folders; give the cache the usual umask-based modes instead."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for item in folder.iterdir():
        item.chmod(0o666 & ~umask)


def dequantize_gguf_to_hf(gguf_path: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> Path:
    """Write a plain HF folder (float32 safetensors, config, tokenizer, chat template) from a GGUF.

    transformers dequantizes the GGUF (``gguf_file=``) but a model loaded that way can be marked as
    gguf-quantized and refuse ``save_pretrained``; so its weights are moved into a fresh model built
    from the same config (on the meta device: no random init). The written folder is reloaded and
    must give the GGUF-loaded model's logits before it is renamed into place.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_path = Path(gguf_path).expanduser()
    out_dir = Path(out_dir).expanduser()
    if not gguf_path.is_file():
        raise ModelError(f"GGUF file not found: {gguf_path}")
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ModelError(f"output folder is not empty: {out_dir}")
    check_gguf(gguf_path)
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        with hub_offline():
            tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
            src = AutoModelForCausalLM.from_pretrained(
                folder, gguf_file=name, dtype=torch.float32, **_unpacked()
            )
    except Exception as exc:  # corrupt, truncated, or an arch/tokenizer transformers cannot map
        raise ModelError(f"cannot read GGUF {gguf_path}: {_first_line(exc)}") from None

    config = src.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    with torch.device("meta"):  # no random init: every weight comes from the GGUF
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(src.state_dict(), strict=False, assign=True)
    model.tie_weights()
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if missing or unexpected or left:
        raise ModelError(
            f"GGUF {gguf_path} does not map onto {config.model_type}: "
            f"missing {(missing or left)[:3]}, unexpected {unexpected[:3]}"
        )
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id if tok.bos_token_id is not None else config.bos_token_id,
        eos_token_id=tok.eos_token_id if tok.eos_token_id is not None else config.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".partial", dir=out_dir.parent))
    try:
        model.save_pretrained(str(tmp))
        tok.save_pretrained(str(tmp))
        _check_same_logits(src, tmp, tok, gguf_path)
        marker = {"source": str(gguf_path), "size": gguf_path.stat().st_size, "dtype": "float32"}
        (tmp / DONE_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
        _make_readable(tmp)
        if out_dir.exists():
            out_dir.rmdir()  # empty (checked above)
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir
