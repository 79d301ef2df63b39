"""medkit.models: what a base spec is, loading it, and the GGUF -> HF dequantization cache."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
import torch

from medkit import models
from medkit.errors import ModelError

PROMPT = [{"role": "user", "content": "What are the symptoms of the flu?"}]


# --- resolve_base -------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", ["TinyLlama/TinyLlama-1.1B-Chat-v1.0", "lavita/MedQuAD", "gpt2"])
def test_hub_ids(spec):
    base = models.resolve_base(spec)
    assert (base.kind, base.path, base.spec) == ("hub", None, spec)
    assert not base.is_local and not base.is_gguf


def test_local_folder_and_gguf(tiny_model_dir, smollm2_gguf):
    folder = tiny_model_dir("llama")
    base = models.resolve_base(str(folder))
    assert (base.kind, base.path) == ("local", folder.resolve())
    gguf = models.resolve_base(smollm2_gguf)
    assert (gguf.kind, gguf.path, gguf.is_gguf) == ("gguf", smollm2_gguf.resolve(), True)


def test_resolve_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "weights.bin").write_bytes(b"\0" * 8)
    cases = {
        str(tmp_path / "missing.gguf"): "GGUF base not found",
        str(tmp_path / "empty"): "no config.json",
        str(tmp_path / "weights.bin"): "unsupported model file",
        str(tmp_path / "no" / "such" / "dir"): "model folder not found",
        "./not-here": "model folder not found",
    }
    for spec, why in cases.items():
        with pytest.raises(ModelError) as err:
            models.resolve_base(spec)
        message = str(err.value)
        assert why in message and "\n" not in message
        assert spec.lstrip("./") in message
    with pytest.raises(ModelError, match="empty"):
        models.resolve_base("  ")


# --- load_tokenizer / load_model ----------------------------------------------------------------


def test_load_local_folder(tiny_model_dir, tmp_path):
    folder = tiny_model_dir("qwen2")
    model = models.load_model(folder, dtype="fp32")
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.dtype == torch.float32
    tok = models.load_tokenizer(str(folder))
    assert "<|im_start|>" in tok.apply_chat_template(PROMPT, tokenize=False)

    template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    assert models.load_tokenizer(folder, chat_template=template).apply_chat_template(
        PROMPT, tokenize=False
    ) == ("[user] What are the symptoms of the flu?\n")
    path = tmp_path / "t.jinja"
    path.write_text(template)
    assert models.load_tokenizer(folder, chat_template=str(path)).chat_template == template
    with pytest.raises(ModelError, match="chat template file not found"):
        models.load_tokenizer(folder, chat_template=str(tmp_path / "nope.jinja"))


def test_load_errors(tiny_model_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "config.json").write_text((tiny_model_dir("llama") / "config.json").read_text())
    with pytest.raises(ModelError, match=r"no tokenizer in .*bare"):
        models.load_tokenizer(bare)
    with pytest.raises(ModelError, match=r"no model weights .* in .*bare"):
        models.load_model(bare)
    with pytest.raises(ModelError, match="medkit-test/does-not-exist"):
        models.load_model("medkit-test/does-not-exist")  # offline and not in the HF cache
    with pytest.raises(ModelError, match="medkit-test/does-not-exist"):
        models.load_tokenizer("medkit-test/does-not-exist")
    with pytest.raises(ModelError, match="unknown dtype"):
        models.load_model(tiny_model_dir("llama"), dtype="float13")


# --- GGUF -> HF ---------------------------------------------------------------------------------


def test_dequantize_refuses_bad_input(tmp_path, smollm2_gguf):
    out = tmp_path / "out"
    with pytest.raises(ModelError, match="GGUF file not found"):
        models.dequantize_gguf_to_hf(tmp_path / "missing.gguf", out)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf at all")
    with pytest.raises(ModelError, match="not a GGUF file"):
        models.dequantize_gguf_to_hf(bad, out)
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(smollm2_gguf.read_bytes()[:2000])
    with pytest.raises(ModelError, match=r"cannot read GGUF .*truncated\.gguf"):
        models.dequantize_gguf_to_hf(truncated, out)
    header = tmp_path / "header.gguf"
    header.write_bytes(b"GGUF\x03\x00")
    with pytest.raises(ModelError, match="truncated header"):
        models.dequantize_gguf_to_hf(header, out)
    assert not out.exists()
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("x")
    with pytest.raises(ModelError, match="not empty"):
        models.dequantize_gguf_to_hf(smollm2_gguf, busy)
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]


def test_cache_location_follows_env(monkeypatch, tmp_path, smollm2_gguf):
    monkeypatch.setenv("MEDKIT_CACHE", str(tmp_path / "c"))
    sha = hashlib.sha256(smollm2_gguf.read_bytes()).hexdigest()
    assert models.dequantized_dir(smollm2_gguf) == tmp_path / "c" / "dequantized" / sha[:24]
    monkeypatch.delenv("MEDKIT_CACHE")
    assert models.cache_root().parts[-2:] == (".cache", "medkit")


def test_smollm2_hf_is_a_clean_hf_folder(smollm2_hf):
    names = {p.name for p in smollm2_hf.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= names
    assert not [n for n in names if n.endswith(".partial")]
    config = json.loads((smollm2_hf / "config.json").read_text())
    assert config["model_type"] == "llama" and "quantization_config" not in config
    assert config["num_hidden_layers"] == 30 and config["tie_word_embeddings"] is True
    gen = json.loads((smollm2_hf / "generation_config.json").read_text())
    assert gen["eos_token_id"] == 2
    tok = models.load_tokenizer(smollm2_hf)
    rendered = tok.apply_chat_template(PROMPT, tokenize=False, add_generation_prompt=True)
    assert rendered.endswith("<|im_start|>assistant\n") and tok.eos_token == "<|im_end|>"


def test_second_call_hits_cache(smollm2_gguf, smollm2_hf):
    weights = smollm2_hf / "model.safetensors"
    before = weights.stat().st_mtime_ns
    start = time.perf_counter()
    assert models.ensure_dequantized(smollm2_gguf) == smollm2_hf
    assert time.perf_counter() - start < 5
    assert weights.stat().st_mtime_ns == before


def test_weights_equal_gguf_py_dequantization(smollm2_gguf, smollm2_hf):
    """Independent check with the gguf package: tensors that need no reordering match bit for bit."""
    import gguf
    from safetensors import safe_open

    reader = gguf.GGUFReader(str(smollm2_gguf))
    by_name = {t.name: t for t in reader.tensors}
    pairs = {
        "token_embd.weight": "model.embed_tokens.weight",  # Q8_0
        "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",  # Q4_1
        "blk.29.attn_v.weight": "model.layers.29.self_attn.v_proj.weight",  # Q4_1
        "blk.0.attn_norm.weight": "model.layers.0.input_layernorm.weight",  # F32
    }
    with safe_open(str(smollm2_hf / "model.safetensors"), "pt") as st:
        for gguf_name, hf_name in pairs.items():
            t = by_name[gguf_name]
            rows = t.data[:64] if t.data.ndim == 2 else t.data  # the first rows are enough
            ref = torch.from_numpy(gguf.quants.dequantize(rows, t.tensor_type).copy()).float()
            ours = st.get_slice(hf_name)[: ref.shape[0]] if ref.ndim == 2 else st.get_tensor(hf_name)
            assert ours.dtype == torch.float32 and ours.shape == ref.shape, gguf_name
            assert torch.equal(ours, ref), gguf_name


def test_load_model_from_gguf_spec_uses_the_cache(smollm2_gguf, smollm2_hf):
    model = models.load_model(str(smollm2_gguf), dtype="float32")
    assert getattr(model, "hf_quantizer", None) is None
    assert getattr(model.config, "quantization_config", None) is None
    assert model.name_or_path == str(smollm2_hf)
    tok = models.load_tokenizer(smollm2_gguf)
    enc = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=6, do_sample=False)
    answer = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True).lower()
    assert any(word in answer for word in ("flu", "symptom", "fever", "influenza")), answer


@pytest.mark.slow
def test_reloaded_folder_matches_gguf_loaded_logits(smollm2_gguf, smollm2_hf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = AutoModelForCausalLM.from_pretrained(smollm2_hf).eval()
    assert getattr(folder, "hf_quantizer", None) is None
    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    ids = tok.apply_chat_template(PROMPT, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    reference = AutoModelForCausalLM.from_pretrained(
        smollm2_gguf.parent, gguf_file=smollm2_gguf.name, dtype=torch.float32
    ).eval()
    with torch.no_grad():
        a = folder(**ids).logits
        b = reference(**ids).logits
    assert a.shape == b.shape == (1, ids["input_ids"].shape[1], 49152)
    assert torch.allclose(a, b, atol=1e-5, rtol=0), (a - b).abs().max()


def test_smollm2_tokenizer_matches_llama_cpp(smollm2_gguf, smollm2_hf):
    """The tokenizer saved in the folder splits text as llama.cpp does with the GGUF's own vocab."""
    llama_cpp = pytest.importorskip("llama_cpp")
    llm = llama_cpp.Llama(model_path=str(smollm2_gguf), vocab_only=True, verbose=False)
    tok = models.load_tokenizer(smollm2_hf)
    for text in (
        "Patient: 45 ans, fièvre 38.5°C — naïve café 😷",
        "What are the symptoms of the flu?\n\nAnswer:  two  spaces",
        "<|im_start|>user\nHi<|im_end|>\n",
    ):
        assert tok.encode(text, add_special_tokens=False) == llm.tokenize(
            text.encode(), add_bos=False, special=True
        )


