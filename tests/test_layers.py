"""medkit's floors, read from the code: the import graph of every module (ast; imports inside functions
count, `if TYPE_CHECKING:` blocks do not) and the rules README's Layout states.

- no import cycle anywhere;
- the floor (errors, medkit.formats, the family registry medkit.convert.arch, the metric registry
  medkit.eval.metrics + overlap) imports nothing of medkit but the floor;
- medkit.runtime (chat/serve/Runtime, no torch) reaches, directly or not, no torch stage and nothing of
  medkit.tui;
- stages import the floor and earlier stages only (data -> train -> convert -> eval);
- faces (the CLI, the verbs it names, the chat app) are imported by no stage.

`python -m tests.test_layers` prints the graph's numbers and the floors.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]

FLOOR = (
    "medkit.errors",
    "medkit.formats",
    "medkit.convert.arch",
    "medkit.eval.metrics",
    "medkit.eval.overlap",
    "medkit.icd10",  # the pinned ICD-10-CM code table: a fact, read by the metrics and the runtime
)
STAGES = ("medkit.data", "medkit.train", "medkit.convert", "medkit.eval")  # in the data's direction
RUNTIME = "medkit.runtime"
NOT_FROM_RUNTIME = (*STAGES, "medkit.models", "medkit.tui")  # torch stages (models: base loading) and the app
FACES = ("medkit.cli", "medkit.__main__", "medkit.tui")


def _under(module: str, prefixes: tuple[str, ...] | str) -> bool:
    prefixes = (prefixes,) if isinstance(prefixes, str) else prefixes
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def modules() -> dict[str, Path]:
    """Every medkit module -> its file, from pyproject's package map (the one place it is declared)."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs: dict[str, str] = tool["package-dir"]
    found = {}
    for pkg in tool["packages"]:
        top = max((k for k in dirs if _under(pkg, k)), key=len)
        folder = ROOT / dirs[top] / pkg[len(top) :].lstrip(".").replace(".", "/")
        for path in sorted(folder.glob("*.py")):
            found[pkg if path.stem == "__init__" else f"{pkg}.{path.stem}"] = path
    return found


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(tree: ast.AST, in_function: bool = False):
    """(ImportFrom or Import node, inside a function?) for every import outside TYPE_CHECKING blocks."""
    for node in ast.iter_child_nodes(tree):
        if _type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node, in_function
        else:
            inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            yield from _imports(node, inner)


def graph() -> dict[str, dict[str, bool]]:
    """module -> {imported medkit module: imported only inside functions}."""
    mods = modules()
    edges: dict[str, dict[str, bool]] = {}
    for name, path in mods.items():
        package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
        out: dict[str, bool] = {}
        for node, in_function in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    parts = package.split(".")
                    base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            for target in targets:
                while target not in mods and "." in target:  # `import medkit.x.y` names module medkit.x.y
                    target = target.rsplit(".", 1)[0]
                if target in mods and target != name and _under(target, "medkit"):
                    out[target] = out.get(target, True) and in_function
        edges[name] = out
    return edges


