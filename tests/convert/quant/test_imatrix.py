"""Importance matrices (medkit.convert.quant.imatrix): what they hold, the file llama.cpp reads, bad ones refused.

Add a bad-imatrix fault: one row in BAD_IMATRIX (a function that spoils a good IMatrix or file, and the
words the one-line error must contain).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
import pytest

from medkit.errors import ConvertError
from tests.convert.conftest import THREADS
from tests.factories import CORPUS

pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
K_WIDE = {"hidden_size": 256, "intermediate_size": 512}  # rows a multiple of the 256-wide K/i-quant block


def _seqs(model_dir: Path) -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return [list(tok(line)["input_ids"]) for line in CORPUS.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def tiny_imatrix(tiny_model_dir, tmp_path_factory):
    """(model dir, f16 GGUF, IMatrix, imatrix.gguf) for the K-quant friendly tiny llama."""
    from medkit.convert.gguf.writer import write_gguf
    from medkit.convert.quant.imatrix import collect
    from medkit.convert.quant.imatrix_file import write_imatrix

    model = tiny_model_dir("llama", **K_WIDE)
    out = tmp_path_factory.mktemp("imatrix")
    f16 = write_gguf(model, out / "tiny-f16.gguf", "f16").path
    im = collect(model, _seqs(model), datasets=["tests corpus"], device="cpu", dtype="float32")
    return model, f16, im, write_imatrix(im, out / "imatrix.gguf")


def test_importance_is_the_mean_square_of_each_layer_s_input(tiny_imatrix):
    import torch
    from transformers import AutoModelForCausalLM

    model_dir, _, im, _ = tiny_imatrix
    seqs = _seqs(model_dir)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    normed = []
    with torch.no_grad():
        for ids in seqs:
            hidden = model(torch.tensor([ids]), output_hidden_states=True).hidden_states[0]
            normed.append(model.model.layers[0].input_layernorm(hidden)[0].double())
    x = torch.cat(normed)
    means = im.means()
    assert im.tokens == sum(map(len, seqs)) == im.counts["blk.0.attn_q.weight"] == x.shape[0]
    assert im.counts["output.weight"] == im.tokens and im.sums["output.weight"].min() > 0  # the head's input
    np.testing.assert_allclose(means["blk.0.attn_q.weight"], (x * x).mean(0).numpy(), rtol=1e-4)
    # Q, K and V read the same input; so do gate and up
    for a, b in (("attn_q", "attn_k"), ("attn_q", "attn_v"), ("ffn_gate", "ffn_up")):
        np.testing.assert_array_equal(means[f"blk.1.{a}.weight"], means[f"blk.1.{b}.weight"])
    assert means["blk.0.ffn_down.weight"].size == K_WIDE["intermediate_size"]
    assert (
        "output.weight" in im.sums and "token_embd.weight" not in im.sums
    )  # untied head; lookups aren't matmuls


def test_a_bfloat16_forward_gives_the_float32_importance_within_a_percent(tiny_imatrix):
    """Where a CPU (AMX) or GPU multiplies faster in bfloat16 the calibration pass runs in it; its
    importance and Gram sums must still be float32's, to the rounding of the activations."""
    import torch

    from medkit.convert.quant.imatrix import collect, forward_dtype

    assert forward_dtype("cpu") in (torch.float32, torch.bfloat16) and forward_dtype("mps") is torch.float32
    model_dir, _, im32, _ = tiny_imatrix
    im16 = collect(model_dir, _seqs(model_dir), device="cpu", dtype="bfloat16", grams=True)
    assert im16.counts == im32.counts
    for name, ref in im32.sums.items():
        rel = np.abs(im16.sums[name] - ref).sum() / np.abs(ref).sum()
        assert rel < 0.02, (name, rel)
    for g in im16.grams.values():  # float32 sums of bfloat16 inputs: symmetric and positive semi-definite
        assert g.dtype == torch.float32
        assert torch.linalg.eigvalsh(g.double()).min() > -1e-6 * g.diagonal().max()


