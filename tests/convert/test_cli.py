"""`medkit export` on a run (provenance, Modelfile, parity in run.json) and `medkit verify`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from medkit.cli import cli
from medkit.errors import ConvertError

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def run_dir(tiny_model_dir, tmp_path, monkeypatch) -> Path:
    """runs/demo as `medkit train` + `medkit merge` leave it, with the tiny qwen2 as the merged model."""
    runs = tmp_path / "runs"
    run = runs / "demo"
    shutil.copytree(tiny_model_dir("qwen2"), run / "export" / "merged")
    recipe = (REPO / "recipes" / "smollm2_demo.toml").read_text()
    data = (REPO / "recipes" / "data" / "medqa_demo.jsonl").resolve()
    (run / "recipe.toml").write_text(recipe.replace('"data/medqa_demo.jsonl"', json.dumps(str(data))))
    manifest = {
        "name": "demo",
        "base_model": "tiny-qwen2",
        "recipe_fingerprint": "rfp-123",
        "data": {"fingerprint": "dfp-456", "template": "chatml"},
    }
    (run / "run.json").write_text(json.dumps(manifest))
    monkeypatch.setenv("MEDKIT_RUNS", str(runs))
    return run


def test_export_latest_run(run_dir):
    import gguf

    res = CliRunner().invoke(cli, ["export", "--gguf", "f16,q8_0", "--threads", "1"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    export = run_dir / "export"
    f16, q8 = export / "demo-f16.gguf", export / "demo-q8_0.gguf"
    assert f16.is_file() and q8.is_file()
    assert not list(export.glob(".*")), "no temp or intermediate files left"
    for path in (f16, q8):  # llama.cpp's quantizer carries the metadata over
        reader = gguf.GGUFReader(str(path))
        meta = {k: reader.get_field(k).contents() for k in reader.fields if k.startswith("medkit.")}
        assert meta["medkit.base_model"] == "tiny-qwen2"
        assert meta["medkit.data.fingerprint"] == "dfp-456"
        assert meta["medkit.recipe.fingerprint"] == "rfp-123"
        assert len(meta["medkit.recipe.sha256"]) == 64
        assert reader.get_field("general.name").contents() == "demo"
    modelfile = (export / "Modelfile").read_text()
    assert "FROM ./demo-f16.gguf" in modelfile and "<|im_end|>" in modelfile
    assert 'SYSTEM "You are a careful medical information assistant.' in modelfile  # from the recipe
    assert "PARAMETER temperature 0.7" in modelfile and "PARAMETER top_p 0.9" in modelfile
    parity = json.loads((run_dir / "run.json").read_text())["parity"]
    assert parity["f16"]["passed"] and parity["f16"]["agreement"] >= 0.99
    assert parity["f16"]["tokenization_ok"]
    assert parity["q8_0"]["positions"] > parity["f16"]["positions"] - 1 > 100  # val rows were added
    assert "top-1 agree" in res.output and "PASS" in res.output
    # a twin written elsewhere (--out) is recorded under its folder: export/'s own record stays
    other = run_dir / "export-plain"
    res = CliRunner().invoke(cli, ["export", "--gguf", "q8_0", "--out", str(other), "--no-modelfile"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    again = json.loads((run_dir / "run.json").read_text())["parity"]
    assert again["q8_0"] == parity["q8_0"] and again["export-plain/q8_0"]["gguf"] == str(
        other / "demo-q8_0.gguf"
    )


def test_verify_command(tiny_gguf, tiny_model_dir):
    ok = CliRunner().invoke(
        cli, ["verify", str(tiny_gguf("gpt2", "f16")), "--against", str(tiny_model_dir("gpt2"))]
    )
    assert ok.exit_code == 0, ok.output
    assert "PASS" in ok.output
    wrong = CliRunner().invoke(
        cli, ["verify", str(tiny_gguf("gpt2", "f16")), "--against", str(tiny_model_dir("qwen2"))]
    )
    assert isinstance(wrong.exception, ConvertError)
    assert "parity failed for f16" in str(wrong.exception)


def test_adapter_only_and_shared_base(tiny_model_dir, tmp_path, monkeypatch):
    """--adapter-only writes export/adapter.gguf; --base writes the base GGUF once; llama.cpp runs both."""
    import gguf
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tests.convert.conftest import THREADS

    base = tiny_model_dir("llama")
    run = tmp_path / "runs" / "patient"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    peft_model.save_pretrained(run / "adapter")
    (run / "run.json").write_text(json.dumps({"name": "patient", "base_model": str(base)}))
    monkeypatch.setenv("MEDKIT_RUNS", str(tmp_path / "runs"))

    res = CliRunner().invoke(cli, ["export", "--adapter-only"])
    assert res.exit_code == 0, res.output + repr(res.exception)
    adapter = run / "export" / "adapter.gguf"
    reader = gguf.GGUFReader(str(adapter))
    assert reader.get_field("general.type").contents() == "adapter"
    assert reader.get_field("medkit.base_model").contents() == str(base)

    first = CliRunner().invoke(cli, ["export", "--base", "--gguf", "q8_0"])
    assert first.exit_code == 0, first.output + repr(first.exception)
    shared = sorted((tmp_path / "runs" / "_bases").glob("base-*-q8_0.gguf"))
    assert len(shared) == 1
    again = CliRunner().invoke(cli, ["export", "--base", "--gguf", "q8_0"])
    assert again.exit_code == 0 and "already there, shared" in again.output

    from llama_cpp import Llama

    llm = Llama(
        model_path=str(shared[0]), lora_path=str(adapter), n_ctx=128, n_threads=THREADS, verbose=False
    )
    assert (
        llm.create_completion("The patient", max_tokens=4, temperature=0.0)["choices"][0]["text"] is not None
    )
