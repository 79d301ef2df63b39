"""The runtime options `medkit chat` and `medkit serve` share: MODEL, --adapter, --gpu-layers, --ctx,
--threads and --constrain, and what they open (the model GGUF of a path, a run or the latest export, its
adapters, the Runtime). The server and the chat app both ask this module; it imports no torch and no TUI.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import click

from medkit.errors import MedkitError


def runtime_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """MODEL and --adapter/--gpu-layers/--ctx/--threads: the one set of runtime options of `medkit chat`
    and `medkit serve` (their values go to open_runtime)."""
    decorators = (
        click.argument("model", required=False),
        click.option(
            "--adapter",
            "adapter_specs",
            multiple=True,
            metavar="NAME=PATH",
            help="A GGUF LoRA adapter (repeat).",
        ),
        click.option(
            "--gpu-layers",
            type=int,
            default=None,
            help="Layers to offload (-1 all; default: all if a GPU backend).",
        ),
        click.option(
            "--ctx",
            type=click.IntRange(min=256),
            default=4096,
            show_default=True,
            help="Context size in tokens.",
        ),
        click.option("--threads", type=int, default=None, help="CPU threads (default: llama.cpp's choice)."),
    )
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def _check_constrain(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    from medkit.runtime.constrain import ConstraintError, parse_spec

    try:
        return parse_spec(value)
    except ConstraintError as exc:
        raise click.BadParameter(exc.message) from None


constrain_option = click.option(
    "--constrain",
    default=None,
    metavar="SPEC",
    callback=_check_constrain,
    help="Answers limited to ICD-10-CM codes: icd10 (every billable code), icd10:J (a prefix), icd10:FILE.",
)


def open_runtime(
    model: str | None,
    adapter_specs: Iterable[str],
    gpu_layers: int | None,
    ctx: int,
    threads: int | None,
    *,
    constrain: str | None = None,
) -> tuple[Path, dict[str, str], Any]:
    """(model path, adapters, Runtime) for the values of runtime_options; the run's adapters come first,
    --adapter NAME=PATH adds or replaces; ``constrain`` is the Runtime's default constraint."""
    from medkit.runtime.engine import Runtime

    path, adapters = resolve_model(model)
    adapters.update(parse_adapters(adapter_specs))
    runtime = Runtime(
        path, adapters=adapters, gpu_layers=gpu_layers, ctx=ctx, threads=threads, constrain=constrain
    )
    return path, adapters, runtime


def parse_adapters(specs: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name.strip() or not path.strip():
            raise click.BadParameter(f"'{spec}': expected NAME=PATH", param_hint="--adapter")
        if name.strip() == "base":
            raise click.BadParameter(
                "'base' is reserved for the model without adapter", param_hint="--adapter"
            )
        out[name.strip()] = path.strip()
    return out


def resolve_model(spec: str | None) -> tuple[Path, dict[str, str]]:
    """A model GGUF from a path, a run directory, or (None) the latest export; plus the run's adapters."""
    from medkit import runs

    if spec is None:
        try:
            model = runs.latest_export()
        except MedkitError as exc:
            raise MedkitError(
                "no model given and no exported GGUF found",
                hint="run `medkit export --gguf q4_0` first, or pass a GGUF: medkit chat model.gguf",
            ) from exc
        found = runs.RunDir(model.parent.parent)
    else:
        p = Path(spec)
        if p.suffix == ".gguf" or p.is_file():
            return p, {}
        found = runs.find_run(spec)
        models = found.model_ggufs()
        if not models:
            raise MedkitError(
                f"run '{found.name}' has no exported GGUF", hint="run `medkit export --gguf q4_0`"
            )
        model = max(models, key=lambda g: g.stat().st_mtime)
    adapters = {re.sub(r"\W+", "-", g.stem): str(g) for g in found.adapter_ggufs()}
    return model, adapters