@pytest.mark.gpu
def test_dequantized_gguf_loads_in_4bit(smollm2_gguf):
    import bitsandbytes as bnb
    from transformers import BitsAndBytesConfig

    nf4 = BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )
    model = models.load_model(smollm2_gguf, dtype="bf16", device_map={"": 0}, quantization_config=nf4)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    ids = torch.tensor([[1, 4093, 198, 26843, 2, 198]], device="cuda")
    with torch.no_grad():
        assert torch.isfinite(model(input_ids=ids).logits).all()


def test_same_base_knows_copies_of_one_model(tmp_path):
    """A `package:` base resolves into each environment's site-packages: two copies are one base (init_from,
    eval --against), a different file or folder is not."""
    import json
    import shutil

    from medkit.models import same_base

    one, two, other = tmp_path / "venv1" / "m.gguf", tmp_path / "venv2" / "m.gguf", tmp_path / "o.gguf"
    for path, data in ((one, b"GGUF" + bytes(range(256)) * 40), (two, None), (other, b"GGUF" + bytes(10240))):
        path.parent.mkdir(parents=True, exist_ok=True)
        if data is None:
            shutil.copy(one, path)
        else:
            path.write_bytes(data)
    assert same_base(str(one), str(two)) and same_base("org/model", "org/model")
    assert not same_base(str(one), str(other)) and not same_base(str(one), None)
    assert not same_base("org/model", "org/other") and not same_base(str(one), "org/model")
    folders = []
    for name, width in (("a", 8), ("b", 8), ("c", 16)):
        d = tmp_path / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"hidden_size": width}))
        (d / "model.safetensors").write_bytes(bytes(width))
        folders.append(str(d))
    assert same_base(folders[0], folders[1]) and not same_base(folders[0], folders[2])