def test_qk_permutation_leaves_input_columns_in_place(tiny_imatrix):
    """llama.cpp's Q/K rows are HF's reordered per head; the columns (inputs) are the same, in order."""
    from safetensors.numpy import load_file

    model_dir, f16, im, _ = tiny_imatrix
    hf = load_file(str(model_dir / "model.safetensors"))
    tensors = {t.name: t for t in gguf.GGUFReader(str(f16)).tensors}
    for proj, name in (("q_proj", "attn_q"), ("k_proj", "attn_k")):
        w_hf = hf[f"model.layers.0.self_attn.{proj}.weight"].astype(np.float16).astype(np.float64)
        w_gguf = np.asarray(tensors[f"blk.0.{name}.weight"].data, dtype=np.float64)
        assert w_gguf.shape == w_hf.shape and not np.array_equal(w_gguf, w_hf)  # rows did move
        np.testing.assert_array_equal(np.sort(w_gguf, axis=0), np.sort(w_hf, axis=0))  # within each column
        assert im.sums[f"blk.0.{name}.weight"].size == w_gguf.shape[1]


def test_the_file_is_llama_cpp_s_imatrix_layout(tiny_imatrix):
    from medkit.convert.quant.imatrix_file import check_fits, read_imatrix

    _, f16, im, path = tiny_imatrix
    reader = gguf.GGUFReader(str(path))
    assert reader.get_field("general.type").contents() == "imatrix"
    assert reader.get_field(gguf.Keys.IMatrix.DATASETS).contents() == ["tests corpus"]
    assert reader.get_field(gguf.Keys.IMatrix.CHUNK_COUNT).contents() == len(_seqs(tiny_imatrix[0]))
    assert reader.get_field(gguf.Keys.IMatrix.CHUNK_SIZE).contents() > 0
    tensors = {t.name: t for t in reader.tensors}
    assert set(tensors) == {n + s for n in im.sums for s in (".in_sum2", ".counts")}
    q = "blk.0.attn_q.weight"
    assert [int(d) for d in tensors[q + ".in_sum2"].shape] == [K_WIDE["hidden_size"], 1]
    assert [int(d) for d in tensors[q + ".counts"].shape] == [1, 1]
    back = read_imatrix(path)
    check_fits(back, f16)
    for name, sums in im.sums.items():
        np.testing.assert_allclose(back.sums[name], sums, rtol=1e-6)
        assert back.counts[name] == im.counts[name]


def test_gpt2_conv1d_layers_map_to_its_gguf_tensors(tiny_model_dir, tiny_gguf):
    from medkit.convert.quant.imatrix import collect
    from medkit.convert.quant.imatrix_file import check_fits

    model = tiny_model_dir("gpt2")
    im = collect(model, _seqs(model)[:4], device="cpu")
    assert {n.split(".", 2)[-1] for n in im.sums} == {
        "attn_qkv.weight", "attn_output.weight", "ffn_up.weight", "ffn_down.weight",
    }  # fmt: skip
    assert im.sums["blk.0.ffn_down.weight"].size == 256  # Conv1D (in, out): the input is its first dim
    check_fits(im, tiny_gguf("gpt2", "f16"))


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma3", "phi3"])
def test_a_prefix_every_row_shares_runs_once_and_sums_as_many_times(tiny_model_dir, monkeypatch, arch):
    """The tokens every calibration row starts with (a system prompt) go through the model once and count
    once per row, the rows then run on from their cached keys and values: every sum, count and Gram
    matrix (deep layers too, which read the prefix through attention) equals a plain pass over the rows."""
    from medkit.convert.quant import imatrix

    model = tiny_model_dir(arch)
    rows = _seqs(model)[:6]
    head = rows[0][:3] * 4  # 12 tokens before every row
    seqs = [head + r for r in rows]
    assert imatrix.shared_prefix(seqs) >= len(head)  # (the rows' own first tokens may agree too)
    got = imatrix.collect(model, seqs, device="cpu", dtype="float32", grams=True)
    monkeypatch.setattr(imatrix, "SHARE_PREFIX", False)
    want = imatrix.collect(model, seqs, device="cpu", dtype="float32", grams=True)
    assert got.sums.keys() == want.sums.keys() and got.counts == want.counts and got.tokens == want.tokens
    for name in want.sums:
        np.testing.assert_allclose(got.sums[name], want.sums[name], rtol=2e-5, err_msg=name)
    assert want.grams is not None and got.grams is not None
    for name, g in want.grams.items():  # float32 sums in another order: within 2e-5 of the largest entry
        assert float((got.grams[name] - g).abs().max()) <= 2e-5 * float(g.abs().max()), name


