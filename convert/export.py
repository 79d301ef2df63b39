"""`medkit export`: a run (or any HF folder) -> GGUF files of the asked types, verified, with provenance.

    medkit export --gguf q4_0                       # latest run -> runs/<name>/export/<name>-q4_0.gguf
    medkit export runs/x --gguf f16,q8_0,q4_k_m     # several types from one f16 intermediate
    medkit export path/to/hf_folder --gguf f16      # -> path/to/<folder>-gguf/<folder>-f16.gguf
    medkit export --adapter-only                    # GGUF LoRA adapter of the run -> export/adapter.gguf
    medkit export --gguf q4_0 --base                # the run's base as GGUF, once: runs/_bases/

Float types are written by medkit.convert.gguf.writer; quantized ones by llama.cpp's quantizer from
an f16 intermediate (the f16 output itself when asked for, else a temp file removed afterwards).

A run's export/merged/ is reused only while it records the hash of the run's adapter/ (else it is merged
again), and every GGUF records that hash. One export writes into a folder at a time, and first removes
what a killed export left there (medkit.provenance.export_session).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    if spec is not None and is_hf_folder(spec):
        folder = Path(spec)
        out_dir = out or folder.parent / f"{folder.name}-gguf"
        return Source(folder, out_dir, folder.name, metadata={"medkit.version": __version__})
    from medkit.provenance import adapter_hash, merge_stale_reason, recorded_merge_hash

    run: RunDir = find_run(spec)
    if recorded_merge_hash(run.merged) and adapter_hash(run.adapter) is None:  # merged from a deleted adapter
        raise ConvertError(
            f"the adapter {run.merged} was merged from is gone (no PEFT adapter in {run.adapter})",
            where=str(run.path),
            hint=f"restore {run.adapter}, or export the merged folder as a HF folder: medkit export {run.merged}",
        )
    if not run.merged.is_dir() or merge_stale_reason(run.merged, run.adapter):
        try:
            from medkit.convert.adapter.merge import merge_run
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
    twins: dict[str, Path] | None = None,
) -> tuple[dict[str, Path], dict[str, float]]:
    """Write every asked type, quantized ones weighed by ``imatrix`` (medkit.convert.quant.imatrix_file.IMatrix, or
    a function computing it, called once the outputs, disk space, model and size budgets have been
    checked), their codes rounded by GPTQ when ``gptq`` and the imatrix holds its calibration data
    (medkit.convert.quant.gptq); returns ({type: path}, {stage: seconds}). ``twins``: a dict filled with the
    plain quantization of each calibrated type (a temporary file the parity check holds it to)."""
    from medkit.convert import memtrace

    with export_session(source.out_dir, log), memtrace.from_env():
        return _export(
            source, types, force, allow_pickle, trust_remote_code, threads, log, imatrix, gptq, twins
        )


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
    twins: dict[str, Path] | None = None,
) -> tuple[dict[str, Path], dict[str, float]]:
    import numpy as np

    from medkit.convert import memtrace
    from medkit.convert.gguf.writer import WeightReader, read_config, write_gguf
    from medkit.convert.quant.quantize import quantize
    from medkit.formats.files import check_free_space
    from medkit.formats.gguf_types import BY_NAME, FLOAT_TYPES, QUANT_SOURCES, is_auto

    outputs = {t: source.out_dir / f"{source.name}-{t.replace(':', '-')}.gguf" for t in types}
    existing = [p for p in outputs.values() if p.exists()]
    if existing and not force:
        from medkit.provenance import stale_reason

        stale = "it was made from an older adapter" if stale_reason(existing[0]) else None
        raise ConvertError("already exists (use --force to overwrite)", where=str(existing[0]), hint=stale)
    # a bad folder fails here, in one line, before anything is written
    config = read_config(source.hf_dir, trust_remote_code=trust_remote_code)
    reader = WeightReader(source.hf_dir, allow_pickle=allow_pickle)
    n_weights = sum(int(np.prod(reader.shape(k), dtype=np.int64)) for k in reader.names())
    need_tmp = any(t not in FLOAT_TYPES for t in types) and not set(QUANT_SOURCES) & set(types)
    per_weight = sum(BY_NAME[t].bytes_per_weight or 2.0 if t in BY_NAME else 1.0 for t in types)
    per_weight += 2.0 if need_tmp else 0.0
    needed = per_weight * n_weights
    what = f"{len(types)} GGUF file(s)"
    from medkit.convert.quant.gptq import rounds

    if gptq and callable(imatrix) and any(map(rounds, (t for t in types if t not in FLOAT_TYPES))):
        from medkit.convert.quant import layerwise, memplan

        store = memplan.plan_calibration(config, 0).store
        # the Gram matrices wait on disk until GPTQ rounds with them, where there is room for them (else the
        # pass runs again for each file: layerwise.Recompute; MEDKIT_GRAMS=disk insists on the disk)
        if layerwise.supports(config) and memplan.grams_on_disk(store, source.out_dir, int(needed)):
            needed += store
            what += " and the calibration's Gram matrices"
    check_free_space(source.out_dir, int(needed) + 32 * 2**20, what=what)
    timings: dict[str, float] = {}
    kw: dict[str, Any] = dict(name=source.name, metadata=source.metadata, allow_pickle=allow_pickle)
    for t in (t for t in types if t in FLOAT_TYPES):
        memtrace.phase(f"write {t}")
        res = write_gguf(source.hf_dir, outputs[t], t, trust_remote_code=trust_remote_code, **kw)
        timings[t] = res.seconds
        log(f"wrote {outputs[t]} ({res.arch}, {res.n_tensors} tensors) in {res.seconds:.1f}s")
        if res.not_exported:
            log(
                f"note: the text model only: {res.not_exported} tensors of the vision/audio towers are not exported"
            )
        for note in res.notes:
            log(f"note: {note}")
    quants = [t for t in types if t not in FLOAT_TYPES]
    if quants:
        # quantize from the f16 (or f32) output when one is asked for, else from a temporary f16
        own = next((outputs[t] for t in QUANT_SOURCES if t in outputs), None)
        inter = own or source.out_dir / f".{source.name}-f16.intermediate.gguf"
        try:
            if own is None:
                memtrace.phase("f16 intermediate")
                res = write_gguf(source.hf_dir, inter, "f16", trust_remote_code=trust_remote_code, **kw)
                timings["f16 (intermediate)"] = res.seconds
            if any(is_auto(t) for t in quants):  # a budget too small: one line before any quant is written
                from medkit.convert.quant.mix import check_budgets

                check_budgets(inter, [t for t in quants if is_auto(t)])
            if callable(imatrix):  # computed only now: every cheap check above has passed
                imatrix = imatrix()
                if imatrix is not None:
                    timings["imatrix"] = imatrix.seconds
            if imatrix is not None:  # another model's: its recorded source, then its coverage (quantize)
                from medkit.convert.quant.imatrix_file import check_source

                check_source(imatrix, source.hf_dir)
            from medkit.convert.quant.mix import export_auto

            post = _refiner(source, imatrix, inter, log) if gptq and any(map(rounds, quants)) else None
            cache: dict[str, Any] = {"types": quants}  # auto:SIZE types share one measurement
            for t in quants:
                if is_auto(t):
                    auto_kw = dict(imatrix=imatrix, threads=threads, log=log, post=post)
                    timings[t] = export_auto(source.run, inter, outputs[t], t, cache, **auto_kw)
                    continue
                memtrace.phase(f"quantize {t}")
                mine = post if rounds(t) else None  # q8_0: no codes to choose, nor a GPTQ label
                weighed = imatrix is not None and rounds(t)  # llama.cpp's q8_0 ignores an imatrix
                meta: dict[str, Any] = {"medkit.imatrix": weighed, **({"medkit.gptq": True} if mine else {})}
                if weighed:
                    meta["medkit.imatrix.dataset"] = "; ".join(imatrix.datasets)[:120]
                try:
                    q = quantize(
                        inter, outputs[t], t, threads=threads, imatrix=imatrix, metadata=meta, post=mine
                    )
                except ConvertError as exc:  # never name the temporary f16, deleted when this line prints
                    if exc.where != str(inter) or own is not None:
                        raise
                    raise ConvertError(exc.message, where=str(outputs[t]), hint=exc.hint) from None
                if twins is not None and weighed and not BY_NAME[t].imatrix:
                    twin = (
                        source.out_dir / f".{source.name}-{t}.plain.intermediate.gguf"
                    )  # an orphan if killed
                    twins[t] = quantize(
                        inter, twin, t, threads=threads, metadata={"medkit.imatrix": False}
                    ).path
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
                log(f"wrote {outputs[t]} in {q.seconds:.1f}s{note}{how if weighed else ''}")
        finally:
            if own is None:
                inter.unlink(missing_ok=True)
            if hasattr(getattr(imatrix, "grams", None), "remove"):  # the layer loop's Gram store on disk
                imatrix.grams.remove()
    return outputs, timings


def _refiner(source: Source, imatrix: Any, f16: Path, log: Any) -> Any:
    """The GPTQ pass for each quantized file, when the imatrix came with its calibration data."""
    from medkit.convert.quant.calibrate import refiner

    if imatrix is None or not imatrix.seqs:
        if imatrix is not None:
            log("note: no GPTQ codes: an imatrix file carries no calibration data (llama.cpp's rounding)")
        return None
    return refiner(source.hf_dir, imatrix.seqs, f16, grams=imatrix.grams, log=log)


def is_hf_folder(spec: str | None) -> bool:
    return spec is not None and Path(spec).is_dir() and (Path(spec) / "config.json").is_file()


def recipe_defaults(spec: str | None) -> tuple[Any, Path | None]:
    """The [export] defaults (gguf, verify, modelfile) of what SOURCE names: a run's recipe.toml, else
    the schema's defaults (an HF folder has no recipe). Returns (ExportSection, the recipe it came from)."""
    from medkit.recipe import ExportSection, load_section
    from medkit.runs import find_run

    if is_hf_folder(spec):
        return ExportSection(), None
    recipe = find_run(spec).recipe
    return (load_section(recipe, "export"), recipe) if recipe.is_file() else (ExportSection(), None)
