"""The families of issue 35 (SmolLM3, Qwen3.5), beyond what the parametrized TINY-row tests cover
(test_tiny_export: tokens, f32/f16 greedy text, metadata; test_lora_gguf: adapter vs merged):

* the export equals llama.cpp's own converter on the same checkpoint (tests/convert/llama_cpp_oracle.py):
  tensor names, shapes, types and values, and the metadata;
* configs llama.cpp would run differently are refused in one line, nothing written;
* one training step -> merge -> f16 GGUF (greedy parity) -> GGUF LoRA adapter (vs merged) -> chat in the
  Runtime with the family's thinking switch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medkit.errors import ConvertError
from tests.convert.conftest import THREADS

LATE = ["smollm3"]


@pytest.mark.slow
@pytest.mark.parametrize("ftype", ["f32", "f16"])
@pytest.mark.parametrize("family", LATE)
def test_export_equals_llama_cpps_converter(family, ftype, tiny_model_dir, tiny_gguf, tmp_path):
    from tests.convert.llama_cpp_oracle import convert, diff

    ref = convert(tiny_model_dir(family), tmp_path / f"ref-{ftype}.gguf", ftype, pre="llama-bpe")
    assert diff(tiny_gguf(family, ftype), ref) == []


def _copy_with_config(src: Path, dest: Path, **changes) -> Path:
    shutil.copytree(src, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(changes)
    (dest / "config.json").write_text(json.dumps(cfg))
    return dest


# (family, config changes, words of the one-line refusal)
REFUSED = [
    ("smollm3", {"no_rope_layers": [1, 1, 0, 1]}, "no_rope_layers"),
    ("smollm3", {"no_rope_layers": [1, 1, 1, 1]}, "every 4th layer"),
    ("smollm3", {"no_rope_layers": None, "no_rope_layer_interval": 2}, "no_rope_layers"),
    ("smollm3", {"use_sliding_window": True, "sliding_window": 16}, "sliding-window"),
    ("smollm3", {"attention_bias": True}, "attention_bias"),
    ("smollm3", {"mlp_bias": True}, "mlp_bias"),
    ("smollm3", {"partial_rotary_factor": 0.5}, "partial rotary"),
    ("smollm3", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e6, "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0, "original_max_position_embeddings": 64}},
     "rope scaling 'llama3'"),
]  # fmt: skip


@pytest.mark.parametrize("family, changes, words", REFUSED, ids=[f"{f}-{w}" for f, _, w in REFUSED])
def test_configs_llama_cpp_would_run_differently_are_refused(
    family, changes, words, tiny_model_dir, tmp_path
):
    from medkit.convert.gguf_writer import write_gguf

    folder = _copy_with_config(tiny_model_dir(family), tmp_path / "m", **changes)
    out = tmp_path / "out.gguf"
    with pytest.raises(ConvertError, match=words) as err:
        write_gguf(folder, out, "f16")
    assert "\n" not in err.value.one_line()
    assert not out.exists() and not list(tmp_path.glob(".out.gguf*"))


def test_smollm3_nope_layer_matters_and_llama_cpp_skips_rope_there(tiny_model_dir, tiny_gguf):
    """The 4th layer's missing rope is what llama.cpp computes: transformers' logits with it equal
    llama.cpp's, and roping that layer too moves them far more than the difference."""
    import torch
    from transformers import AutoModelForCausalLM

    from tests.convert.test_lora_gguf import hf_logits, llama_logits, token_ids

    folder = tiny_model_dir("smollm3")
    ids = token_ids(folder)
    got = llama_logits(tiny_gguf("smollm3", "f32"), ids)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    want = hf_logits(model, ids)
    model.model.layers[3].self_attn.use_rope = 1
    roped = hf_logits(model, ids)
    diff = float(np.abs(got - want).max())
    moved = float(np.abs(roped - want).max())
    assert diff < 0.02 and moved > 20 * diff, (diff, moved)


