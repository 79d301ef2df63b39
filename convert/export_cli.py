"""`medkit export`, the verb: flags and the run's recipe defaults -> medkit.convert.export, then the parity
check (medkit.convert.verify) of what it wrote. A flag that does not apply to what is asked is refused in
one line, never silently ignored (--adapter-only takes no quantization flags; --calib is the text of
--imatrix auto).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

import click

from medkit.convert.export import Source, export, is_hf_folder, recipe_defaults, resolve_source
from medkit.errors import ConvertError


def _types_help() -> str:
    from medkit.formats.gguf_types import EXPORT_TYPES
    from medkit.recipe import ExportSection

    default = ",".join(ExportSection().gguf)
    return (
        f"Comma list of {', '.join(EXPORT_TYPES)}, or auto:SIZE (auto:90MB, auto:4.5bpw: per-tensor types "
        f"chosen by measured KL to fit SIZE) [default: a run's recipe export.gguf, else {default}]."
    )


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
    from medkit.convert.quant import calibrate
    from medkit.formats.gguf_types import parse_types

    flags = {"--gguf": types_spec, "--base": base or None, "--imatrix": imatrix_mode, "--calib": calib}
    if adapter_only:
        from medkit.convert.adapter.shared_base import export_adapter

        more = {
            "--gptq/--no-gptq": gptq,
            "--verify/--no-verify": verify,
            "--modelfile/--no-modelfile": modelfile,
        }
        given = [f for f, v in {**flags, **more}.items() if v is not None]
        if given:
            raise ConvertError(f"{given[0]} does not apply to --adapter-only, which writes the run's LoRA "
                               "adapter as it is (an f32 GGUF adapter, no quantization)")  # fmt: skip
        export_adapter(source, out, force)
        return
    if types_spec is not None:
        parse_types(types_spec)  # a mistyped --gguf fails before the run's recipe is read
    if calib is not None and imatrix_mode not in (None, "auto"):
        raise ConvertError(f"--calib does not apply with --imatrix {imatrix_mode}: it is the text an imatrix "
                           "is computed from (--imatrix auto)")  # fmt: skip
    defaults, recipe = recipe_defaults(source)
    types = parse_types(types_spec if types_spec is not None else defaults.gguf)
    if types_spec is None and recipe is not None:
        click.echo(f"types {','.join(types)} from {recipe} (export.gguf; --gguf overrides)")
    mode = imatrix_mode or defaults.imatrix
    if calib is not None and mode != "auto":
        raise ConvertError(f"--calib does not apply with export.imatrix = {mode} in {recipe}",
                           hint="pass --imatrix auto with --calib")  # fmt: skip
    if base:  # a calibrated shared base: --calib FILE or --imatrix PATH (a bare base has no data of its own)
        from medkit.convert.adapter.shared_base import export_base

        calibrate.check_needed(types, mode, calib, is_run=False, gptq=gptq)
        use = defaults.gptq if gptq is None else gptq
        export_base(source, out, types, force, threads, imatrix_mode=mode, calib=calib, gptq=use)
        return
    calibrate.check_needed(types, mode, calib, is_run=not is_hf_folder(source), gptq=gptq)
    src = resolve_source(source, out, log=click.echo)
    t0 = time.perf_counter()
    use_gptq = defaults.gptq if gptq is None else gptq
    # a given file (or none) is read now, so a bad one fails before anything is written; one computed from
    # the data waits until export has checked what is cheap to check (existing outputs, space, budgets)
    im: Any = functools.partial(
        calibrate.for_export, src, types, mode, calib, force=force, log=click.echo, gptq=use_gptq
    )
    im = im if mode == "auto" else im()
    do_verify = defaults.verify if verify is None else verify
    twins: dict[str, Path] | None = {} if do_verify else None
    try:  # the plain twins (twins) are temporary: removed whatever happens
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
            twins=twins,
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
        if do_verify:
            _verify(src, outputs, types, trust_remote_code, threads or 2, twins or {})
    finally:
        for twin in (twins or {}).values():
            twin.unlink(missing_ok=True)


def _verify(
    src: Source,
    outputs: dict[str, Path],
    types: list[str],
    trust_remote_code: bool,
    threads: int,
    twins: dict[str, Path],
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
        plain={outputs[t]: twin for t, twin in twins.items()},
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
