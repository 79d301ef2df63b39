"""The model-family registry (medkit.convert.arch): one module per family, every field declared, every user asks it.

Adding a family must be one new module in convert/arch/ plus its row in tests/factories.py TINY; these
tests fail when either half is missing, and every parametrized export/LoRA test then covers it.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from medkit.convert import arch
from medkit.convert.arch.base import SHAPE_NAMES, Family
from medkit.errors import ConvertError
from tests.factories import ARCHS

ARCH_DIR = Path(arch.__file__).parent


def test_registry_lists_exactly_the_family_modules_present():
    modules = {p.stem for p in ARCH_DIR.glob("*.py")} - {"__init__"} - arch.NOT_FAMILIES
    found = arch.discover(arch.__name__, [str(ARCH_DIR)])
    assert set(found) == modules
    assert sorted(f.name for fams in found.values() for f in fams) == [f.name for f in arch.families()]
    for module, fams in found.items():
        if len(fams) == 1:  # a one-family module is named after its family
            assert fams[0].name == module


def test_every_exported_family_has_a_tiny_fixture():
    assert arch.supported() == sorted(ARCHS)
    assert {"gpt2", "llama", "mistral", "qwen2"} <= set(arch.supported())


@pytest.mark.parametrize("name", arch.supported())
def test_every_exported_family_declares_every_field(name):
    fam = arch.by_name(name)
    assert fam is not None and fam.exports and fam.lora_gguf
    assert fam.hf_architectures and fam.model_types and fam.lora_targets and fam.dims is not None
    assert fam.norm in ("rms", "layer") and fam.norm_eps[0] and fam.norm_eps[1] > 0
    assert fam.skip and fam.blocks
    assert fam.model_arch() is not None  # the gguf package knows its GGUF architecture
    assert fam.lora_shapes and all(a in SHAPE_NAMES and b in SHAPE_NAMES for a, b in fam.lora_shapes.values())
    for target in fam.lora_targets:  # each 'auto' target has a shape check
        assert any(key.split(".")[-1] == target for key in fam.lora_shapes), target
    for hf_arch in fam.hf_architectures:
        assert arch.by_hf_architecture(hf_arch) is fam
    for model_type in fam.model_types:
        assert arch.by_model_type(model_type) is fam and arch.gguf_arch_of(model_type) == fam.gguf_arch


@pytest.mark.parametrize(
    "question, answer",
    [
        (lambda: arch.by_gguf_arch("llama").name, "llama"),  # not mistral, which is written as llama too
        (lambda: arch.by_gguf_arch("gpt2").name, "gpt2"),
        (lambda: arch.by_gguf_arch("falcon"), None),
        (lambda: arch.gguf_arch_of("mistral"), "llama"),
        (lambda: arch.gguf_arch_of("olmo2"), "olmo2"),  # trained, not exported: no alias
        (lambda: arch.auto_targets("phi3"), ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"]),
        (lambda: arch.auto_targets("gemma3_text")[:2], ["q_proj", "k_proj"]),
        (lambda: arch.auto_targets("falcon"), None),
        (lambda: arch.detect({"architectures": ["MistralForCausalLM"]}).name, "mistral"),
        (lambda: arch.detect({"model_type": "gpt2"}).name, "gpt2"),
        (lambda: bool(arch.by_name("gpt2").conv1d), True),
        (lambda: arch.by_name("qwen2").permute_qk, False),
    ],
)
def test_registry_answers(question, answer):
    assert question() == answer


@pytest.mark.parametrize(
    "config, words",
    [
        ({"architectures": ["FalconForCausalLM"]}, "'FalconForCausalLM'"),
        ({"architectures": ["GemmaForCausalLM"]}, "'GemmaForCausalLM'"),  # trained, not exported
        ({"model_type": "olmo2"}, "'olmo2'"),  # trained, not exported
        ({}, "'unknown'"),
    ],
)
def test_unsupported_configs_name_the_supported_families(config, words):
    with pytest.raises(ConvertError) as err:
        arch.detect(config)
    msg = err.value.one_line()
    assert words in msg and f"(supported: {', '.join(arch.supported())})" in msg and "\n" not in msg
    assert "gpt2, llama, mistral" in msg


def test_a_new_family_is_one_module(tmp_path, monkeypatch):
    pkg = tmp_path / "more_families"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "falcon.py").write_text(
        textwrap.dedent("""
            from medkit.convert.arch.base import Family, decoder_dims
            FAMILY = Family("falcon", ("FalconForCausalLM",), ("falcon",), ("query_key_value",),
                            gguf_arch="falcon", dims=decoder_dims)
        """)
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = arch.discover("more_families", [str(pkg)])
    assert list(found) == ["falcon"] and found["falcon"][0].model_arch() is not None


@pytest.mark.parametrize(
    "source, words",
    [
        ("X = 1", "declares no FAMILY"),
        ("from medkit.convert.arch.llama import FAMILY", "is declared by both llama and llama"),
    ],
)
def test_broken_family_modules_are_refused(tmp_path, monkeypatch, source, words):
    pkg = tmp_path / f"bad_families_{len(source)}"  # one package per case: imports are cached
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from medkit.convert.arch.llama import FAMILY\n")
    (pkg / "b.py").write_text(source + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(TypeError, match=words):
        arch.discover(pkg.name, [str(pkg)])


def test_registry_imports_nothing_heavy():
    code = (
        "import sys; from medkit.convert import arch; arch.families(); arch.detect({'model_type': 'llama'});"
        "print([m for m in ('numpy', 'gguf', 'torch', 'transformers') if m in sys.modules])"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"


@pytest.mark.parametrize("name", arch.supported())
def test_every_tensor_of_the_tiny_model_has_a_gguf_name(tiny_model_dir, name):
    """The registry alone (detect, dims, tensor-name map, layout) plans the whole tiny checkpoint."""
    import json

    from medkit.convert.arch.layout import plan_tensor, tensor_name_map
    from medkit.convert.gguf.writer import WeightReader

    folder = tiny_model_dir(name)
    config = json.loads((folder / "config.json").read_text())
    fam = arch.detect(config)
    assert fam.name == name
    dims = fam.read_dims(config)
    assert (dims.n_layer, dims.n_embd) == (
        {"gemma3": 6, "gemma2": 4, "gemma4": 6, "smollm3": 4, "qwen35": 4}.get(name, 2),
        64,
    )
    reader = WeightReader(folder)
    name_map = tensor_name_map(fam, dims.n_layer)
    planned = {h: plan_tensor(fam, config, name_map, h, len(reader.shape(h))) for h in reader.names()}
    names = {p[0] for p in planned.values() if p is not None}
    assert {"token_embd.weight", "blk.1.attn_norm.weight", "blk.1.ffn_down.weight"} <= names
    transformed = {h for h, p in planned.items() if p is not None and p[1] is not None}
    assert bool(transformed) == bool(fam.permute_qk or fam.conv1d or fam.norm_offset)


def test_every_family_field_is_read_somewhere():
    """No Family field is declared for show: each is read as `<family>.<field>` by medkit's code."""
    import dataclasses

    users = "".join(p.read_text() for p in ARCH_DIR.parent.rglob("*.py"))
    users += (ARCH_DIR.parents[1] / "toolkit" / "train" / "plan.py").read_text()
    for f in dataclasses.fields(Family):
        assert f".{f.name}" in users, f.name
