"""`--gguf auto:SIZE` (medkit.convert.quant.mix): a per-tensor mix chosen by measurement under a size.

One measurement of the K-quant friendly tiny llama is shared by the module; each budget is then cheap.
Add a size spec: one row in SPECS (or BAD_SPECS with the words its one-line error must contain).
"""

from __future__ import annotations

import numpy as np
import pytest

from medkit.errors import ConvertError
from tests.convert.conftest import THREADS
from tests.factories import CORPUS

pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
K_WIDE = {"hidden_size": 256, "intermediate_size": 512}
TEXTS = ["The patient has a fever and a cough.", "Take one tablet twice a day with food."]  # held-out rows
BUDGETS = ("auto:0.75MB", "auto:1MB", "auto:1.5MB")  # the tiny model: 0.65 MB at Q3_K .. 1.6 MB at Q8_0

SPECS = [
    ("auto:90MB", "auto:90mb", 90 * 10**6, None),
    ("AUTO:1.5GiB", "auto:1.5gib", int(1.5 * 2**30), None),
    ("auto:512kb", "auto:512kb", 512_000, None),
    ("auto:4.5bpw", "auto:4.5bpw", None, 4.5),
]
BAD_SPECS = [
    ("auto:", "cannot read the size"),
    ("auto:lots", "cannot read the size"),
    ("auto:90", "cannot read the size"),
    ("auto:0MB", "out of range"),
    ("auto:20bpw", "out of range"),
]


@pytest.mark.parametrize("spec,norm,nbytes,bpw", SPECS)
def test_size_specs_parse_with_the_type_table(spec, norm, nbytes, bpw):
    from medkit.formats.gguf_types import parse_budget, parse_types

    b = parse_budget(spec)
    assert (b.spec, b.bytes, b.bpw) == (norm, nbytes, bpw)
    assert parse_types(f"q4_0,{spec}") == ["q4_0", norm]
    assert ":" not in b.file_stem


@pytest.mark.parametrize("spec,needle", BAD_SPECS)
def test_bad_size_specs_are_one_line(spec, needle):
    from medkit.formats.gguf_types import parse_types

    with pytest.raises(ConvertError) as err:
        parse_types(spec)
    assert needle in str(err.value) and "\n" not in str(err.value)


@pytest.fixture(scope="module")
def measured(tiny_model_dir, tmp_path_factory):
    from transformers import AutoTokenizer

    from medkit.convert.gguf.writer import write_gguf
    from medkit.convert.quant.imatrix import collect
    from medkit.convert.quant.mix import measure

    model = tiny_model_dir("llama", **K_WIDE)
    tok = AutoTokenizer.from_pretrained(str(model))
    seqs = [list(tok(line)["input_ids"]) for line in CORPUS.splitlines() if line.strip()]
    f16 = write_gguf(model, tmp_path_factory.mktemp("mix") / "tiny-f16.gguf", "f16").path
    im = collect(model, seqs, datasets=["tests corpus"], device="cpu")
    return measure(f16, imatrix=im, texts=TEXTS, threads=THREADS, log=lambda s: None)


@pytest.fixture(scope="module")
def mixes(measured):
    from medkit.convert.quant.mix import quantize_auto
    from medkit.formats.gguf_types import parse_budget

    out = {}
    for spec in BUDGETS:
        dst = measured.src.with_name(f"tiny-{spec.replace(':', '-')}.gguf")
        out[spec] = quantize_auto(
            measured.src, dst, parse_budget(spec), measured=measured, threads=THREADS, log=lambda s: None
        )
    return out


def test_every_mix_fits_its_budget_and_more_room_never_costs_kl(mixes):
    from medkit.formats.gguf_types import parse_budget

    kls = []
    for spec, res in mixes.items():
        assert res.path.stat().st_size == res.size <= parse_budget(spec).bytes == res.budget
        assert res.size > 0.9 * res.budget  # the room is used, not left over
        kls.append(res.kl)
    assert kls == sorted(kls, reverse=True) and kls[0] > 2 * kls[-1]
    assert len(set(mixes["auto:1MB"].types.values())) > 1  # a real mix, not one type everywhere


def test_the_mix_and_its_kl_are_in_the_gguf(mixes, measured):
    from medkit.convert.verify import gguf_type
    from medkit.formats.gguf_header import read_gguf_info

    res = mixes["auto:1MB"]
    reader = gguf.GGUFReader(str(res.path))
    meta = {k: bytes(f.parts[-1]).decode() for k, f in reader.fields.items() if k.startswith("medkit.quant")}
    assert meta == {"medkit.quant.mix": res.summary(), "medkit.quant.kl": f"{res.kl:.6f}",
                    "medkit.quant.budget": "auto:1mb"}  # fmt: skip
    written = {t.name: t.tensor_type.name for t in reader.tensors if t.name in res.types}
    assert written == res.types and len(written) == len(measured.tensors)
    assert read_gguf_info(res.path).file_type is not None and gguf_type(res.path) != "q8_0"  # the mix's own
    assert abs(measured.meter(res.path) - res.kl) < 1e-6  # the recorded KL is what the file costs


