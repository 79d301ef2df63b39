"""One home per quant type: medkit.formats.gguf_types.QUANT_TYPES, and every user of a type name asks it.

Add a type medkit exports: one row in QUANT_TYPES (exported=True); these tests then cover it in the
recipe schema, `medkit export --gguf` (help and parsing), the quantizer's checks and the file order.
"""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from medkit.errors import ConvertError, RecipeError
from medkit.formats.gguf_types import (
    BY_NAME,
    EXPORT_TYPES,
    FLOAT_TYPES,
    QUANT_SOURCES,
    QUANT_TYPES,
    lookup,
    parse_types,
    precision_rank,
    type_name,
)

REPO = Path(__file__).resolve().parents[3]
# A quantized type name may be written outside the table only as one of these choices (a choice, not a list
# of types): the recipe schema's default export and the offline demo's exports. Everything else asks the table.
ALLOWED_LITERALS = {
    ("toolkit/recipe/schema.py", "q4_0"),
    ("toolkit/demo.py", "q8_0"),
    ("toolkit/demo.py", "q4_k_m"),
    ("toolkit/demo.py", "q4_0"),
}


def test_block_sizes_are_the_gguf_packages():
    import gguf

    for t in QUANT_TYPES:
        if t.ggml is None:  # only a type newer than the installed gguf package may lack its tensor type
            assert not any(m.startswith(t.name.upper()) for m in gguf.GGMLQuantizationType.__members__), t
            continue
        member = gguf.GGMLQuantizationType[t.ggml]
        assert gguf.GGML_QUANT_SIZES[member] == (t.block, t.block_bytes), t.name
        assert t.is_float == (t.ggml in ("F32", "F16", "BF16")), t.name


def test_exported_types_run_from_highest_precision_down():
    sizes = [BY_NAME[t].bytes_per_weight for t in EXPORT_TYPES]
    assert sizes == sorted(sizes, reverse=True)
    assert FLOAT_TYPES == ("f32", "f16", "bf16") and set(QUANT_SOURCES) <= set(FLOAT_TYPES)
    # export computes an importance matrix; the types that cannot do without one are the i-quants below 4 bits
    assert [t for t in EXPORT_TYPES if BY_NAME[t].imatrix] == ["iq3_s", "iq3_xxs", "iq2_xs"]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("q4_0", ["q4_0"]),
        (" Q4_K_M , f16,q4_k_m", ["q4_k_m", "f16"]),
        (["q8_0", "bf16"], ["q8_0", "bf16"]),
    ],
)
def test_parse_types(spec, expected):
    assert parse_types(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("q3_xs", "unknown GGUF type 'q3_xs'"),
        ("q5_1", "medkit does not export GGUF type 'q5_1'"),
        (",", "no GGUF type given"),
    ],
)
def test_parse_types_refuses_with_the_table_s_list(spec, message):
    with pytest.raises(ConvertError) as exc:
        parse_types(spec)
    assert message in str(exc.value) and f"(valid: {', '.join(EXPORT_TYPES)})" in str(exc.value)


def test_quantizer_refuses_a_float_type(tmp_path):
    pytest.importorskip("llama_cpp")
    from medkit.convert.quant.quantize import quantize

    with pytest.raises(ConvertError, match="'f16' is a float type, not a quant type"):
        quantize(tmp_path / "in.gguf", tmp_path / "out.gguf", "f16")


def test_verify_names_every_llama_cpp_type():
    """`medkit verify` printed 'ftype12' for q3_k_m: every row has a name, an unknown number still reads."""
    assert type_name(12) == "q3_k_m" and type_name(15) == "q4_k_m" and type_name(999) == "ftype999"
    assert all(type_name(t.ftype) == t.name for t in QUANT_TYPES)
    assert lookup("Q4_K_M").ftype == 15


def test_recipe_accepts_exactly_the_exported_types():
    from medkit.recipe import describe_keys, recipe_from_dict

    def recipe(types):
        raw = {"model": {"base": "org/base"}, "data": {"source": "org/data"}, "export": {"gguf": types}}
        return recipe_from_dict(raw)

    assert recipe(list(EXPORT_TYPES)).export.gguf == list(EXPORT_TYPES)
    with pytest.raises(RecipeError) as exc:
        recipe(["q5_1"])
    assert f"export.gguf: 'q5_1' is not one of {', '.join(EXPORT_TYPES)}" in str(exc.value)
    help_text = dict((k, h) for k, _, h in describe_keys())["export.gguf"]
    assert help_text == f"GGUF types to write: {', '.join(EXPORT_TYPES)}"


def test_export_help_lists_the_table():
    from medkit.cli import cli

    res = CliRunner().invoke(cli, ["export", "--help"], terminal_width=400)
    assert res.exit_code == 0, res.output
    flat = " ".join(res.output.split())
    assert f"Comma list of {', '.join(EXPORT_TYPES)}" in flat


def test_run_ggufs_sort_by_precision_from_the_table(tmp_path):
    """RunDir.ggufs(): every exported type in table order whatever the names say, a type medkit does
    not export by its size, unknown suffixes and adapters last (by name)."""
    from medkit.runs import RunDir

    export = tmp_path / "run" / "export"
    export.mkdir(parents=True)
    names = [f"m-{t}" for t in EXPORT_TYPES] + ["m-iq2_xxs", "m-adapter-patient", "adapter"]
    for name in random.Random(0).sample(names, len(names)):
        (export / f"{name}.gguf").write_bytes(b"GGUF")
    got = [p.stem for p in RunDir(tmp_path / "run").ggufs()]
    assert got == [f"m-{t}" for t in EXPORT_TYPES] + ["m-iq2_xxs", "adapter", "m-adapter-patient"]
    assert precision_rank("q4_0") < precision_rank("q3_k_m") < precision_rank("patient")


def test_no_quant_type_list_outside_the_table():
    """A quantized type's name is a value (a string constant) in toolkit/, convert/ and tui/ only in
    formats/gguf_types.py and the choices above; docstrings and messages may mention names."""
    quantized = {t.name for t in QUANT_TYPES if not t.is_float}
    found = set()
    for folder in ("toolkit", "convert", "tui"):
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = str(path.relative_to(REPO))
            if rel == "toolkit/formats/gguf_types.py":
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            found |= {
                (rel, node.value)
                for node in ast.walk(tree)
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in quantized
            }
    assert found <= ALLOWED_LITERALS, (
        f"type names written outside QUANT_TYPES: {sorted(found - ALLOWED_LITERALS)}"
    )
