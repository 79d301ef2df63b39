"""`medkit merge`: merged weights behave like base + adapter, files carried, NF4 path, bad input refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medkit.errors import ConvertError
from tests.convert.adapter.test_lora_gguf import _edited_base, hf_logits, make_adapter, token_ids

DEMO_DATA = Path(__file__).resolve().parents[3] / "recipes" / "data" / "medqa_demo.jsonl"


def _load(folder: Path):
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def _unmerged(base: Path, adapter: Path):
    from peft import PeftModel

    return PeftModel.from_pretrained(_load(base), str(adapter)).eval()


@pytest.fixture(scope="module")
def run_dir(tiny_model_dir, tmp_path_factory):
    """A run folder as medkit train leaves it: recipe.toml, run.json, adapter/ (with tokenizer)."""
    from medkit.runs import RunDir

    base = tiny_model_dir("llama")
    run = tmp_path_factory.mktemp("runs") / "tiny_llama"
    make_adapter(base, run / "adapter", b_std=0.02)
    (run / "recipe.toml").write_text(
        f'name = "tiny_llama"\n\n[model]\nbase = "{base}"\ndtype = "float32"\n\n'
        f'[data]\nsource = "{DEMO_DATA}"\nformat = "qa"\nmax_samples = 60\nmax_seq_len = 256\n\n'
        '[quant]\nmode = "nf4"\ncompute_dtype = "bfloat16"\n'
    )
    (run / "run.json").write_text(json.dumps({"name": "tiny_llama", "train": {"quantized": False}}))
    return RunDir(run)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_merged_model_matches_base_plus_adapter(tiny_model_dir, tmp_path, arch):
    from medkit.convert.adapter.merge import merge_adapter

    base = tiny_model_dir(arch)
    adapter = make_adapter(base, tmp_path / "adapter")
    out = merge_adapter(base, adapter, tmp_path / "merged")
    ids = token_ids(base)
    merged = hf_logits(_load(out), ids)
    unmerged = hf_logits(_unmerged(base, adapter), ids)
    diff = float(np.abs(merged - unmerged).max())
    effect = float(np.abs(hf_logits(_load(base), ids) - unmerged).max())
    print(f"{arch}: merged vs base+adapter max logit diff {diff:.2e} (adapter effect {effect:.2f})")
    assert diff < 1e-4 and effect > 0.1
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    record = json.loads((out / "medkit_merge.json").read_text())
    assert record["dtype"] == "float32" and record["from_4bit"] is False
    assert not list(tmp_path.glob(".merged*"))  # no temp folder left behind


def test_tokenizer_and_chat_template_are_carried(run_dir, tmp_path):
    from medkit.convert.adapter.merge import merge_run

    out = merge_run(run_dir, out=tmp_path / "merged")
    for name in ("tokenizer.json", "tokenizer.model"):
        if (run_dir.adapter / name).is_file():
            assert (out / name).read_bytes() == (run_dir.adapter / name).read_bytes()
    template = (out / "chat_template.jinja").read_text()
    assert "<|assistant|>" in template  # the tiny llama's zephyr-style template
    assert json.loads((out / "tokenizer_config.json").read_text())["chat_template"] == template
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.chat_template == template and len(tok) == len(
        AutoTokenizer.from_pretrained(str(run_dir.adapter))
    )
    assert run_dir.read_manifest()["merge"]["path"] == str(out)


def test_no_overwrite_without_force_and_atomic_replace(tiny_model_dir, tmp_path):
    from medkit.convert.adapter.merge import merge_adapter

    base = tiny_model_dir("qwen2")
    adapter = make_adapter(base, tmp_path / "adapter", target_modules=["q_proj", "v_proj"])
    out = tmp_path / "merged"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ConvertError, match="--force"):
        merge_adapter(base, adapter, out)
    assert (out / "keep.txt").read_text() == "mine"
    merge_adapter(base, adapter, out, force=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter", "merged"]


def test_adapter_of_another_base_is_refused(tiny_model_dir, tmp_path):
    from medkit.convert.adapter.merge import merge_adapter

    base = tiny_model_dir("llama")
    adapter = make_adapter(base, tmp_path / "adapter", target_modules=["q_proj", "down_proj"])
    other = _edited_base(base, tmp_path / "other", hidden_size=128, num_hidden_layers=3)
    with pytest.raises(
        ConvertError, match=r"hidden size 64 vs 128.*layers 2 vs 3|layers 2 vs 3.*hidden size"
    ):
        merge_adapter(other, adapter, tmp_path / "merged")
    with pytest.raises(ConvertError, match="architecture"):
        merge_adapter(tiny_model_dir("gpt2"), adapter, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_from_4bit_merges_into_the_nf4_rounded_weights(tiny_model_dir, tmp_path):
    """--from-4bit: merged weight - 16-bit merged weight == NF4 round trip of the base weight - base weight,
    with the round trip computed independently by bitsandbytes' functional API."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes.functional as bnbf
    import torch
    from safetensors.torch import load_file

    from medkit.convert.adapter.merge import Quant, merge_adapter

    base = tiny_model_dir("llama")
    adapter = make_adapter(base, tmp_path / "adapter", target_modules=["q_proj", "down_proj"])
    quant = Quant(mode="nf4", double_quant=True, compute_dtype="bfloat16")
    w16 = load_file(str(merge_adapter(base, adapter, tmp_path / "m16") / "model.safetensors"))
    w4 = load_file(
        str(merge_adapter(base, adapter, tmp_path / "m4", from_4bit=True, quant=quant) / "model.safetensors")
    )
    w0 = load_file(str(base / "model.safetensors"))
    key = "model.layers.1.mlp.down_proj.weight"
    w = w0[key].to(torch.bfloat16)
    packed, state = bnbf.quantize_4bit(
        w, blocksize=64, quant_type="nf4", compress_statistics=True, quant_storage=torch.bfloat16
    )
    rounding = bnbf.dequantize_4bit(packed, state).float() - w0[key]
    assert float(rounding.abs().max()) > 1e-3  # NF4 really moved the weights
    torch.testing.assert_close(w4[key] - w16[key], rounding, atol=1e-5, rtol=0)
    emb = "model.embed_tokens.weight"  # not quantized, but loaded in the compute dtype, as in training
    torch.testing.assert_close(w4[emb], w0[emb].to(torch.bfloat16).float(), atol=0, rtol=0)
    assert json.loads((tmp_path / "m4" / "medkit_merge.json").read_text())["from_4bit"] is True


