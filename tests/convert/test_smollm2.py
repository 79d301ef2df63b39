"""The real SmolLM2-135M-Instruct: f16 parity with transformers, and every quant type loads, answers, stops.

One f16 export and one quantization per type are shared by the whole session (tests/convert/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from medkit.convert.verify import MIXED_TEXT, gguf_type, verify
from tests.convert.conftest import QUANTS, THREADS, load_llama

pytestmark = pytest.mark.slow


def test_f16_and_quant_parity(smollm2_hf, smollm2_f16, smollm2_quants, capsys):
    from medkit.convert.verify import table

    paths = [smollm2_f16] + [smollm2_quants[q] for q in ("q8_0", "q4_0")]
    res = {r.type: r for r in verify(paths, smollm2_hf, threads=THREADS)}
    from rich.console import Console

    Console(width=120).print(table(list(res.values())))
    f16 = res["f16"]
    assert f16.tokenization_ok and f16.passed
    assert f16.agreement >= 0.99 and f16.max_logit_diff < 0.5
    assert abs(f16.ppl / f16.ppl_hf - 1) < 0.01
    # what quantization costs, measured: more bits, closer to the HF distribution
    assert res["f16"].kl_vs_hf < res["q8_0"].kl_vs_hf < res["q4_0"].kl_vs_hf
    assert res["q8_0"].agreement > 0.9 and res["q8_0"].ppl / f16.ppl < 1.05
    assert all(r.tokenization_ok for r in res.values())


def test_greedy_continuation_matches_transformers(smollm2_hf, smollm2_f16):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf, dtype=torch.float32).eval()
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "List three symptoms of dehydration."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    ids = tok(prompt)["input_ids"]
    with torch.no_grad():
        want = model.generate(torch.tensor([ids]), max_new_tokens=32, do_sample=False)[0].tolist()
    llm = load_llama(smollm2_f16, logits_all=True)
    assert llm.tokenize(prompt.encode(), add_bos=True, special=True) == ids
    assert llm.tokenize(MIXED_TEXT.encode(), add_bos=True, special=True) == tok(MIXED_TEXT)["input_ids"]
    llm.eval(ids)
    got = list(ids)
    for _ in range(len(want) - len(ids)):
        got.append(int(np.argmax(llm.scores[llm.n_tokens - 1])))
        llm.eval([got[-1]])
    assert got == want, tok.decode(got[len(ids) :]) + " != " + tok.decode(want[len(ids) :])


@pytest.mark.parametrize("qtype", QUANTS)
def test_every_quant_type_loads_answers_and_stops(qtype, smollm2_hf, smollm2_quants):
    from transformers import AutoTokenizer

    path = smollm2_quants[qtype]
    assert gguf_type(path) == qtype
    tok = AutoTokenizer.from_pretrained(smollm2_hf)
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is a fever? Answer in one short sentence."}],
        tokenize=False,
        add_generation_prompt=True,
    )
    out = load_llama(path, n_ctx=512).create_completion(prompt, max_tokens=96, temperature=0.0)
    choice = out["choices"][0]
    assert len(choice["text"].split()) >= 3, choice["text"]
    assert choice["finish_reason"] == "stop", "the model must stop on <|im_end|>"  # not on max_tokens
    assert "<|im_end|>" not in choice["text"]
