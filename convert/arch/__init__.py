"""The model-family registry: one module per family in this package, found here, asked by everyone else.

    from medkit.convert import arch
    arch.detect(config)             # the exporting Family of a HF config.json, or one ConvertError line
    arch.by_model_type("mistral")   # Family or None; also by_hf_architecture(), by_gguf_arch(), by_name()
    arch.auto_targets("gpt2")       # LoRA 'auto' targets, for every family medkit trains
    arch.supported()                # names of the families medkit exports (one per module: gemma2, gemma3,
                                    # gpt2, llama, mistral, phi3, qwen2, qwen3 today)

Adding a family = one new module here defining ``FAMILY = Family(...)`` (see base.py for the fields)
plus its tiny fixture in tests/factories.py. ``base`` and ``layout`` are the shared code, not families.
Importing this package imports no numpy, gguf or torch.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

from medkit.convert.arch.base import Dims, Family
from medkit.errors import ConvertError

__all__ = [
    "Dims",
    "Family",
    "auto_targets",
    "by_gguf_arch",
    "by_hf_architecture",
    "by_model_type",
    "by_name",
    "detect",
    "discover",
    "families",
    "gguf_arch_of",
    "supported",
]

NOT_FAMILIES = frozenset({"base", "layout"})  # modules of this package that hold shared code


def discover(package: str, paths: list[str]) -> dict[str, tuple[Family, ...]]:
    """module name -> the families it declares, for every family module of ``package`` at ``paths``."""
    found: dict[str, tuple[Family, ...]] = {}
    for info in sorted(pkgutil.iter_modules(paths), key=lambda m: m.name):
        if info.name in NOT_FAMILIES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        declared = getattr(module, "FAMILIES", None) or (
            (module.FAMILY,) if hasattr(module, "FAMILY") else ()
        )
        if not declared or not all(isinstance(f, Family) for f in declared):
            raise TypeError(f"{module.__name__} declares no FAMILY = Family(...) (or FAMILIES tuple)")
        found[info.name] = tuple(declared)
    _check_unique([f for fams in found.values() for f in fams])
    return found


def _check_unique(all_families: list[Family]) -> None:
    for what in ("name", "hf_architectures", "model_types"):
        seen: dict[str, str] = {}
        for fam in all_families:
            values = getattr(fam, what)
            for value in (values,) if isinstance(values, str) else values:
                if value in seen:
                    raise TypeError(f"{what} {value!r} is declared by both {seen[value]} and {fam.name}")
                seen[value] = fam.name


@functools.cache
def _registry() -> tuple[Family, ...]:
    found = discover(__name__, list(__path__))
    return tuple(sorted((f for fams in found.values() for f in fams), key=lambda f: f.name))


def families() -> tuple[Family, ...]:
    """Every registered family (exported or train-only), sorted by name."""
    return _registry()


def supported() -> list[str]:
    """Names of the families medkit exports to GGUF, sorted."""
    return [f.name for f in _registry() if f.exports]


def by_name(name: str) -> Family | None:
    return next((f for f in _registry() if f.name == name), None)


def by_hf_architecture(name: str) -> Family | None:
    return next((f for f in _registry() if name in f.hf_architectures), None)


def by_model_type(model_type: str | None) -> Family | None:
    return next((f for f in _registry() if model_type in f.model_types), None)


def by_gguf_arch(arch: str | None) -> Family | None:
    """The exporting family a GGUF architecture reads back as (the one named like it first: `llama`
    for a GGUF written from a Mistral checkpoint, whose layout is the same)."""
    matches = [f for f in _registry() if f.gguf_arch is not None and f.gguf_arch == arch]
    return next((f for f in matches if f.name == arch), matches[0] if matches else None)


def gguf_arch_of(model_type: str) -> str:
    """The general.architecture a GGUF of a ``model_type`` checkpoint carries (the type itself if unknown)."""
    fam = by_model_type(model_type)
    return fam.gguf_arch if fam is not None and fam.gguf_arch else model_type


def auto_targets(model_type: str | None) -> list[str] | None:
    """The LoRA 'auto' targets of a model type, or None when medkit does not know the family."""
    fam = by_model_type(model_type)
    return list(fam.lora_targets) if fam is not None else None


def detect(config: Mapping[str, Any], where: str = "config.json") -> Family:
    """The exporting Family of a HF config, or a ConvertError naming the architecture and the supported ones."""
    names = list(config.get("architectures") or [])
    for name in names:
        fam = by_hf_architecture(name)
        if fam is not None and fam.exports:
            return fam
    model_type = config.get("model_type")
    fam = by_model_type(model_type)
    if not names and fam is not None and fam.exports:
        return fam
    found = names[0] if names else (model_type or "unknown")
    raise ConvertError(
        f"unsupported architecture '{found}' (supported: {', '.join(supported())})", where=where
    )
