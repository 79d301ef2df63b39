"""One GGUF header reader (medkit.formats.gguf_header): every other module that reads a header asks it.

The thin readers elsewhere (LoRA base dimensions and adapter description, eval's shape check, verify's
file type) must give what the gguf package's own GGUFReader reads, without using it, and turn a bad
file into one typed error line. A new fault is one row of FAULTS.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from medkit.errors import ConvertError, EvalError, MedkitError, RuntimeLoadError
from tests.factories import ARCHS

ROOT = Path(__file__).resolve().parents[2]


def _reference(path: Path) -> dict[str, Any]:
    """What the gguf package reads from a header (slow, full reader): the ground truth."""
    import gguf

    reader = gguf.GGUFReader(str(path))

    def val(key: str) -> Any:
        f = reader.get_field(key)
        return None if f is None else f.contents()

    arch = val("general.architecture")
    return {
        "arch": arch,
        "type": val("general.type"),
        "n_embd": val(f"{arch}.embedding_length"),
        "n_layer": val(f"{arch}.block_count"),
        "n_head_kv": val(f"{arch}.attention.head_count_kv"),
        "n_ff": val(f"{arch}.feed_forward_length"),
        "nextn": val(f"{arch}.nextn_predict_layers"),
        "vocab": val(f"{arch}.vocab_size"),
        "file_type": val("general.file_type"),
        "alpha": val("adapter.lora.alpha"),
        "tensors": [t.name for t in reader.tensors],
    }


@pytest.fixture(scope="module")
def adapter_gguf(tiny_model_dir, tmp_path_factory) -> Path:
    from medkit.convert.adapter.lora import write_lora_gguf
    from tests.convert.adapter.test_lora_gguf import make_adapter

    root = tmp_path_factory.mktemp("header-adapter")
    adapter = make_adapter(tiny_model_dir("qwen2"), root / "adapter", r=4, lora_alpha=8)
    return write_lora_gguf(adapter, root / "adapter.gguf", base_dir=tiny_model_dir("qwen2"))


@pytest.fixture
def no_gguf_reader(monkeypatch):
    """gguf.GGUFReader made unusable: whoever still calls it fails the test."""
    import gguf

    def refuse(*args, **kwargs):
        raise AssertionError("GGUFReader used outside medkit.formats.gguf_header")

    monkeypatch.setattr(gguf, "GGUFReader", refuse)


@pytest.mark.parametrize("name", ARCHS)
def test_thin_readers_agree_with_the_gguf_package(tiny_gguf, name, request):
    from medkit.convert.adapter.lora_base import info_from_gguf
    from medkit.convert.verify import gguf_type
    from medkit.eval.verb import gguf_shape

    path = tiny_gguf(name, "f16")
    ref = _reference(path)
    request.getfixturevalue("no_gguf_reader")
    base = info_from_gguf(path)
    decoder = ref["n_layer"] - (ref["nextn"] or 0)  # Qwen3.5's MTP block is not a decoder layer of the base
    per_layer = isinstance(ref["n_ff"], list)  # Gemma 4's widths differ by layer: 0, not checked
    assert (base.arch, base.hidden, base.n_layers, base.n_head_kv, base.intermediate, base.vocab) == (
        ref["arch"], ref["n_embd"], decoder, ref["n_head_kv"], 0 if per_layer else ref["n_ff"], ref["vocab"],
    )  # fmt: skip
    assert base.family.gguf_arch == ref["arch"]
    shape = gguf_shape(path)
    assert shape == {
        "arch": ref["arch"],
        "n_embd": ref["n_embd"],
        "n_layer": ref["n_layer"],
        "vocab": ref["vocab"],
    }
    assert gguf_type(path) == "f16" and ref["file_type"] == 1


def test_adapter_description_agrees_with_the_gguf_package(adapter_gguf, request):
    from medkit.convert.adapter.lora import describe

    ref = _reference(adapter_gguf)
    request.getfixturevalue("no_gguf_reader")
    d = describe(adapter_gguf)
    assert (d["type"], d["adapter_type"], d["architecture"]) == ("adapter", "lora", "qwen2")
    assert d["alpha"] == pytest.approx(ref["alpha"]) and d["tensors"] == ref["tensors"]
    assert d["ranks"] == [4]


def _truncated(src: Path, dest: Path) -> Path:
    dest.write_bytes(src.read_bytes()[:4096])
    return dest


def _text(_src: Path, dest: Path) -> Path:
    dest.write_text("not a model\n")
    return dest


def _same(src: Path, _dest: Path) -> Path:
    return src


def _lora_info(p: Path) -> Any:
    from medkit.convert.adapter.lora_base import info_from_gguf

    return info_from_gguf(p)


def _describe(p: Path) -> Any:
    from medkit.convert.adapter.lora import describe

    return describe(p)


def _shape(p: Path) -> Any:
    from medkit.eval.verb import gguf_shape

    return gguf_shape(p)


def _type(p: Path) -> Any:
    from medkit.convert.verify import gguf_type

    return gguf_type(p)


# (reader, which file, how it is spoiled, error type, words in the one line)
FAULTS: list[tuple[Callable[[Path], Any], str, Callable[[Path, Path], Path], type[MedkitError], str]] = [
    (_lora_info, "model", _truncated, ConvertError, "cannot read GGUF: GGUF header is truncated"),
    (_lora_info, "model", _text, ConvertError, "cannot read GGUF: not a GGUF file"),
    (_lora_info, "adapter", _same, ConvertError, "LoRA adapter, not a base model"),
    (_describe, "model", _truncated, ConvertError, "cannot read GGUF"),
    (_shape, "model", _truncated, EvalError, "not a readable GGUF file (GGUF header is truncated"),
    (_shape, "model", _text, EvalError, "not a readable GGUF file (not a GGUF file"),
    (_shape, "adapter", _same, EvalError, "LoRA adapter, not a model"),
    (_type, "model", _truncated, RuntimeLoadError, "GGUF header is truncated"),
    (_type, "adapter", _same, ConvertError, "verify checks model GGUFs"),
]


@pytest.mark.parametrize(
    "reader, which, spoil, error, words", FAULTS, ids=lambda v: getattr(v, "__name__", None)
)
def test_bad_headers_are_one_typed_line(
    tiny_gguf, adapter_gguf, tmp_path, reader, which, spoil, error, words
):
    src = tiny_gguf("qwen2", "f16") if which == "model" else adapter_gguf
    path = spoil(src, tmp_path / "bad.gguf")
    with pytest.raises(error) as err:
        reader(path)
    msg = err.value.one_line()
    assert words in msg and str(path) in msg and "\n" not in msg


# Modules that may use the gguf package's full reader, and why (it loads tensor data, not just the header).
FULL_READERS = {
    "convert/quant/imatrix_file.py": "reads the importance sums (tensor data) of an imatrix GGUF",
    "convert/quant/mix.py": "dequantizes each tensor (tensor data) of the f16 and trial GGUFs for its error proxy",
}


def test_no_module_but_gguf_info_reads_headers_itself():
    """The gguf package's reader (slow: a numpy array per vocab string) is used only to read tensor data."""
    sources = [*ROOT.glob("toolkit/**/*.py"), *ROOT.glob("convert/**/*.py"), *ROOT.glob("tui/**/*.py")]
    users = sorted(str(p.relative_to(ROOT)) for p in sources if "GGUFReader(" in p.read_text())
    assert set(users) <= set(FULL_READERS), users