def cycles(edges: dict[str, dict[str, bool]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(edges[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def reach(edges: dict[str, dict[str, bool]], start: str) -> dict[str, str]:
    """Every module ``start`` imports, directly or not -> the module that imports it on the way."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        v = todo.pop()
        for w in edges[v]:
            if w not in seen and w != start:
                seen[w] = v
                todo.append(w)
    return seen


def _verb_modules() -> set[str]:
    from medkit.cli import VERBS

    return {verb.target.split(":")[0] for verb in VERBS.values()}


@pytest.fixture(scope="module")
def edges() -> dict[str, dict[str, bool]]:
    return graph()


def test_the_graph_reads_every_module(edges):
    assert {
        "medkit",
        "medkit.formats.gguf_types",
        "medkit.runtime.options",
        "medkit.convert.quant.gptq",
    } <= set(edges)
    assert edges["medkit.convert.quant.imatrix"]["medkit.convert.quant.gptq"] is False  # module level
    assert edges["medkit.convert.quant.calibrate"]["medkit.convert.quant.layerwise"] is True  # in a function


def test_no_import_cycle(edges):
    assert cycles(edges) == []


def test_a_cycle_is_found_inside_functions_too():
    """The checker itself: a cycle closed by an import inside a function is one."""
    edges = {"medkit.a": {"medkit.b": False}, "medkit.b": {"medkit.c": True}, "medkit.c": {"medkit.a": True}}
    assert cycles(edges) == [["medkit.a", "medkit.b", "medkit.c"]]
    assert cycles({"medkit.a": {"medkit.b": True}, "medkit.b": {}}) == []


def test_the_floor_imports_only_the_floor(edges):
    floor = [m for m in edges if _under(m, FLOOR)]
    assert len(floor) >= 10
    above = {(m, t) for m in floor for t in edges[m] if not _under(t, FLOOR)}
    assert above == set(), f"a floor module imports above itself: {sorted(above)}"


def test_the_runtime_reaches_no_torch_stage_and_no_tui(edges):
    bad = []
    for m in (m for m in edges if _under(m, RUNTIME)):
        for target, via in reach(edges, m).items():
            if _under(target, NOT_FROM_RUNTIME):
                bad.append(f"{m} -> {target} (imported by {via})")
    assert bad == []


def test_stages_import_the_floor_and_earlier_stages_only(edges):
    def stage(m: str) -> int | None:
        if _under(m, FLOOR):
            return None
        return next((i for i, s in enumerate(STAGES) if _under(m, s)), None)

    late = []
    for m, targets in edges.items():
        here = stage(m)
        for t in targets:
            there = stage(t)
            if here is not None and there is not None and there > here:
                late.append(f"{m} -> {t}")
    assert late == []


def test_faces_are_imported_by_no_stage(edges):
    """The CLI, each verb module it names and the chat app: only faces import faces (a verb module may
    share an option with another, e.g. validate's --set)."""
    faces = _verb_modules() | {m for m in edges if _under(m, FACES)}
    assert {"medkit.data.verb", "medkit.convert.adapter.merge_cli", "medkit.convert.verify_cli"} <= faces
    wrong = {
        (m, t)
        for m, targets in edges.items()
        if m not in faces and m != "medkit"
        for t in targets
        if t in faces
    }
    assert wrong == set(), f"a stage imports a verb or the app: {sorted(wrong)}"


def readme_map() -> dict[str, tuple[str, str]]:
    """README's Layout table: import -> (folder, the row's text)."""
    text = (ROOT / "README.md").read_text().split("## Layout", 1)[1].lstrip("\n").split("\n\n", 1)[0]
    rows: dict[str, tuple[str, str]] = {}
    current = None
    for line in text.splitlines()[1:]:
        found = re.match(r"    (\S+/)\s+(medkit[\w.]*)\s+(.*)", line)
        if found:
            current = found.group(2)
            rows[current] = (found.group(1), found.group(3))
        elif current is not None and line.startswith("    ") and not re.match(r"    \S", line):
            rows[current] = (rows[current][0], rows[current][1] + " " + line.strip())
        else:
            current = None
    return rows


def test_the_readme_layout_map_is_the_disk():
    """Each package in pyproject has its row, in the folder pyproject maps it to, and the row names each of
    its modules (model families aside)."""
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    rows = readme_map()
    assert set(rows) == set(tool["packages"])
    files = modules()
    for pkg, (folder, text) in rows.items():
        assert (ROOT / folder / "__init__.py") == files[pkg], pkg
        words = set(re.findall(r"\w+", text))
        unnamed = [m for m in files if m.startswith(pkg + ".") and m.count(".") == pkg.count(".") + 1]
        unnamed = [m for m in unnamed if files[m].stem != "__init__" and m.rsplit(".", 1)[1] not in words]
        # a model family's module (FAMILY = Family(...)) is the registry's to list, not the map's
        unnamed = [m for m in unnamed if not re.search(r"^FAMIL(Y|IES)\b", files[m].read_text(), re.M)]
        assert unnamed == [], f"README's Layout row of {pkg} does not name {unnamed}"


def summary() -> str:
    edges = graph()
    n_edges = sum(len(t) for t in edges.values())
    inner = sum(1 for t in edges.values() for f in t.values() if f)
    floor = sorted(m for m in edges if _under(m, FLOOR))
    files = modules()
    convert_flat = sorted(
        m
        for m in edges
        if m.count(".") == 2 and m.startswith("medkit.convert.") and files[m].stem != "__init__"
    )
    lines = [
        f"modules {len(edges)}, internal imports {n_edges} ({inner} only inside functions), cycles {len(cycles(edges))}",
        f"floor ({len(floor)}): {', '.join(floor)}",
        f"runtime reaches: {', '.join(sorted({t for m in edges if _under(m, RUNTIME) for t in reach(edges, m)}))}",
        f"flat convert/ modules ({len(convert_flat)}): {', '.join(m.rsplit('.', 1)[1] for m in convert_flat)}",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary())