def test_cli_merge_with_report(run_dir, tmp_path, capsys):
    from medkit.cli import main

    out = tmp_path / "merged"
    with pytest.raises(SystemExit) as exc:
        main(["merge", str(run_dir.path), "--out", str(out), "--report", "--max-examples", "4"])
    printed = capsys.readouterr()
    assert exc.value.code == 0, printed.err
    assert f"wrote {out}" in printed.out and "val perplexity" in printed.out
    report = run_dir.read_manifest()["merge_report"]
    ppl = report["perplexity"]
    print(json.dumps(report, indent=1))
    assert report["examples"] == 4 and report["split"] == "val"
    assert report["merged_vs_unmerged_rel_diff"] < 1e-4  # merging changes nothing but the layout
    assert ppl["merged_saved"] == pytest.approx(ppl["adapter_unmerged"], rel=1e-4)
    assert ppl["base"] != pytest.approx(ppl["adapter_unmerged"], rel=1e-3)
    if "note" not in ppl:  # bitsandbytes could load 4-bit here: both NF4 choices are measured too
        assert {"merged_from_4bit", "4bit_adapter_unmerged"} <= set(ppl)
        assert ppl["merged_from_4bit"] == pytest.approx(ppl["4bit_adapter_unmerged"], rel=2e-2)


def test_cli_errors_are_one_line(tmp_path, capsys, monkeypatch):
    from medkit.cli import main

    monkeypatch.setenv("MEDKIT_RUNS", str(tmp_path / "runs"))
    for args in (["merge", str(tmp_path / "nope")], ["merge"]):
        with pytest.raises(SystemExit) as exc:
            main(args)
        err = capsys.readouterr().err.strip()
        assert exc.value.code != 0 and err.startswith("error:") and "\n" not in err
    run = tmp_path / "runs" / "broken"
    (run / "adapter").mkdir(parents=True)
    (run / "recipe.toml").write_text(
        f'name = "broken"\n[model]\nbase = "{tmp_path / "missing"}"\n[data]\nsource = "{DEMO_DATA}"\n'
    )
    with pytest.raises(SystemExit) as exc:
        main(["merge", str(run)])
    err = capsys.readouterr().err.strip()  # a recipe error lists its problems, one per line
    assert exc.value.code != 0 and err.startswith("error:") and "model.base" in err and "Traceback" not in err
    assert not (run / "export").exists()
    shutil.rmtree(run)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_a_plain_lora_merges_tensor_by_tensor_into_peft_s_weights(
    tiny_model_dir, tmp_path, monkeypatch, arch
):
    """A plain LoRA adapter into a safetensors base streams (the model is never loaded: load_base would fail)
    and every tensor equals PEFT's merge_and_unload (fan_in_fan_out for GPT-2's Conv1D, rsLoRA scaling);
    DoRA takes PEFT's merge and says why."""
    import torch
    from safetensors.torch import load_file

    from medkit.convert.adapter import merge
    from medkit.convert.adapter.merge_stream import stream_reason

    base = tiny_model_dir(arch)
    adapter = make_adapter(base, tmp_path / "adapter", merged=tmp_path / "peft", use_rslora=True)
    monkeypatch.setattr(
        merge, "load_base", lambda *a, **k: pytest.fail("the streaming merge loaded the model")
    )
    said: list[str] = []
    out = merge.merge_adapter(base, adapter, tmp_path / "merged", dtype="float32", log=said.append)
    assert "streamed tensor by tensor" in said[0]
    assert json.loads((out / "medkit_merge.json").read_text())["streamed"] is True
    ours, peft = (
        load_file(str(out / "model.safetensors")),
        load_file(str(tmp_path / "peft" / "model.safetensors")),
    )
    assert set(peft) <= set(ours)
    for name, w in peft.items():
        torch.testing.assert_close(ours[name], w, rtol=1e-5, atol=1e-6, msg=name)
    dora = make_adapter(base, tmp_path / "dora", use_dora=True)
    assert stream_reason(base, dora) == "the adapter sets use_dora"
