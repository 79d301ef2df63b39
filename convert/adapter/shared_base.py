"""Several adapters over one base: the base model as GGUF once, each run's LoRA adapter as its own GGUF.

    medkit export runs/elara_patient --gguf q4_0 --base     # runs/_bases/base-<model>-q4_0.gguf, written once
    medkit export runs/elara_patient --adapter-only         # runs/elara_patient/export/adapter.gguf

llama.cpp (and `medkit chat --adapter`) then serve every audience's adapter over the one base file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from medkit.convert.export import Source, export, provenance
from medkit.errors import ConvertError
from medkit.provenance import export_session


def base_of(run: Any) -> Path:
    """The run's base model as a local HF folder (a GGUF base is dequantized once, a hub id must be cached)."""
    from medkit.models import loadable

    base = run.read_manifest().get("base_model")
    if not base and run.recipe.is_file():
        from medkit.recipe import load_recipe

        base = load_recipe(run.recipe).model.base
    if not base:
        raise ConvertError(
            "cannot tell the run's base model (no base_model in run.json)", where=str(run.path)
        )
    where = Path(loadable(base))
    if not where.is_dir():
        try:
            from huggingface_hub import snapshot_download

            where = Path(snapshot_download(str(base), local_files_only=True))
        except Exception as exc:
            raise ConvertError(
                f"base model '{base}' is not available offline ({type(exc).__name__})"
            ) from exc
    return where


def export_base(
    spec: str | None,
    out: Path | None,
    types: list[str],
    force: bool,
    threads: int | None,
    *,
    imatrix_mode: str = "auto",
    calib: Path | None = None,
    gptq: bool = False,
) -> None:
    """The run's base model as GGUF, written once and shared by every adapter trained on it; quantized
    types calibrated when ``calib`` (texts) or ``imatrix_mode`` (an imatrix GGUF of the base) gives data."""
    import functools

    from medkit.convert.quant.calibrate import for_export
    from medkit.runs import find_run, runs_root

    run = find_run(spec)
    folder = base_of(run)
    name = "base-" + folder.name.replace(" ", "_")
    src = Source(folder, out or runs_root() / "_bases", name, metadata=provenance(run))
    src.metadata = {k: v for k, v in src.metadata.items() if k in ("medkit.version", "medkit.base_model")}
    todo = [t for t in types if force or not (src.out_dir / f"{name}-{t}.gguf").exists()]
    for t in (t for t in types if t not in todo):
        click.echo(f"base GGUF already there, shared: {src.out_dir / f'{name}-{t}.gguf'}")
    if todo:
        im: Any = functools.partial(
            for_export, src, todo, imatrix_mode, calib, force=force, log=click.echo, gptq=gptq
        )
        im = im if imatrix_mode == "auto" else im()  # a given file is read (and checked) before writing
        export(src, todo, force=force, threads=threads, log=click.echo, imatrix=im, gptq=gptq)


def export_adapter(spec: str | None, out: Path | None, force: bool) -> None:
    from medkit.convert.adapter.lora import write_lora_gguf
    from medkit.runs import find_run

    run = find_run(spec)
    if not (run.adapter / "adapter_config.json").is_file():
        raise ConvertError("the run has no PEFT adapter (adapter/adapter_config.json)", where=str(run.path))
    meta = {k: str(v) for k, v in provenance(run).items()}
    target = (out or run.export) / "adapter.gguf"
    with export_session(target.parent, click.echo):
        path = write_lora_gguf(run.adapter, target, base_dir=base_of(run), force=force, metadata=meta)
    click.echo(f"wrote {path}")