@pytest.mark.parametrize("family", LATE)
def test_modelfile_template_and_stops(family, tiny_model_dir, tiny_gguf, tmp_path):
    from medkit.convert.modelfile import write_for_export

    write_for_export(tiny_model_dir(family), tmp_path, tiny_gguf(family, "f16"), None, log=lambda msg: None)
    text = (tmp_path / "Modelfile").read_text()
    assert 'PARAMETER stop "<|im_end|>"' in text and "<|im_start|>assistant" in text


# (family, thinking, how the rendered prompt ends)
THINKING = [
    ("smollm3", False, "<|im_start|>assistant\n<think>\n\n</think>\n"),
    ("smollm3", True, "<|im_start|>user\nFever?<|im_end|>\n<|im_start|>assistant\n"),
]


@pytest.mark.parametrize("family, thinking, end", THINKING)
def test_thinking_switch_in_training_and_the_runtime(family, thinking, end, tiny_model_dir, tiny_gguf):
    from transformers import AutoTokenizer

    from medkit.data.templates import render
    from medkit.runtime.engine import Runtime

    msgs = [{"role": "user", "content": "Fever?"}]
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir(family)))
    text = render(tok, msgs, generation_prompt=True, enable_thinking=thinking)
    assert text.endswith(end)
    with Runtime(tiny_gguf(family, "f16"), ctx=256, threads=THREADS, enable_thinking=thinking) as rt:
        assert rt.render(msgs) == text


@pytest.mark.slow
@pytest.mark.parametrize("family", LATE)
def test_train_merge_export_adapter_and_chat(family, tiny_model_dir, tmp_path):
    """One training step -> merge -> f16 GGUF at greedy parity with the merged model -> the GGUF LoRA over
    the base GGUF equals the merged GGUF -> the Runtime chats on the export and stops at the end of turn."""
    from medkit.convert import arch
    from medkit.convert.gguf_writer import write_gguf
    from medkit.convert.lora import write_lora_gguf
    from medkit.convert.merge import merge_run
    from medkit.convert.verify import held_out_texts, verify
    from medkit.recipe import recipe_from_dict
    from medkit.runs import RunDir
    from medkit.runtime.engine import Runtime
    from medkit.train.verb import train
    from tests.convert.test_lora_gguf import llama_logits, token_ids
    from tests.train.conftest import qa_rows

    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in qa_rows(24)))
    base = tiny_model_dir(family)
    raw = {
        "name": f"tiny-{family}", "model": {"base": str(base)},
        "data": {"source": str(src), "format": "qa", "max_seq_len": 96, "split_ratios": [0.75, 0.25, 0.0]},
        "lora": {"r": 4, "alpha": 8, "targets": ["auto"]},
        "train": {"max_steps": 2, "batch_size": 4, "grad_accum": 1, "lr": 5e-2, "eval_every": 0, "save_every": 0,
                  "log_every": 1, "output_dir": str(tmp_path / "runs" / family)},
    }  # fmt: skip
    result = train(recipe_from_dict(raw, source=f"{family}.toml"))
    run = RunDir(result.run_dir)
    adapter_cfg = json.loads((run.adapter / "adapter_config.json").read_text())
    assert set(adapter_cfg["target_modules"]) == set(arch.by_name(family).lora_targets)
    merged = merge_run(run)
    f16 = write_gguf(merged, tmp_path / "merged-f16.gguf", "f16").path
    (res,) = verify([f16], merged, texts=held_out_texts(), threads=THREADS)
    assert res.tokenization_ok and res.agreement >= 0.99, res
    lora = write_lora_gguf(run.adapter, tmp_path / "adapter.gguf", base_dir=base)
    base_f16 = write_gguf(base, tmp_path / "base-f16.gguf", "f16").path
    ids = token_ids(base)
    with_adapter, want = llama_logits(base_f16, ids, lora=lora), llama_logits(f16, ids)
    assert float(np.abs(with_adapter - want).max()) < 0.05
    assert float(np.abs(llama_logits(base_f16, ids) - want).max()) > 1e-3  # two steps moved the model
    with Runtime(f16, ctx=256, threads=THREADS) as rt:
        answer = rt.chat([{"role": "user", "content": "What is gout?"}], max_tokens=24, temperature=0.0)
    assert answer.stats.completion_tokens > 0 and "<|im_start|>" not in answer.text
