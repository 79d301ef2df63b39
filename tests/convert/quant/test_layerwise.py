"""The layer-by-layer calibration pass (medkit.convert.quant.layerwise) and its Gram store: the same importance
sums, Gram matrices and GPTQ codes as the whole-model pass, each layer seeing full-precision inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.factories import CORPUS

pytest.importorskip("torch")
pytest.importorskip("gguf")
K_WIDE = {"hidden_size": 256, "intermediate_size": 512}


def _seqs(model_dir: Path, prefix: str = "") -> list[list[int]]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    return [list(tok(prefix + line)["input_ids"]) for line in CORPUS.splitlines() if line.strip()]


SHARED = "You are a careful medical assistant. Answer briefly and plainly. Question: "


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("prefix", ["", SHARED])
def test_layer_by_layer_sums_and_grams_equal_the_whole_model_pass(tiny_model_dir, tmp_path, arch, prefix):
    """Each layer sees the previous layer's full-precision outputs: every weight's importance sums, token
    counts and Gram matrix equal the whole-model pass's to float tolerance (with a shared prefix, run once
    per layer from its cached keys and values, and without), held in memory or written to the store."""
    import torch

    from medkit.convert.quant.gram_store import GramStore
    from medkit.convert.quant.imatrix import collect
    from medkit.convert.quant.layerwise import collect_layerwise

    model = tiny_model_dir(arch, **K_WIDE)
    seqs = _seqs(model, prefix)
    whole = collect(model, seqs, device="cpu", dtype="float32", grams=True)
    layer = collect_layerwise(model, seqs, device="cpu", dtype="float32", grams=True)
    store = GramStore(tmp_path / "grams")
    stored = collect_layerwise(model, seqs, device="cpu", dtype="float32", grams=True, store=store)
    assert set(layer.sums) == set(whole.sums) == set(stored.sums)
    assert layer.tokens == whole.tokens
    for name, s in whole.sums.items():
        assert layer.counts[name] == whole.counts[name], name
        np.testing.assert_allclose(layer.sums[name], s, rtol=2e-5, atol=1e-6, err_msg=name)
        np.testing.assert_allclose(stored.sums[name], layer.sums[name], rtol=0, atol=0, err_msg=name)
    assert set(layer.grams) == set(whole.grams) == set(store)
    loaded = store.load(list(store))
    for name, h in whole.grams.items():
        torch.testing.assert_close(layer.grams[name], h, rtol=2e-5, atol=1e-4)
        torch.testing.assert_close(loaded[name], layer.grams[name], rtol=0, atol=0)
    # weights fed one input share one matrix, in memory and on disk
    assert layer.grams["blk.0.attn_q.weight"] is layer.grams["blk.0.attn_k.weight"]
    assert loaded["blk.0.attn_q.weight"] is loaded["blk.0.attn_v.weight"]
    assert store.files["blk.0.ffn_gate.weight"] == store.files["blk.0.ffn_up.weight"]


def test_gptq_codes_from_the_store_equal_those_from_the_whole_model_grams(tiny_model_dir, tmp_path):
    """The q4_k_m file GPTQ rewrites block by block from the stored Gram matrices is byte for byte the one
    it rewrites from the whole-model pass's matrices (all blocks at once), when the sums agree."""
    from medkit.convert.gguf.writer import write_gguf
    from medkit.convert.quant.calibrate import refiner
    from medkit.convert.quant.gram_store import GramStore
    from medkit.convert.quant.layerwise import collect_layerwise
    from medkit.convert.quant.quantize import quantize

    model = tiny_model_dir("llama", **K_WIDE)
    seqs = _seqs(model, SHARED)
    f16 = write_gguf(model, tmp_path / "f16.gguf", "f16").path
    whole = collect_layerwise(model, seqs, device="cpu", dtype="float32", grams=True)
    store = GramStore(tmp_path / "grams")
    layered = collect_layerwise(model, seqs, device="cpu", dtype="float32", grams=True, store=store)
    a = quantize(f16, tmp_path / "a.gguf", "q4_k_m", threads=1, imatrix=whole,
                 post=refiner(model, seqs, f16, grams=whole.grams)).path  # fmt: skip
    b = quantize(f16, tmp_path / "b.gguf", "q4_k_m", threads=1, imatrix=layered,
                 post=refiner(model, seqs, f16, grams=store, budget=1)).path  # fmt: skip
    assert a.read_bytes() == b.read_bytes()
    assert (
        a.read_bytes()
        != quantize(f16, tmp_path / "c.gguf", "q4_k_m", threads=1, imatrix=whole).path.read_bytes()
    )