def test_the_shared_prefix_leaves_every_row_a_token_of_its_own():
    from medkit.convert.quant.act_stats import MIN_SHARED, shared_prefix

    p = list(range(100, 100 + MIN_SHARED))
    assert shared_prefix([p + [1, 2], p + [1, 3]]) == MIN_SHARED + 1
    assert shared_prefix([p + [1], p + [1, 2]]) == MIN_SHARED  # the shorter row keeps its last token
    assert shared_prefix([p[:-1] + [1], p[:-1] + [2]]) == 0  # too short to be worth a pass of its own
    assert shared_prefix([p + [1, 2]]) == 0  # one row: nothing is shared


def test_sampling_respects_the_budget_and_the_seed():
    from medkit.convert.quant.calib import sample

    seqs = [list(range(n)) for n in (5, 40, 7, 30, 9, 1)]
    got = sample(seqs, budget=50, seed=3)
    assert sum(map(len, got)) == 50 and got == sample(seqs, budget=50, seed=3)
    assert sample(seqs, budget=50, seed=4) != got
    assert sum(map(len, sample(seqs, budget=10_000))) == 91  # all of it (the 1-token row is no calibration)
    with pytest.raises(ConvertError, match="calibration set is empty"):
        sample([[1], []])


def _renamed(im, path, f16):
    im.sums["blk.9.attn_q.weight"] = im.sums.pop("blk.0.attn_q.weight")
    im.counts["blk.9.attn_q.weight"] = im.counts.pop("blk.0.attn_q.weight")


def _resized(im, path, f16):
    im.sums["blk.0.ffn_down.weight"] = im.sums["blk.0.ffn_down.weight"][:-32]


def _nan(im, path, f16):
    im.sums["blk.1.ffn_up.weight"][3] = np.nan


def _model_gguf(im, path, f16):
    return f16  # a model GGUF given as the imatrix


def _garbage(im, path, f16):
    path.write_bytes(b"GGUF" + bytes(range(200)))
    return path


BAD_IMATRIX = [  # (spoil, words the one-line error holds)
    (_renamed, ["blk.9.attn_q.weight", "does not have", "another model"]),
    (_resized, ["blk.0.ffn_down.weight", "has 480 values", "rows have 512"]),
    (_nan, ["blk.1.ffn_up.weight", "NaN"]),
    (_model_gguf, ["not an imatrix GGUF", "imatrix.datasets"]),
    (_garbage, ["not a readable imatrix GGUF"]),
]


@pytest.mark.parametrize(("spoil", "needles"), BAD_IMATRIX, ids=[f.__name__ for f, _ in BAD_IMATRIX])
def test_a_bad_imatrix_is_one_line_and_nothing_is_quantized(tiny_imatrix, tmp_path, spoil, needles):
    import copy

    from medkit.convert.quant.imatrix_file import read_imatrix, write_imatrix

    _, f16, im, _ = tiny_imatrix
    im = copy.deepcopy(im)
    path = tmp_path / "bad.imatrix.gguf"
    given = spoil(im, path, f16)
    if given is None:
        write_imatrix(im, path)
    elif given != path:
        path = given
    from medkit.convert.quant.quantize import quantize

    dst = tmp_path / "out" / "q.gguf"
    with pytest.raises(ConvertError) as exc:
        quantize(f16, dst, "q4_k_m", imatrix=read_imatrix(path), threads=THREADS)
    line = str(exc.value)
    assert "\n" not in line and all(n in line for n in needles), line
    assert not dst.parent.exists() or not list(dst.parent.iterdir())  # nothing, not even a partial file


