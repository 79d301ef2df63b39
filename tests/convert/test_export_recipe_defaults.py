"""`medkit export` of a run takes its defaults from the run's recipe.toml [export] (gguf, verify,
modelfile); a flag given on the command line wins. A new case is one row of CASES."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from medkit.cli import cli
from medkit.errors import RecipeError

REPO = Path(__file__).resolve().parents[2]


def _make_run(runs: Path, merged_from: Path, recipe_text: str, name: str = "demo") -> Path:
    """runs/<name> as `medkit train` + `medkit merge` leave it: recipe.toml, run.json, export/merged/."""
    run = runs / name
    shutil.copytree(merged_from, run / "export" / "merged")
    (run / "recipe.toml").write_text(recipe_text)
    (run / "run.json").write_text(json.dumps({"name": name, "base_model": "tiny-qwen2"}))
    return run


def _recipe(export: str) -> str:
    return f'name = "demo"\n[model]\nbase = "org/base"\n[data]\nsource = "org/data"\n{export}'


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MEDKIT_RUNS", str(tmp_path / "runs"))
    return tmp_path / "runs"


# (recipe [export] table, command-line flags, GGUF types written, Modelfile written?, parity stored?)
CASES = [
    pytest.param('[export]\ngguf = ["f16"]\nverify = false\nmodelfile = false\n', [], ["f16"], False, False,
                 id="recipe-types-verify-modelfile"),
    pytest.param('[export]\ngguf = ["f16"]\nverify = false\nmodelfile = false\n', ["--gguf", "f32", "--modelfile"],
                 ["f32"], True, False, id="flags-win"),
    pytest.param('[export]\ngguf = ["f32", "f16"]\nmodelfile = false\n', ["--no-verify"], ["f32", "f16"], False,
                 False, id="recipe-list-no-verify-flag"),
    pytest.param('[export]\ngguf = ["f16"]\nmodelfile = false\n', ["--verify"], ["f16"], False, True,
                 id="recipe-verify-default-on"),
]  # fmt: skip


@pytest.mark.parametrize(("export", "flags", "written", "modelfile", "parity"), CASES)
def test_run_export_follows_its_recipe(runs, tiny_model_dir, export, flags, written, modelfile, parity):
    run = _make_run(runs, tiny_model_dir("qwen2"), _recipe(export))
    res = CliRunner().invoke(cli, ["export", "demo", "--threads", "1", *flags])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert sorted(p.name for p in (run / "export").glob("*.gguf")) == sorted(
        f"demo-{t}.gguf" for t in written
    )
    assert (run / "export" / "Modelfile").is_file() == modelfile
    stored = json.loads((run / "run.json").read_text()).get("parity") or {}
    assert sorted(stored) == (sorted(written) if parity else [])
    assert ("from " in res.output and "recipe.toml" in res.output) == ("--gguf" not in flags)


def test_hf_folder_keeps_the_schema_defaults(runs, tiny_model_dir):
    """An HF folder has no recipe: the defaults are the recipe schema's (q4_0, verify, Modelfile)."""
    from medkit.convert.export import recipe_defaults
    from medkit.recipe import ExportSection

    defaults, recipe = recipe_defaults(str(tiny_model_dir("qwen2")))
    assert recipe is None and defaults == ExportSection()
    assert defaults.gguf == ["q4_0"] and defaults.verify and defaults.modelfile


def test_shipped_tinyllama_recipe_exports_q4_k_m(runs, tiny_model_dir):
    """The reported bug: tinyllama_medquad.toml asks for q4_k_m and `medkit export` wrote q4_0."""
    import gguf

    from medkit.convert.export import recipe_defaults
    from medkit.formats.gguf_types import ftype_of

    text = (REPO / "recipes" / "tinyllama_medquad.toml").read_text()
    run = _make_run(runs, tiny_model_dir("qwen2"), text, name="tinyllama_medquad")
    defaults, recipe = recipe_defaults(None)  # the latest run
    assert defaults.gguf == ["q4_k_m"] and recipe == run / "recipe.toml"
    # --no-verify: the parity check decodes the GGUF with llama.cpp, which is not what this test is about
    res = CliRunner().invoke(cli, ["export", "--no-verify", "--no-modelfile", "--threads", "1"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    written = sorted(p.name for p in (run / "export").glob("*.gguf"))
    assert written == ["tinyllama_medquad-q4_k_m.gguf"]
    reader = gguf.GGUFReader(str(run / "export" / written[0]))
    assert int(reader.get_field("general.file_type").contents()) == ftype_of("q4_k_m")


def test_bad_export_table_in_the_run_recipe_is_one_recipe_error(runs, tiny_model_dir):
    from medkit.convert.export import recipe_defaults

    _make_run(runs, tiny_model_dir("qwen2"), _recipe('[export]\ngguf = ["q4_k_n"]\n'))
    with pytest.raises(RecipeError) as exc:
        recipe_defaults("demo")
    assert "export.gguf: 'q4_k_n' is not one of" in str(exc.value) and "did you mean 'q4_k_m'?" in str(
        exc.value
    )


def test_run_recipe_export_error_at_the_cli(runs, tiny_model_dir):
    from tests.reliability.conftest import assert_one_line_error, run_medkit

    _make_run(runs, tiny_model_dir("qwen2"), _recipe("[export]\nverify = 3\n"))
    out = run_medkit("export", "demo", env={"MEDKIT_RUNS": str(runs)})
    assert_one_line_error(out, "recipe.toml", "export.verify: expected true/false, got int 3")
    assert not list((runs / "demo" / "export").glob("*.gguf"))


def test_every_tomllib_import_has_the_python_310_fallback():
    """Python 3.10 has no tomllib: a module imports it with the tomli fallback, or from medkit.recipe."""
    bare = []
    for path in sorted(REPO.glob("*/**/*.py")):
        if path.parts[len(REPO.parts)] not in ("toolkit", "convert", "tui"):
            continue
        text = path.read_text(encoding="utf-8")
        if re.search(r"^\s*import tomllib\b", text, re.M) and "import tomli as tomllib" not in text:
            bare.append(str(path.relative_to(REPO)))
    assert not bare, f"bare `import tomllib` (no tomli fallback): {bare}"