def test_a_budget_below_the_smallest_file_is_one_line_and_writes_nothing(measured, tmp_path):
    from medkit.convert.quant.mix import quantize_auto
    from medkit.formats.gguf_types import parse_budget

    dst = tmp_path / "x.gguf"
    with pytest.raises(ConvertError) as err:
        quantize_auto(measured.src, dst, parse_budget("auto:0.5MB"), measured=measured)
    msg = str(err.value)
    assert "below the smallest possible file" in msg and "auto:0.7MB" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []


def test_the_proxy_ranks_types_like_the_kl(measured, tmp_path):
    """The proxy (imatrix-weighted relative error) orders the ladder's types as the measured KL does
    (whole model at one type, 2 held-out rows; measured proxy 0.335/0.092/0.080/0.020/0.005, KL
    3.67/1.39/1.42/0.59/0.17 for Q3_K/IQ4_XS/Q4_K/Q5_K/Q6_K).

    Across tensor kinds it does not (on the random tiny model every kind's relative error is about the
    same while attn_q/k and token_embd cost far more KL): that is why each group's KL is measured and
    the proxy only spreads it over the group's tensors and types."""
    from medkit.convert.quant.mix import LADDER_K, _overrides
    from medkit.convert.quant.quantize import quantize

    proxy, kl = [], []
    for ggml in LADDER_K[:-1]:
        types = {t.name: ggml for t in measured.tensors}
        path = quantize(measured.src, tmp_path / f"{ggml}.gguf", "q8_0", threads=THREADS,
                        imatrix=measured.imatrix, overrides=_overrides(types)).path  # fmt: skip
        kl.append(measured.meter(path))
        proxy.append(sum(measured.errors[t.name][ggml] for t in measured.tensors))
    rank_p, rank_k = np.argsort(np.argsort(proxy)), np.argsort(np.argsort(kl))
    assert np.corrcoef(rank_p, rank_k)[0, 1] > 0.89  # Spearman; measured: 0.9 (IQ4_XS~Q4_K swap), else 1
    distinct = [0, 2, 3, 4]  # Q3_K, Q4_K, Q5_K, Q6_K: one bit apart, exactly in order in both
    assert [proxy[i] for i in distinct] == sorted((proxy[i] for i in distinct), reverse=True)
    assert [kl[i] for i in distinct] == sorted((kl[i] for i in distinct), reverse=True)
    # IQ4_XS and Q4_K (4.25 vs 4.5 bpw) are a near tie in both: within 25% of each other
    assert abs(proxy[1] / proxy[2] - 1) < 0.25 and abs(kl[1] / kl[2] - 1) < 0.25


def test_export_records_the_mix_in_run_json(tiny_model_dir, tmp_path, monkeypatch):
    from medkit.convert import export as export_mod
    from medkit.convert import verify
    from medkit.formats.gguf_types import parse_types
    from medkit.runs import RunDir

    monkeypatch.setattr(verify, "held_out_texts", lambda run_path=None: TEXTS)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    src = export_mod.Source(tiny_model_dir("llama", **K_WIDE), tmp_path / "out", "tiny", run=run)
    types = parse_types("auto:1MB")  # as the CLI gives them: the spec normalized
    outputs, _ = export_mod.export(src, types, threads=THREADS, log=lambda s: None)
    path = outputs["auto:1mb"]
    assert path.name == "tiny-auto-1mb.gguf" and path.stat().st_size <= 10**6
    rec = run.read_manifest()["quant_mix"]["auto:1mb"]
    assert (
        rec["size"] == path.stat().st_size
        and rec["kl"] > 0
        and set(rec["group_kl"]) >= {"attn_q", "ffn_down"}
    )
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [path.name]  # no pass file left behind


def test_cli_too_small_budget_is_one_line_and_nothing_is_written(tiny_model_dir, tmp_path):
    from tests.reliability.conftest import assert_one_line_error, run_medkit

    out = tmp_path / "out"
    model = tiny_model_dir("llama", **K_WIDE)
    res = run_medkit("export", str(model), "--gguf", "auto:100KB", "--out", str(out), "--no-verify",
                     "--no-modelfile", cwd=tmp_path)  # fmt: skip
    assert_one_line_error(res, "below the smallest possible file")
    assert not out.exists() or not list(out.glob("*.gguf"))