def _quantize(f16: Path, dst: Path, ftype: int, im=None, overrides=None, kv=None) -> int:
    import llama_cpp

    from medkit.convert.quant.imatrix_file import attach

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread = ftype, THREADS
    keep = attach(params, im, overrides, kv)
    rc = llama_cpp.llama_model_quantize(str(f16).encode(), str(dst).encode(), ctypes.byref(params))
    del keep
    return rc


def test_the_quantizer_takes_the_imatrix_overrides_and_metadata(tiny_imatrix, tmp_path):
    """iq2_xs: llama.cpp refuses it without an imatrix and writes it with ours; tt_overrides and
    kv_overrides reach the file."""
    pytest.importorskip("llama_cpp")
    from medkit.convert.quant.imatrix_file import read_imatrix
    from medkit.formats.gguf_types import BY_NAME

    _, f16, _, path = tiny_imatrix
    iq2 = BY_NAME["iq2_xs"].ftype
    assert _quantize(f16, tmp_path / "plain.gguf", iq2) != 0
    rc = _quantize(
        f16, tmp_path / "cal.gguf", iq2, read_imatrix(path), {r"ffn_down": "Q8_0"}, {"medkit.t": "1"}
    )
    assert rc == 0
    reader = gguf.GGUFReader(str(tmp_path / "cal.gguf"))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.ffn_down.weight"] == "Q8_0" and types["blk.0.ffn_up.weight"] == "IQ2_XS"
    assert reader.get_field("medkit.t").contents() == "1"


def test_a_hf_folder_is_calibrated_on_calib_file_and_the_file_is_written_once(tiny_model_dir, tmp_path):
    from types import SimpleNamespace

    from medkit.convert.quant.calibrate import for_export

    model = tiny_model_dir("llama", **K_WIDE)
    calib = tmp_path / "calib.jsonl"
    calib.write_text('{"text": "Fever and cough for three days."}\n\n{"messages": [{"role": "user", '
                     '"content": "What is anaemia?"}, {"role": "assistant", "content": "Too few red cells."}]}\n')  # fmt: skip
    source = SimpleNamespace(run=None, hf_dir=model, out_dir=tmp_path / "out")
    assert for_export(source, ["q4_k_m"], "auto") is None  # a bare folder without --calib: not calibrated
    assert for_export(source, ["f16"], "auto", calib) is None  # nothing to quantize: nothing computed
    im = for_export(source, ["q4_k_m"], "auto", calib, log=lambda m: None)
    path = tmp_path / "out" / "imatrix.gguf"
    assert im.chunk_count == 2
    assert im.datasets == ["calib.jsonl: 2 texts"]
    assert [p.name for p in path.parent.iterdir()] == ["imatrix.gguf"]  # no temp file left
    again = for_export(source, ["q4_k_m"], str(path))
    assert again.sums.keys() == im.sums.keys()


BAD_CALIB = [  # (file name, content, words the one-line error holds)
    ("empty.jsonl", "", ["calibration set is empty"]),
    ("broken.jsonl", '{"text": "ok text here"}\n{"text": \n', ["line 2 is not JSON"]),
    ("fields.jsonl", '{"prompt": "no text field"}\n', ["line 1 has no 'text' string"]),
    ("latin1.txt", "fi\xe8vre".encode("latin-1"), ["not UTF-8"]),
]


@pytest.mark.parametrize(("name", "content", "needles"), BAD_CALIB, ids=[r[0] for r in BAD_CALIB])
def test_a_bad_calibration_file_is_one_line_and_writes_nothing(
    tiny_model_dir, tmp_path, name, content, needles
):
    from types import SimpleNamespace

    from medkit.convert.quant.calibrate import for_export

    calib = tmp_path / name
    calib.write_bytes(content if isinstance(content, bytes) else content.encode())
    source = SimpleNamespace(run=None, hf_dir=tiny_model_dir("llama", **K_WIDE), out_dir=tmp_path / "out")
    with pytest.raises(ConvertError) as exc:
        for_export(source, ["q4_k_m"], "auto", calib)
    assert all(n in str(exc.value) for n in needles) and str(calib) in str(exc.value), str(exc.value)
    assert not (tmp_path / "out").exists()


