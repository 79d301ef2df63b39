"""`medkit export`: a run (or any HF folder) -> GGUF files of the asked types, verified, with provenance.

    medkit export --gguf q4_0                       # latest run -> runs/<name>/export/<name>-q4_0.gguf
    medkit export runs/x --gguf f16,q8_0,q4_k_m     # several types from one f16 intermediate
    medkit export path/to/hf_folder --gguf f16      # -> path/to/<folder>-gguf/<folder>-f16.gguf
    medkit export --gguf q4_0 --adapter-only        # GGUF LoRA adapter of the run -> export/adapter.gguf
    medkit export --gguf q4_0 --base                # the run's base as GGUF, once: runs/_bases/

Float types are written by medkit.convert.gguf_writer; quantized ones by llama.cpp's quantizer from
an f16 intermediate (the f16 output itself when asked for, else a temp file removed afterwards).

A run's export/merged/ is reused only while it records the hash of the run's adapter/ (else it is merged
again), and every GGUF records that hash. One export writes into a folder at a time, and first removes
what a killed export left there (medkit.provenance.export_session).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from medkit.errors import ConvertError
from medkit.provenance import export_session


@dataclass
class Source:
    hf_dir: Path
    out_dir: Path
    name: str
    run: Any = None  # medkit.runs.RunDir when exporting a run
    metadata: dict[str, Any] = field(default_factory=dict)


def provenance(run: Any) -> dict[str, Any]:
    """medkit.* GGUF metadata from a run's run.json and recipe.toml."""
    from medkit import __version__

    meta: dict[str, Any] = {"medkit.version": __version__, "medkit.run": run.name}
    manifest = run.read_manifest()
    if run.recipe.is_file():
        meta["medkit.recipe.sha256"] = hashlib.sha256(run.recipe.read_bytes()).hexdigest()
    meta["medkit.recipe.name"] = str(manifest.get("name") or run.name)
    data = manifest.get("data") if isinstance(manifest.get("data"), dict) else {}
    found = {
        "medkit.recipe.fingerprint": manifest.get("recipe_fingerprint"),
        "medkit.base_model": manifest.get("base_model"),
        "medkit.data.fingerprint": data.get("fingerprint"),
        "medkit.data.template": data.get("template"),
    }
    meta.update({k: str(v) for k, v in found.items() if v})
    return meta


def resolve_source(spec: str | None, out: Path | None, log: Callable[[str], Any] = print) -> Source:
    from medkit import __version__
    from medkit.runs import RunDir, find_run

    if spec is not None and _is_hf_folder(spec):
        folder = Path(spec)
        out_dir = out or folder.parent / f"{folder.name}-gguf"
        return Source(folder, out_dir, folder.name, metadata={"medkit.version": __version__})
    from medkit.provenance import merge_stale_reason

    run: RunDir = find_run(spec)
    if not run.merged.is_dir() or merge_stale_reason(run.merged, run.adapter):
        try:
            from medkit.convert.merge import merge_run
        except ImportError as exc:
            raise ConvertError(
                f"run has no up-to-date merged model and merge is unavailable ({exc})", where=str(run.path)
            ) from exc
        merge_run(run, log=log)  # says why it merges again
    if not (run.merged / "config.json").is_file():
        raise ConvertError("merged model folder has no config.json", where=str(run.merged))
    return Source(run.merged, out or run.export, run.name, run=run, metadata=provenance(run))


def export(
    source: Source,
    types: list[str],
    *,
    force: bool = False,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
    threads: int | None = None,
    log: Any = print,
    imatrix: Any = None,
    gptq: bool = False,
) -> tuple[dict[str, Path], dict[str, float]]:
    """Write every asked type, quantized ones weighed by ``imatrix`` (medkit.convert.imatrix_file.IMatrix, or
    a function computing it, called once the outputs, disk space, model and size budgets have been
    checked), their codes rounded by GPTQ when ``gptq`` and the imatrix holds its calibration data
    (medkit.convert.gptq); returns ({type: path}, {stage: seconds})."""
    with export_session(source.out_dir, log):
        return _export(source, types, force, allow_pickle, trust_remote_code, threads, log, imatrix, gptq)