def test_gptq_codes_recomputed_layer_by_layer_equal_those_from_the_store(tiny_model_dir, tmp_path):
    """With no disk for the Gram store, the pass runs again for the quantized file and each layer is rounded
    as soon as its matrices are summed (layerwise.Recompute): the same bytes as rounding from the store."""
    from medkit.convert.gguf.writer import write_gguf
    from medkit.convert.quant.calibrate import refiner
    from medkit.convert.quant.gram_store import GramStore
    from medkit.convert.quant.layerwise import Recompute, collect_layerwise
    from medkit.convert.quant.quantize import quantize

    model = tiny_model_dir("llama", **K_WIDE)
    seqs = _seqs(model, SHARED)
    f16 = write_gguf(model, tmp_path / "f16.gguf", "f16").path
    store = GramStore(tmp_path / "grams")
    layered = collect_layerwise(model, seqs, device="cpu", dtype="float32", grams=True, store=store)
    lines: list[str] = []
    again = Recompute(model, seqs, "cpu", lines.append)
    a = quantize(f16, tmp_path / "a.gguf", "q4_k_m", threads=1, imatrix=layered,
                 post=refiner(model, seqs, f16, grams=store, budget=1)).path  # fmt: skip
    b = quantize(f16, tmp_path / "b.gguf", "q4_k_m", threads=1, imatrix=layered,
                 post=refiner(model, seqs, f16, grams=again)).path  # fmt: skip
    assert a.read_bytes() == b.read_bytes()
    assert len(lines) == 1 and lines[0].startswith("GPTQ: calibration pass again")
    plain = quantize(f16, tmp_path / "c.gguf", "q4_k_m", threads=1, imatrix=layered).path
    assert b.read_bytes() != plain.read_bytes()


def test_the_store_goes_to_disk_only_where_it_fits(tmp_path, monkeypatch):
    import shutil

    from medkit.convert.quant.memplan import GRAMS_ENV, grams_on_disk
    from medkit.errors import ConvertError

    free = shutil.disk_usage(tmp_path).free
    monkeypatch.delenv(GRAMS_ENV, raising=False)
    assert grams_on_disk(2**20, tmp_path / "not" / "yet", 0)  # a folder still to be made: its parent's disk
    assert not grams_on_disk(free, tmp_path, 0)
    assert not grams_on_disk(2**20, tmp_path, free)  # the outputs still to come leave no room
    monkeypatch.setenv(GRAMS_ENV, "disk")
    assert grams_on_disk(free, tmp_path, 0)
    monkeypatch.setenv(GRAMS_ENV, "recompute")
    assert not grams_on_disk(2**20, tmp_path, 0)
    monkeypatch.setenv(GRAMS_ENV, "ram")
    with pytest.raises(ConvertError, match="MEDKIT_GRAMS=ram: expected auto, disk or recompute"):
        grams_on_disk(2**20, tmp_path, 0)


def test_store_parts_are_whole_blocks_within_the_budget(tmp_path):
    import torch

    from medkit.convert.quant.gram_store import GramStore

    store = GramStore(tmp_path / "g")
    for b in range(3):
        h = torch.eye(8)
        store.put(
            {
                f"blk.{b}.attn_q.weight": h,
                f"blk.{b}.attn_k.weight": h,
                f"blk.{b}.ffn_down.weight": torch.eye(16),
            }
        )
    store.put({"output.weight": torch.eye(8)})
    per_block = 8 * 8 * 4 + 16 * 16 * 4
    assert store.block_bytes() == {0: per_block, 1: per_block, 2: per_block, -1: 256}
    parts = store.parts(2 * per_block)
    assert [sorted({n.split(".")[1] for n in p}) for p in parts] == [["0", "1"], ["2", "weight"]]
    assert len(store.parts(1)) == 4  # a block over the budget goes alone
    store.remove()
    assert not (tmp_path / "g").exists()


def test_the_layer_loop_runs_on_cuda_when_torch_sees_one_and_where_it_is_told(monkeypatch):
    import torch

    from medkit.convert.quant import layerwise
    from medkit.errors import ConvertError

    monkeypatch.delenv(layerwise.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert layerwise.calib_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert layerwise.calib_device() == "cuda"
    monkeypatch.setenv(layerwise.DEVICE_ENV, "cpu")
    assert layerwise.calib_device() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setenv(layerwise.DEVICE_ENV, "cuda:1")
    with pytest.raises(ConvertError, match="sees no CUDA device"):
        layerwise.calib_device()


def test_on_a_gpu_the_layer_loop_is_planned_against_its_memory_and_gptq_against_this_process_s():
    from medkit.convert.quant import memplan
    from medkit.errors import ConvertError

    GiB = 2**30
    tiny = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                num_key_value_heads=4)  # fmt: skip
    plan = memplan.plan_calibration(tiny, 8192)
    gpu = plan.on_gpu(80 * GiB)
    assert gpu.layer_loop == 0 and gpu.need(1) == plan.base + plan.gptq_block
    with pytest.raises(ConvertError) as err:
        plan.on_gpu(GiB // 4)
    assert "GPU memory" in err.value.message and "0.2 GiB is free" in err.value.message
    assert "MEDKIT_CALIB_DEVICE=cpu" in (err.value.hint or "")


def test_the_pass_reports_its_flops_and_mfu(tiny_model_dir, monkeypatch):
    from medkit.convert.quant.layerwise import collect_layerwise
    from medkit.train import flops

    monkeypatch.setenv(flops.PEAK_ENV, "1e9")
    model = tiny_model_dir("llama", **K_WIDE)
    im = collect_layerwise(model, _seqs(model, SHARED), grams=True, device="cpu")
    assert im.flops > 0 and "MFU" in im.mfu and "(MEDKIT_PEAK_FLOPS)" in im.mfu, im.mfu
