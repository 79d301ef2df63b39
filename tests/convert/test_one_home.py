"""One home per fact (issue 14): each duplicated fact now lives in one function that everything asks.

A new fact is a row in ONE_HOME (the text that may appear only in its home), a new GGUF naming case a row
in GGUF_KINDS, a new safetensors dtype a row in ST_DTYPES.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from medkit.errors import ConvertError

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("toolkit", "convert", "tui")

# (what, regular expression, the only files it may appear in)
ONE_HOME = [
    ("BitsAndBytesConfig builder", r"BitsAndBytesConfig\(", {"toolkit/train/plan.py"}),
    ("label NLL (cross-entropy over labels)", r"\bcross_entropy\(", {"toolkit/train/loss.py"}),
    ("safetensors dtype table", r"[\"']BF16[\"']\s*:", {"convert/gguf/safetensors_io.py"}),
    ("bfloat16 widening", r"uint32\)\s*<<\s*16", {"convert/gguf/safetensors_io.py"}),
    ("--set option", r"option\(\s*[\"']--set[\"']", {"toolkit/validate.py"}),
    (
        "chat/serve runtime options",
        r"option\(\s*[\"']--(gpu-layers|ctx|adapter)[\"']",
        {"toolkit/runtime/options.py"},
    ),
    ("tokenizer loader", r"def load_tokenizer\(", {"toolkit/models.py"}),
    ("adapter told from model by its name", r"[\"']adapter[\"'] (not )?in \w+\.(name|stem)", set()),
    ("private import across modules", r"from medkit[\w.]* import [^\n]*\b_[a-z]", set()),
]


def _sources() -> dict[str, str]:
    return {
        str(p.relative_to(ROOT)): p.read_text()
        for folder in SOURCES
        for p in sorted((ROOT / folder).rglob("*.py"))
    }


@pytest.mark.parametrize("what,pattern,homes", ONE_HOME, ids=[row[0] for row in ONE_HOME])
def test_each_fact_has_one_home(what, pattern, homes):
    found = {path for path, text in _sources().items() if re.search(pattern, text)}
    assert found == homes, f"{what}: written in {sorted(found)}, its one home is {sorted(homes)}"


# ---- RunDir tells models from adapters by the GGUF header ------------------------------------------


def _gguf(path: Path, kind: str | None) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    if kind is not None:
        w.add_string("general.type", kind)
    w.add_tensor("blk.0.attn_q.weight", np.zeros((2, 16), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


# (file name, how it is made, kind): the header decides; an unreadable file goes by medkit's own name
GGUF_KINDS = [
    ("patient.gguf", "adapter", "adapter"),  # an adapter renamed by a user: was taken for a model
    ("m-adapter-free-q4_0.gguf", "model", "model"),  # "adapter" in a model's name: was taken for an adapter
    ("m-q8_0.gguf", None, "model"),  # no general.type: a model (llama.cpp's default)
    ("adapter.gguf", b"GGUF", "adapter"),  # unreadable: the name `medkit export --adapter-only` writes
    ("m-q4_0.gguf", b"GGUF", "model"),  # unreadable model: chat/serve load it and report the damage
]


@pytest.fixture
def run_dir(tmp_path, monkeypatch):
    run = tmp_path / "runs" / "demo"
    (run / "export").mkdir(parents=True)
    (run / "recipe.toml").write_text("")
    for name, make, _ in GGUF_KINDS:
        path = run / "export" / name
        path.write_bytes(make) if isinstance(make, bytes) else _gguf(path, make)
    monkeypatch.setenv("MEDKIT_RUNS", str(tmp_path / "runs"))
    return run


def test_run_dir_sorts_ggufs_by_their_header(run_dir):
    from medkit.runs import RunDir, gguf_kind

    run = RunDir(run_dir)
    for name, _, kind in GGUF_KINDS:
        assert gguf_kind(run.export / name) == kind, name
    assert {p.name for p in run.model_ggufs()} == {n for n, _, k in GGUF_KINDS if k == "model"}
    assert {p.name for p in run.adapter_ggufs()} == {n for n, _, k in GGUF_KINDS if k == "adapter"}
    assert [p for p in run.ggufs() if p in run.model_ggufs() + run.adapter_ggufs()] == run.ggufs()


def test_chat_and_serve_get_the_adapters_from_run_dir(run_dir):
    from medkit.runs import latest_export
    from medkit.runtime.options import resolve_model

    model, adapters = resolve_model("demo")
    assert model.name in {n for n, _, k in GGUF_KINDS if k == "model"}
    assert adapters == {
        "patient": str(run_dir / "export" / "patient.gguf"),
        "adapter": str(run_dir / "export" / "adapter.gguf"),
    }
    assert latest_export().name in {n for n, _, k in GGUF_KINDS if k == "model"}


def test_read_gguf_kind_stops_early_and_never_raises(tmp_path):
    from medkit.formats.gguf_header import read_gguf_kind

    assert read_gguf_kind(_gguf(tmp_path / "a.gguf", "adapter")) == "adapter"
    assert read_gguf_kind(_gguf(tmp_path / "m.gguf", None)) == "model"
    for junk in (b"", b"GGUF", b"GGML" + bytes(40), (tmp_path / "a.gguf").read_bytes()[:30]):
        (tmp_path / "x.gguf").write_bytes(junk)
        assert read_gguf_kind(tmp_path / "x.gguf") is None
    assert read_gguf_kind(tmp_path / "missing.gguf") is None


# ---- one safetensors reader --------------------------------------------------------------------------

VALUES = np.array([[1.0, -2.5, 3.140625], [0.0, 65504.0, -1e-3]], dtype=np.float32)
# safetensors dtype -> bytes of VALUES stored so, and the float32 the reader must give back
ST_DTYPES = [
    ("F32", VALUES.tobytes(), VALUES),
    ("F16", VALUES.astype(np.float16).tobytes(), VALUES.astype(np.float16).astype(np.float32)),
    ("F64", VALUES.astype(np.float64).tobytes(), VALUES),
    ("BF16", (VALUES.view(np.uint32) >> 16).astype(np.uint16).tobytes(),
     ((VALUES.view(np.uint32) >> 16) << 16).view(np.float32)),
]  # fmt: skip


def _safetensors(path: Path, dtype: str, data: bytes, shape=(2, 3)) -> Path:
    header = json.dumps(
        {"w": {"dtype": dtype, "shape": list(shape), "data_offsets": [0, len(data)]}}
    ).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)
    return path


@pytest.mark.parametrize("dtype,data,want", ST_DTYPES, ids=[row[0] for row in ST_DTYPES])
def test_model_and_adapter_weights_read_alike(tmp_path, dtype, data, want):
    from medkit.convert.adapter.lora_base import read_safetensors
    from medkit.convert.gguf.writer import WeightReader

    st = _safetensors(tmp_path / "model.safetensors", dtype, data)
    model = np.asarray(WeightReader(tmp_path).get("w"), dtype=np.float32)
    shape, adapter = read_safetensors(st)["w"]
    assert shape == (2, 3) and adapter.dtype == np.float32
    assert np.array_equal(model, want) and np.array_equal(adapter, want)


@pytest.mark.parametrize(
    "damage,needles",
    [
        (
            lambda b: b[:100] if len(b) > 100 else b[:12],
            ("corrupt safetensors header", "corrupt or truncated"),
        ),
        (lambda b: b"\xff" * 64, ("corrupt safetensors header",)),
        (lambda b: b[:-4], ("truncated or corrupt safetensors", "tensor 'w'")),
    ],
    ids=["cut-header", "garbage", "cut-data"],
)
def test_a_damaged_file_is_one_error_for_both_readers(tmp_path, damage, needles):
    from medkit.convert.adapter.lora_base import read_safetensors
    from medkit.convert.gguf.writer import WeightReader

    st = _safetensors(tmp_path / "model.safetensors", "F32", VALUES.tobytes())
    st.write_bytes(damage(st.read_bytes()))
    for read in (lambda: WeightReader(tmp_path), lambda: read_safetensors(st)):
        with pytest.raises(ConvertError) as err:
            read()
        assert all(n in str(err.value) for n in needles), str(err.value)


# ---- one set of CLI options -------------------------------------------------------------------------


def _options(command, names):
    return {
        p.name: (tuple(p.opts), p.default, getattr(p, "help", None), p.multiple)
        for p in command.params
        if p.name in names
    }


def test_chat_and_serve_share_their_runtime_options():
    from medkit.runtime.serve import command as serve
    from medkit.tui.app import command as chat

    names = {"model", "adapter_specs", "gpu_layers", "ctx", "threads"}
    assert set(_options(chat, names)) == names
    assert _options(chat, names) == _options(serve, names)


@pytest.mark.parametrize(
    "verb", ["medkit.eval.verb", "medkit.data.verb", "medkit.train.verb", "medkit.validate"]
)
def test_every_verb_takes_the_same_set_option(verb):
    import importlib

    from medkit.validate import command as validate

    command = importlib.import_module(verb).command
    assert _options(command, {"overrides"}) == _options(validate, {"overrides"}) != {}


def test_an_imatrix_gguf_in_export_is_neither_a_model_nor_an_adapter(tmp_path):
    """export/imatrix.gguf (general.type = imatrix) must not be offered to eval, chat or serve as a model."""
    import gguf

    from medkit.runs import RunDir

    run = RunDir(tmp_path / "r")
    run.export.mkdir(parents=True)
    w = gguf.GGUFWriter(str(run.export / "imatrix.gguf"), arch="llama")
    w.add_type("imatrix")
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    assert run.ggufs() == [run.export / "imatrix.gguf"]
    assert run.model_ggufs() == [] and run.adapter_ggufs() == []