def _export(
    source: Source,
    types: list[str],
    force: bool,
    allow_pickle: bool,
    trust_remote_code: bool,
    threads: int | None,
    log: Any,
    imatrix: Any = None,
    gptq: bool = False,
) -> tuple[dict[str, Path], dict[str, float]]:
    import numpy as np

    from medkit.convert.gguf_writer import WeightReader, read_config, write_gguf
    from medkit.convert.quantize import BY_NAME, FLOAT_TYPES, QUANT_SOURCES, is_auto, quantize
    from medkit.runs import check_free_space

    outputs = {t: source.out_dir / f"{source.name}-{t.replace(':', '-')}.gguf" for t in types}
    existing = [p for p in outputs.values() if p.exists()]
    if existing and not force:
        from medkit.provenance import stale_reason

        stale = "it was made from an older adapter" if stale_reason(existing[0]) else None
        raise ConvertError("already exists (use --force to overwrite)", where=str(existing[0]), hint=stale)
    # a bad folder fails here, in one line, before anything is written
    read_config(source.hf_dir, trust_remote_code=trust_remote_code)
    reader = WeightReader(source.hf_dir, allow_pickle=allow_pickle)
    n_weights = sum(int(np.prod(reader.shape(k), dtype=np.int64)) for k in reader.names())
    need_tmp = any(t not in FLOAT_TYPES for t in types) and not set(QUANT_SOURCES) & set(types)
    per_weight = sum(BY_NAME[t].bytes_per_weight or 2.0 if t in BY_NAME else 1.0 for t in types)
    per_weight += 2.0 if need_tmp else 0.0
    needed = per_weight * n_weights
    check_free_space(source.out_dir, int(needed) + 32 * 2**20, what=f"{len(types)} GGUF file(s)")
    timings: dict[str, float] = {}
    kw: dict[str, Any] = dict(name=source.name, metadata=source.metadata, allow_pickle=allow_pickle)
    for t in (t for t in types if t in FLOAT_TYPES):
        res = write_gguf(source.hf_dir, outputs[t], t, trust_remote_code=trust_remote_code, **kw)
        timings[t] = res.seconds
        log(f"wrote {outputs[t]} ({res.arch}, {res.n_tensors} tensors) in {res.seconds:.1f}s")
        if res.not_exported:
            log(f"note: the text model only: {res.not_exported} vision-tower tensors are not exported")
    quants = [t for t in types if t not in FLOAT_TYPES]
    if quants:
        # quantize from the f16 (or f32) output when one is asked for, else from a temporary f16
        own = next((outputs[t] for t in QUANT_SOURCES if t in outputs), None)
        inter = own or source.out_dir / f".{source.name}-f16.intermediate.gguf"
        try:
            if own is None:
                res = write_gguf(source.hf_dir, inter, "f16", trust_remote_code=trust_remote_code, **kw)
                timings["f16 (intermediate)"] = res.seconds
            if any(is_auto(t) for t in quants):  # a budget too small: one line before any quant is written
                from medkit.convert.quant_mix import check_budgets

                check_budgets(inter, [t for t in quants if is_auto(t)])
            if callable(imatrix):  # computed only now: every cheap check above has passed
                imatrix = imatrix()
                if imatrix is not None:
                    timings["imatrix"] = imatrix.seconds
            calibrated: dict[str, Any] = {"medkit.imatrix": imatrix is not None}
            if imatrix is not None:
                calibrated["medkit.imatrix.dataset"] = "; ".join(imatrix.datasets)[:120]
            from medkit.convert.gptq import rounds
            from medkit.convert.quant_mix import export_auto

            post = _refiner(source, imatrix, inter, log) if gptq and any(map(rounds, quants)) else None
            cache: dict[str, Any] = {"types": quants}  # auto:SIZE types share one measurement
            for t in quants:
                if is_auto(t):
                    auto_kw = dict(imatrix=imatrix, threads=threads, log=log, post=post)
                    timings[t] = export_auto(source.run, inter, outputs[t], t, cache, **auto_kw)
                    continue
                mine = post if rounds(t) else None  # q8_0: no codes to choose, nor a GPTQ label
                meta = {**calibrated, **({"medkit.gptq": True} if mine is not None else {})}
                q = quantize(inter, outputs[t], t, threads=threads, imatrix=imatrix, metadata=meta, post=mine)
                timings[t] = q.seconds
                note = (
                    f"; {q.fallbacks}/{q.n_tensors} tensors in a fallback type (row size)"
                    if q.fallbacks
                    else ""
                )
                how = (
                    " (calibrated"
                    + (
                        f", GPTQ codes in {q.refined.tensors} tensors"
                        if q.refined and q.refined.tensors
                        else ""
                    )
                    + ")"
                )
                log(f"wrote {outputs[t]} in {q.seconds:.1f}s{note}{how if imatrix else ''}")
        finally:
            if own is None:
                inter.unlink(missing_ok=True)
            if hasattr(getattr(imatrix, "grams", None), "remove"):  # the layer loop's Gram store on disk
                imatrix.grams.remove()
    return outputs, timings


