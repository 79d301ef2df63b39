"""The real model: a LoRA adapter on SmolLM2-135M-Instruct, merged by medkit and written as a GGUF adapter,
applied by llama.cpp over the f16 export, the shipped Q4_1 GGUF and a q4_0 requantization (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.convert.adapter.test_lora_gguf import hf_logits, llama_logits, make_adapter
from tests.convert.conftest import THREADS

pytestmark = pytest.mark.slow
PROMPT = "<|im_start|>user\nWhat are the symptoms of asthma?<|im_end|>\n<|im_start|>assistant\n"


def greedy(model, ids: list[int], n: int, lora=None) -> list[int]:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model), lora_path=str(lora) if lora else None, n_ctx=256, n_batch=256,
        n_threads=THREADS, logits_all=True, verbose=False,
    )  # fmt: skip
    # logits_all=True as in llama_logits: once, in a full-suite run, the last-row-only path returned an
    # all-zero first row for the merged f16 model (not reproduced alone); see the closing note.
    llm.eval(ids)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(nxt)
        llm.eval([nxt])
    llm.close()
    return out


@pytest.fixture(scope="module")
def smol(smollm2_hf, smollm2_gguf, smollm2_f16, tmp_path_factory):
    from transformers import AutoTokenizer

    from medkit.convert.adapter.lora import write_lora_gguf
    from medkit.convert.adapter.merge import merge_adapter
    from medkit.convert.gguf.writer import write_gguf
    from medkit.convert.quant.quantize import quantize

    root = tmp_path_factory.mktemp("smol-lora")
    adapter = make_adapter(smollm2_hf, root / "adapter", b_std=0.004)
    paths = {"hf": smollm2_hf, "shipped": smollm2_gguf, "f16": smollm2_f16, "adapter": adapter, "root": root}
    paths["adapter_gguf"] = write_lora_gguf(adapter, root / "adapter.gguf", base_dir=smollm2_hf)
    # medkit merge with the recipe-style base: the shipped .gguf (dequantized once, cached)
    paths["merged"] = merge_adapter(smollm2_gguf, adapter, root / "merged")
    paths["merged_f16"] = write_gguf(paths["merged"], root / "merged-f16.gguf", "f16").path
    for name, src in (("q4_0", smollm2_f16), ("merged_q4_0", paths["merged_f16"])):
        paths[name] = root / f"{name}.gguf"
        quantize(src, paths[name], "q4_0", threads=THREADS)
    tok = AutoTokenizer.from_pretrained(str(smollm2_hf))
    paths["ids"] = tok(PROMPT + "Asthma is a chronic disease of the airways that causes wheezing.")[
        "input_ids"
    ]
    paths["prompt"] = tok(PROMPT)["input_ids"]
    return paths


def test_merge_with_the_gguf_as_base(smol):
    """Every adapted weight of medkit's merge equals base + (alpha / r) * B @ A, computed here from the files."""
    from safetensors.numpy import load_file

    merged = load_file(str(smol["merged"] / "model.safetensors"))
    base = load_file(str(smol["hf"] / "model.safetensors"))
    lora = load_file(str(smol["adapter"] / "adapter_model.safetensors"))
    checked = 0
    for key, a in lora.items():
        if ".lora_A." not in key:
            continue
        b = lora[key.replace(".lora_A.", ".lora_B.")]
        name = key.replace("base_model.model.", "").replace(".lora_A.weight", ".weight")
        want = base[name] + (16 / 8) * (b @ a)
        np.testing.assert_allclose(merged[name], want, atol=2e-6, rtol=0)
        checked += 1
    assert checked == 30 * 7
    untouched = "model.layers.0.input_layernorm.weight"
    assert np.array_equal(merged[untouched], base[untouched])
    assert (smol["merged"] / "chat_template.jinja").is_file()


def test_adapter_over_f16_matches_merged_f16(smol):
    with_adapter = llama_logits(smol["f16"], smol["ids"], lora=smol["adapter_gguf"])
    merged = llama_logits(smol["merged_f16"], smol["ids"])
    effect = float(np.abs(llama_logits(smol["f16"], smol["ids"]) - merged).max())
    diff = float(np.abs(with_adapter - merged).max())
    agree = float((with_adapter.argmax(-1) == merged.argmax(-1)).mean())
    g_adapter = greedy(smol["f16"], smol["prompt"], 24, lora=smol["adapter_gguf"])
    g_merged = greedy(smol["merged_f16"], smol["prompt"], 24)
    print(f"SmolLM2 f16: adapter-vs-merged max logit diff {diff:.3f} (effect {effect:.2f}), top-1 {agree:.3f}, "
          f"greedy {_prefix(g_adapter, g_merged)}/24 tokens equal")  # fmt: skip
    assert diff < effect / 20 and agree >= 0.97 and _prefix(g_adapter, g_merged) >= 20


def _prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def test_adapter_over_quantized_bases(smol):
    """Shipped Q4_1 and a q4_0 requantization: base + adapter in llama.cpp equals the adapter merged into
    the dequantized weights of that very GGUF (the shipped one is smollm2_hf itself)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = smol["ids"]
    for name in ("shipped", "q4_0"):
        gguf_path = smol[name]
        with_adapter = llama_logits(gguf_path, ids, lora=smol["adapter_gguf"])
        base = llama_logits(gguf_path, ids)
        if name == "shipped":
            deq = AutoModelForCausalLM.from_pretrained(str(smol["hf"]), dtype=torch.float32)
        else:
            deq = AutoModelForCausalLM.from_pretrained(
                str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32
            )
        hf_base = hf_logits(deq, ids)
        ref = hf_logits(PeftModel.from_pretrained(deq, str(smol["adapter"])).merge_and_unload(), ids)
        noise = float(np.abs(base - hf_base).max())  # llama.cpp vs transformers on the same weights
        diff = float(np.abs(with_adapter - ref).max())
        effect = float(np.abs(ref - hf_base).max())
        agree = float((with_adapter.argmax(-1) == ref.argmax(-1)).mean())
        print(f"SmolLM2 {name}: adapter in llama.cpp vs merged in transformers max logit diff {diff:.3f} "
              f"(same-weights noise {noise:.3f}, adapter effect {effect:.2f}), top-1 {agree:.3f}")  # fmt: skip
        assert diff < 1.5 * noise + 0.2 and agree >= 0.95
    # the merged model quantized on its own differs from base + adapter by q4_0's own rounding
    merged_q = llama_logits(smol["merged_q4_0"], ids)
    adapter_q = llama_logits(smol["q4_0"], ids, lora=smol["adapter_gguf"])
    base_q = llama_logits(smol["q4_0"], ids)
    agree = float((adapter_q.argmax(-1) == merged_q.argmax(-1)).mean())
    print(f"SmolLM2 q4_0: adapter-over-q4_0 vs merged-q4_0 max logit diff {np.abs(adapter_q - merged_q).max():.3f}, "
          f"top-1 {agree:.3f} (base-q4_0 vs merged-q4_0 top-1 {(base_q.argmax(-1) == merged_q.argmax(-1)).mean():.3f})")  # fmt: skip
