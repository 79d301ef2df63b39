"""A run's LoRA adapter merged into its base, saved as an HF folder (safetensors); `medkit merge` is
medkit.convert.adapter.merge_cli.

    medkit merge                         # latest run -> runs/<name>/export/merged/
    medkit merge runs/x --report         # + val perplexity of each merge choice, stored in run.json
    medkit merge runs/x --from-4bit      # merge into the NF4-dequantized base the adapter was trained on

By default the base is reloaded in full precision (never a dequantized 4-bit copy), the adapter is
merged in float32 on CPU (the base's 16-bit dtype on CUDA) and the result is saved in the recipe's dtype
('auto': the base's own). Tokenizer files and the chat template (tokenizer_config.json and
chat_template.jinja) are carried over byte for byte. The folder appears whole or not at all.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkit.errors import ConvertError, DiskSpaceError, MedkitError

TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
    "added_tokens.json", "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
)  # fmt: skip
DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class Quant:
    """The 4-bit settings the adapter was trained against (the recipe's [quant] section)."""

    mode: str = "nf4"
    double_quant: bool = True
    compute_dtype: str = "auto"


def _torch_dtype(name: str) -> Any:
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def save_dtype(dtype: str, base_dir: Path) -> str:
    """The dtype of the merged weights: the recipe's, or for 'auto' the base's own (bfloat16 if unknown)."""
    if dtype in DTYPES:
        return dtype
    cfg = json.loads((base_dir / "config.json").read_text()) if (base_dir / "config.json").is_file() else {}
    own = str(cfg.get("dtype") or cfg.get("torch_dtype") or "")
    return own if own in DTYPES else "bfloat16"


def _compute_dtype(quant: Quant) -> str:
    import torch

    if quant.compute_dtype in ("bfloat16", "float16"):
        return quant.compute_dtype
    if torch.cuda.is_available() and not torch.cuda.is_bf16_supported():
        return "float16"
    return "bfloat16"


def _fits_in_ram(base: str, bytes_per_weight: int) -> bool:
    """Whether the base, at ``bytes_per_weight``, fits in half the free RAM (unknown sizes: assume yes)."""
    try:
        import psutil

        from medkit.models import loadable

        folder = Path(loadable(base))
        cfg = json.loads((folder / "config.json").read_text())
        per = {"float32": 4, "bfloat16": 2, "float16": 2}.get(
            str(cfg.get("dtype") or cfg.get("torch_dtype")), 2
        )
        stored = sum(p.stat().st_size for p in folder.glob("*.safetensors"))
        return stored / per * bytes_per_weight < psutil.virtual_memory().available / 2
    except Exception:  # no psutil, a hub id not cached yet...: try float32
        return True


def load_base(base: str, *, dtype: str, from_4bit: bool = False, quant: Quant | None = None) -> Any:
    """The base model ready for merging: full precision (float32 on CPU), or its 4-bit weights dequantized."""
    import torch

    from medkit.models import load_model

    cuda = torch.cuda.is_available()
    if not from_4bit:
        cpu_dtype = "float32" if _fits_in_ram(base, 4) else dtype  # peft still adds B @ A in float32 on CPU
        model = load_model(base, dtype=dtype if cuda else cpu_dtype, device_map="cuda" if cuda else None)
        return model.eval()
    quant = quant or Quant()
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise ConvertError(
            f"--from-4bit needs bitsandbytes ({exc.name} is missing): pip install bitsandbytes"
        ) from None
    try:  # the same load the trainer does, so the same rounding; then back to plain Linear layers
        model = load_4bit(base, quant, dequantize=True)
    except ConvertError as exc:
        raise ConvertError(f"--from-4bit: {exc.message}") from None
    return model.to(torch.float32 if not cuda else _torch_dtype(_compute_dtype(quant))).eval()


def load_4bit(base: str, quant: Quant, *, dequantize: bool = False) -> Any:
    """The base in 4 bits as training loads it (medkit.train.plan.bnb_config), or those weights dequantized to
    plain Linear layers; ConvertError if that fails."""
    import torch

    from medkit.models import load_model
    from medkit.train.plan import bnb_config

    cuda = torch.cuda.is_available()
    compute = _torch_dtype(_compute_dtype(quant))
    config = bnb_config(quant.mode, quant.double_quant, compute)
    try:
        model = load_model(
            base, dtype=compute, quantization_config=config, device_map="cuda" if cuda else "cpu"
        )
        return model.dequantize() if dequantize else model
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        where = "CUDA" if cuda else "CPU (bitsandbytes' CPU kernels)"
        raise ConvertError(f"4-bit {quant.mode} load failed on {where}: {str(exc).splitlines()[0]}") from None


def apply_adapter(model: Any, adapter_dir: Path, *, merge: bool = True) -> Any:
    """``model`` with the PEFT adapter: merged into the weights (default) or as an unmerged PeftModel."""
    from peft import PeftModel

    try:
        peft_model = PeftModel.from_pretrained(model, str(adapter_dir))
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        raise ConvertError(
            f"cannot load the adapter: {str(exc).splitlines()[0]}", where=str(adapter_dir)
        ) from None
    return peft_model.merge_and_unload().eval() if merge else peft_model.eval()


def copy_tokenizer(dest: Path, *sources: Path | None) -> Path | None:
    """Copy the tokenizer files of the first source that has a tokenizer_config.json; make sure the chat
    template is in both tokenizer_config.json and chat_template.jinja. Returns the source used."""
    src = next((s for s in sources if s is not None and (s / "tokenizer_config.json").is_file()), None)
    if src is None:
        return None
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dest / name)
    cfg_path, jinja = dest / "tokenizer_config.json", dest / "chat_template.jinja"
    cfg = json.loads(cfg_path.read_text())
    template = jinja.read_text() if jinja.is_file() else cfg.get("chat_template")
    if isinstance(template, str) and template:
        if not jinja.is_file():
            jinja.write_text(template)
        if cfg.get("chat_template") != template:
            cfg["chat_template"] = template
            cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
    return src