def _refiner(source: Source, imatrix: Any, f16: Path, log: Any) -> Any:
    """The GPTQ pass for each quantized file, when the imatrix came with its calibration data."""
    from medkit.convert.gptq import refiner

    if imatrix is None or not imatrix.seqs:
        if imatrix is not None:
            log("note: no GPTQ codes: an imatrix file carries no calibration data (llama.cpp's rounding)")
        return None
    return refiner(source.hf_dir, imatrix.seqs, f16, grams=imatrix.grams, log=log)


def _types_help() -> str:
    from medkit.convert.quantize import EXPORT_TYPES
    from medkit.recipe import ExportSection

    default = ",".join(ExportSection().gguf)
    return (
        f"Comma list of {', '.join(EXPORT_TYPES)}, or auto:SIZE (auto:90MB, auto:4.5bpw: per-tensor types "
        f"chosen by measured KL to fit SIZE) [default: a run's recipe export.gguf, else {default}]."
    )


def _is_hf_folder(spec: str | None) -> bool:
    return spec is not None and Path(spec).is_dir() and (Path(spec) / "config.json").is_file()


def recipe_defaults(spec: str | None) -> tuple[Any, Path | None]:
    """The [export] defaults (gguf, verify, modelfile) of what SOURCE names: a run's recipe.toml, else
    the schema's defaults (an HF folder has no recipe). Returns (ExportSection, the recipe it came from)."""
    from medkit.recipe import ExportSection, load_section
    from medkit.runs import find_run

    if _is_hf_folder(spec):
        return ExportSection(), None
    recipe = find_run(spec).recipe
    return (load_section(recipe, "export"), recipe) if recipe.is_file() else (ExportSection(), None)