# -- calibration: was a GGUF quantized with an importance matrix? -----------------------------------------
def _header_only(path: Path, file_type: int | None, keys: dict[str, Any]) -> Path:
    """A GGUF with only metadata (no tensors): what calibration() reads."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    if file_type is not None:
        w.add_file_type(file_type)
    for key, value in keys.items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        else:
            w.add_string(key, value)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


LLAMA_QUANTIZE_KEYS = {
    "quantize.imatrix.file": "imatrix.dat",
    "quantize.imatrix.dataset": "calib.txt",
    "quantize.imatrix.entries_count": 154,
    "quantize.imatrix.chunks_count": 32,
}
MIX = {"medkit.quant.mix": "q4_k 150, q6_k 4", "medkit.quant.kl": "0.012000"}

# (general.file_type, metadata, calibration): q4_0 is ftype 2, f16 1, bf16 32
CALIBRATIONS = [
    (2, {"medkit.imatrix": True}, "imatrix"),
    (2, {"medkit.imatrix": False}, "plain"),
    (2, LLAMA_QUANTIZE_KEYS, "imatrix"),
    (2, {"quantize.imatrix.file": "imatrix.dat"}, "imatrix"),  # one key of the family is enough
    (2, {}, "plain"),  # quantized elsewhere, no key: no importance matrix
    (15, {"medkit.imatrix": True, **MIX}, "imatrix mix"),
    (15, {"medkit.imatrix": False, **MIX}, "plain mix"),
    (2, {"medkit.imatrix": True, "medkit.gptq": True}, "imatrix+gptq"),
    (15, {"medkit.imatrix": True, "medkit.gptq": True, **MIX}, "imatrix+gptq mix"),
    (1, {}, None),
    (32, {}, None),
    (None, {}, None),  # no file type, no key: nothing says it is quantized
    (None, {"medkit.imatrix": False}, "plain"),
]


@pytest.mark.parametrize("file_type, keys, expected", CALIBRATIONS)
def test_calibration_from_each_key_family(tmp_path, file_type, keys, expected):
    from medkit.formats.gguf_header import calibration, read_gguf_info

    path = _header_only(tmp_path / "m.gguf", file_type, keys)
    assert calibration(path) == expected
    assert calibration(read_gguf_info(path)) == expected  # a header already read is not read again


@pytest.fixture(scope="module")
def tiny_quants(tiny_gguf, tmp_path_factory) -> dict[str, Path]:
    """The tiny qwen2 f16 and two q8_0 made from it by llama.cpp, with the key medkit export writes."""
    from medkit.convert.quant.quantize import quantize

    f16 = tiny_gguf("qwen2", "f16")
    root = tmp_path_factory.mktemp("calibration")
    out = {"f16": f16}
    for name, flag in (("imatrix", True), ("plain", False)):
        out[name] = quantize(
            f16, root / f"{name}-q8_0.gguf", "q8_0", threads=1, metadata={"medkit.imatrix": flag}
        ).path
    return out


def test_calibration_of_llama_cpp_quantized_files(tiny_quants):
    """The bool medkit passes to llama.cpp's quantizer (kv_overrides) is read back from the written file."""
    from medkit.formats.gguf_header import calibration

    assert {k: calibration(p) for k, p in tiny_quants.items()} == {
        "f16": None,
        "imatrix": "imatrix",
        "plain": "plain",
    }