def test_export_cli_calibrates_and_records_it(tiny_model_dir, tmp_path):
    """`medkit export FOLDER --gguf iq4_xs --calib FILE`: imatrix.gguf beside the GGUF, which says so."""
    from tests.reliability.conftest import run_medkit

    model = tiny_model_dir("llama", **K_WIDE)
    calib = tmp_path / "calib.txt"
    calib.write_text(CORPUS)
    out = tmp_path / "out"
    res = run_medkit("export", str(model), "--gguf", "iq4_xs", "--calib", str(calib), "--out", str(out),
                     "--no-verify", "--no-modelfile", "--threads", str(THREADS))  # fmt: skip
    assert res.code == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["imatrix.gguf", f"{model.name}-iq4_xs.gguf"]
    reader = gguf.GGUFReader(str(out / f"{model.name}-iq4_xs.gguf"))
    assert reader.get_field("medkit.imatrix").contents() is True
    assert reader.get_field("medkit.imatrix.dataset").contents().startswith("calib.txt")
    assert "(calibrated" in res.stdout


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--gguf", "iq2_xs", "--imatrix", "none"], ["iq2_xs needs an importance matrix", "--imatrix none"]),
        (["--gguf", "iq3_xxs"], ["iq3_xxs needs an importance matrix", "without --calib"]),
        (["--gguf", "q4_k_m", "--imatrix", "missing.gguf"], ["no such importance matrix file"]),
        (
            ["--gguf", "q4_0", "--gptq", "--imatrix", "none"],
            ["--gptq rounds on the calibration texts", "none"],
        ),
        (["--gguf", "auto:1MB", "--gptq"], ["--gptq rounds on the calibration texts", "without --calib"]),
    ],
)
def test_export_without_a_usable_imatrix_is_one_line_and_writes_nothing(
    tiny_model_dir, tmp_path, args, needles
):
    from tests.reliability.conftest import assert_one_line_error, run_medkit

    out = tmp_path / "out"
    res = run_medkit(
        "export", str(tiny_model_dir("llama", **K_WIDE)), *args, "--out", str(out), "--no-verify"
    )
    assert_one_line_error(res, *needles)
    assert not out.exists() or not [p for p in out.iterdir() if not p.name.startswith(".medkit")]


def test_what_export_can_check_cheaply_fails_before_the_calibration_pass(tiny_model_dir, tmp_path):
    """An output already there (no --force) or an auto budget below the smallest file: one line, and the
    importance matrix is neither computed nor written (an earlier imatrix.gguf is left as it was)."""
    from tests.reliability.conftest import assert_one_line_error, run_medkit

    model = tiny_model_dir("llama", **K_WIDE)
    calib = tmp_path / "calib.txt"
    calib.write_text(CORPUS)
    out = tmp_path / "out"
    common = [
        "--calib",
        str(calib),
        "--out",
        str(out),
        "--no-verify",
        "--no-modelfile",
        "--threads",
        str(THREADS),
    ]
    assert run_medkit("export", str(model), "--gguf", "q4_0", *common).code == 0
    before = (out / "imatrix.gguf").read_bytes()
    again = run_medkit("export", str(model), "--gguf", "q4_0", *common)
    assert_one_line_error(again, "already exists (use --force to overwrite)")
    assert "imatrix" not in again.stdout and (out / "imatrix.gguf").read_bytes() == before

    fresh = tmp_path / "fresh"
    small = run_medkit("export", str(model), "--gguf", "auto:100KB", *common[:2], "--out", str(fresh),
                       "--no-verify", "--no-modelfile")  # fmt: skip
    assert_one_line_error(small, "below the smallest possible file")
    assert not (fresh / "imatrix.gguf").exists() and not list(fresh.glob("*.gguf"))