@click.command(name="export")
@click.argument("source", required=False)
@click.option("--gguf", "types_spec", default=None, help=_types_help())
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    help="Output folder (default: RUN/export/, or <folder>-gguf/ next to a HF folder).",
)
@click.option("--adapter-only", is_flag=True, help="Write the run's LoRA adapter as a GGUF adapter only.")
@click.option(
    "--base", is_flag=True, help="Write the run's base model as GGUF once (runs/_bases/), for adapters."
)
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option(
    "--verify/--no-verify",
    default=None,
    help="Check the GGUFs against transformers [default: the recipe's export.verify, else on].",
)
@click.option(
    "--modelfile/--no-modelfile",
    default=None,
    help="Write an Ollama Modelfile [default: the recipe's export.modelfile, else on].",
)
@click.option(
    "--imatrix",
    "imatrix_mode",
    default=None,
    help="Importance matrix for quantized types: auto (a run's train split), none, or an imatrix GGUF "
    "[default: the recipe's export.imatrix, else auto].",
)
@click.option(
    "--calib",
    type=click.Path(path_type=Path),
    default=None,
    help="Calibration texts for a HF folder (JSONL with text/messages, or plain text).",
)
@click.option(
    "--gptq/--no-gptq",
    default=None,
    help="Round the quantized codes by GPTQ on the calibration data [default: the recipe's export.gptq, else on].",
)
@click.option("--allow-pickle", is_flag=True, help="Also read pytorch_model*.bin (pickle) weights.")
@click.option("--trust-remote-code", is_flag=True, help="Allow a model that declares custom code.")
@click.option("--threads", type=int, default=None, help="Threads for quantization and checks.")
def command(
    source: str | None,
    types_spec: str | None,
    out: Path | None,
    adapter_only: bool,
    base: bool,
    force: bool,
    verify: bool | None,
    modelfile: bool | None,
    imatrix_mode: str | None,
    calib: Path | None,
    gptq: bool | None,
    allow_pickle: bool,
    trust_remote_code: bool,
    threads: int | None,
) -> None:
    """Write GGUF files from a run (default: the latest) or a HF folder, then check them against transformers.

    A run's recipe.toml ([export] gguf, verify, modelfile) gives the defaults; a flag given here wins.
    """
    from medkit.convert import imatrix
    from medkit.convert.quantize import parse_types

    if adapter_only:
        from medkit.convert.shared_base import export_adapter

        export_adapter(source, out, force)
        return
    if types_spec is not None:
        parse_types(types_spec)  # a mistyped --gguf fails before the run's recipe is read
    defaults, recipe = recipe_defaults(source)
    types = parse_types(types_spec if types_spec is not None else defaults.gguf)
    if types_spec is None and recipe is not None:
        click.echo(f"types {','.join(types)} from {recipe} (export.gguf; --gguf overrides)")
    if base:
        from medkit.convert.shared_base import export_base

        export_base(source, out, types, force, threads)
        return
    mode = imatrix_mode or defaults.imatrix
    imatrix.check_needed(types, mode, calib, is_run=not _is_hf_folder(source), gptq=gptq)
    src = resolve_source(source, out, log=click.echo)
    t0 = time.perf_counter()
    use_gptq = defaults.gptq if gptq is None else gptq
    # a given file (or none) is read now, so a bad one fails before anything is written; one computed from
    # the data waits until export has checked what is cheap to check (existing outputs, space, budgets)
    im: Any = functools.partial(
        imatrix.for_export, src, types, mode, calib, force=force, log=click.echo, gptq=use_gptq
    )
    im = im if mode == "auto" else im()
    outputs, timings = export(
        src,
        types,
        force=force,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        threads=threads,
        log=click.echo,
        imatrix=im,
        gptq=use_gptq,
    )
    click.echo(
        f"export took {time.perf_counter() - t0:.1f}s: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in timings.items())
    )
    if defaults.modelfile if modelfile is None else modelfile:
        from medkit.convert.modelfile import write_for_export

        write_for_export(
            src.hf_dir, src.out_dir, outputs[types[0]], src.run.recipe if src.run else None, click.echo
        )
    if defaults.verify if verify is None else verify:
        _verify(src, outputs, types, trust_remote_code, threads or 2)


def _verify(
    src: Source, outputs: dict[str, Path], types: list[str], trust_remote_code: bool, threads: int
) -> None:
    import importlib.util
    from dataclasses import asdict

    from medkit.convert.verify import held_out_texts, report, verify

    if importlib.util.find_spec("transformers") is None or importlib.util.find_spec("torch") is None:
        click.echo("note: parity check skipped (needs torch + transformers: pip install 'medkit[train]')")
        return
    results = verify(
        [outputs[t] for t in types],
        src.hf_dir,
        texts=held_out_texts(src.run.path if src.run else None),
        trust_remote_code=trust_remote_code,
        threads=threads,
    )
    if src.run is not None:  # stored before a failure is raised, so run.json says what failed
        parity = dict(src.run.read_manifest().get("parity") or {})
        # keyed by type (auto:SIZE by its spec); an export to another folder (--out) by folder/type, so a
        # plain twin written beside the run does not replace what export/'s own files measured
        where = {
            t: t
            if outputs[t].parent.resolve() == src.run.export.resolve()
            else f"{outputs[t].parent.name}/{t}"
            for t in types
        }
        parity.update({where[t]: asdict(r) for t, r in zip(types, results, strict=True)})
        src.run.update_manifest(parity=parity)
    report(results)