def test_verify_records_calibration_and_shows_the_column(tiny_model_dir, tiny_quants):
    from dataclasses import asdict

    from rich.console import Console

    from medkit.convert.verify import table as parity_table
    from medkit.convert.verify import verify

    paths = [tiny_quants[k] for k in ("f16", "imatrix", "plain")]
    results = verify(
        paths, tiny_model_dir("qwen2"), texts=["Hypertension is high blood pressure."], threads=1
    )
    assert [r.calibration for r in results] == [None, "imatrix", "plain"]
    assert asdict(results[2])["calibration"] == "plain"  # what export's run.json parity records
    console = Console(width=160, record=True)
    console.print(parity_table(results))
    lines = [line.replace("┃", "│") for line in console.export_text().splitlines()]
    cells = [[c.strip() for c in line.split("│")[1:3]] for line in lines if "│" in line]
    assert cells == [["type", "imatrix"], ["f16", "—"], ["q8_0", "yes"], ["q8_0", "no"]]


@pytest.mark.parametrize(
    "cal, cell",
    [
        (None, "—"),
        ("imatrix", "yes"),
        ("plain", "no"),
        ("imatrix mix", "yes (mix)"),
        ("imatrix+gptq", "yes+gptq"),
        ("imatrix+gptq mix", "yes+gptq (mix)"),
        ("plain mix", "no (mix)"),
    ],
)
def test_parity_imatrix_cell(cal, cell):
    from medkit.convert.verify import imatrix_cell

    assert imatrix_cell(cal) == cell