def _replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``, replacing an old one only after the new one is whole."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _disk_full(exc: BaseException) -> bool:
    """ENOSPC/EDQUOT as an OSError, or as safetensors' SafetensorError (Rust's io error, not an OSError)."""
    import errno

    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(exc)
    return type(exc).__name__ == "SafetensorError" and any(
        s in text for s in ("No space left", "StorageFull", "os error 28", "Disk quota")
    )


def _write_failed(exc: BaseException, out: Path, needed: int) -> MedkitError | None:
    """The one-line error for a failed write of the merged folder (None: not a write failure)."""
    if _disk_full(exc):
        free = shutil.disk_usage(out.parent).free
        return DiskSpaceError(
            f"disk full while writing the merged model: need {needed / 2**20:.0f} MiB, "
            f"{free / 2**20:.0f} MiB free in {out.parent}",
            where=str(out),
        )
    if type(exc).__name__ == "SafetensorError":
        return ConvertError(f"cannot write the merged weights: {str(exc).splitlines()[0]}", where=str(out))
    return None


def merge_adapter(
    base_spec: str | Path,
    adapter_dir: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "auto",
    from_4bit: bool = False,
    quant: Quant | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Merge the PEFT adapter in ``adapter_dir`` into ``base_spec`` (hub id, HF folder or .gguf); write
    an HF folder at ``out_dir`` and return it. ConvertError if the adapter does not fit the base."""
    from medkit.convert.adapter.lora import base_info, check_adapter_matches
    from medkit.formats.files import check_free_space
    from medkit.models import loadable
    from medkit.provenance import adapter_hash

    log = log or (lambda _msg: None)
    adapter_dir, out = Path(adapter_dir), Path(out_dir)
    if out.exists() and not force:
        raise ConvertError(f"{out} exists; pass --force to replace it")
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConvertError("no adapter_config.json (not a PEFT adapter folder)", where=str(adapter_dir))
    try:
        base_dir = Path(loadable(str(base_spec)))
    except MedkitError as exc:
        raise ConvertError(f"cannot resolve the base model: {exc.one_line()}") from None
    info = base_info(base_dir if base_dir.is_dir() else str(base_spec))
    check_adapter_matches(adapter_dir, info)
    sha = adapter_hash(adapter_dir)  # before loading: the merge is at most as new as this hash
    target = save_dtype(dtype, base_dir)
    t0 = time.perf_counter()
    from medkit.convert.adapter.merge_stream import merge_streaming, stream_reason

    why = "--from-4bit" if from_4bit else stream_reason(base_dir, adapter_dir)
    if why is None:  # tensor by tensor from the memory-mapped base: one tensor held, not the model
        from medkit.convert.gguf.writer import WeightReader

        n_params = sum(math.prod(e.shape) for e in WeightReader(base_dir).entries.values())
        needed = n_params * _torch_dtype(target).itemsize + (64 << 20)
        check_free_space(out.parent, needed, what=str(out))

        def save(tmp: Path) -> None:
            merge_streaming(base_dir, adapter_dir, tmp, target)

    else:
        model = load_base(str(base_spec), dtype=target, from_4bit=from_4bit, quant=quant)
        n_params = sum(p.numel() for p in model.parameters())
        needed = n_params * _torch_dtype(target).itemsize + (64 << 20)
        check_free_space(out.parent, needed, what=str(out))
        merged = apply_adapter(model, adapter_dir).to(_torch_dtype(target))

        def save(tmp: Path) -> None:
            merged.save_pretrained(str(tmp), safe_serialization=True)

    how = "streamed tensor by tensor" if why is None else f"whole model: {why}"
    log(
        f"merged {adapter_dir} into {base_spec} ({'NF4-dequantized' if from_4bit else 'full-precision'} base, "
        f"{how})"
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        save(tmp)
        used = copy_tokenizer(tmp, adapter_dir, base_dir if base_dir.is_dir() else None)
        if used is None:
            from medkit.models import load_tokenizer

            load_tokenizer(str(base_spec)).save_pretrained(str(tmp))
            copy_tokenizer(tmp, tmp)
        record = {
            "base": str(base_spec), "adapter": str(adapter_dir), "adapter_sha256": sha, "dtype": target, "from_4bit": from_4bit,
            "quant": quant.__dict__ if (from_4bit and quant) else None, "streamed": why is None, "seconds": round(time.perf_counter() - t0, 2),
        }  # fmt: skip
        (tmp / "medkit_merge.json").write_text(json.dumps(record, indent=2) + "\n")
        _replace_dir(tmp, out)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        error = _write_failed(exc, out, needed)
        if error is not None:
            raise error from None
        raise
    return out


def run_settings(run: Any) -> tuple[Any, Quant, bool]:
    """(recipe, 4-bit settings, whether training really used a 4-bit base) of a run."""
    from medkit.recipe import load_recipe

    if not run.recipe.is_file():
        raise ConvertError("no recipe.toml in the run (was it trained with medkit?)", where=str(run.path))
    recipe = load_recipe(run.recipe)
    q = recipe.quant
    quant = Quant(
        mode=q.mode if q.mode != "none" else "nf4", double_quant=q.double_quant, compute_dtype=q.compute_dtype
    )
    trained_4bit = bool(run.read_manifest().get("train", {}).get("quantized", False))
    return recipe, quant, trained_4bit


def merge_run(
    run: Any = None,
    *,
    from_4bit: bool = False,
    out: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """Merge a run's adapter (``run``: RunDir, path or name; default the latest) into its base. The run's
    own export/merged/ is rebuilt without --force when it was merged from another adapter than adapter/."""
    from medkit.provenance import export_session, merge_stale_reason
    from medkit.runs import RunDir, find_run

    run = run if isinstance(run, RunDir) else find_run(run)
    recipe, quant, trained_4bit = run_settings(run)
    log = log or (lambda _msg: None)
    if from_4bit and not trained_4bit:
        log("note: this run trained on an unquantized base; --from-4bit merges into weights it never saw")
    target = Path(out) if out else run.merged
    with export_session(run.export, log) if out is None else contextlib.nullcontext():
        stale = merge_stale_reason(target, run.adapter) if out is None and target.exists() else None
        if stale:
            log(f"note: {stale}; merging again")
        path = merge_adapter(
            recipe.model.base, run.adapter, target, dtype=recipe.model.dtype, from_4bit=from_4bit,
            quant=quant, force=force or bool(stale), log=log,
        )  # fmt: skip
    run.update_manifest(merge={"path": str(path), "from_4bit": from_4bit, "base": recipe.model.base})
    return path
