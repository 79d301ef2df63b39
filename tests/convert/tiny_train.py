"""One family's round trip on a tiny model, shared by the family tests: two LoRA steps on Q&A rows, the
merge written as an f16 GGUF at greedy parity with the merged model, and the adapter as a GGUF LoRA over the
base GGUF equal to the merged GGUF."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from tests.convert.conftest import THREADS


def two_steps(family: str, base: Path, tmp_path: Path) -> Any:
    """The RunDir of two training steps of ``family``'s tiny ``base`` (every auto LoRA target adapted, the
    losses finite)."""
    from medkit.convert import arch
    from medkit.recipe import recipe_from_dict
    from medkit.runs import RunDir
    from medkit.train.verb import train
    from tests.train.conftest import qa_rows

    src = tmp_path / "qa.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in qa_rows(24)))
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
    records = [json.loads(x) for x in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert all(np.isfinite(r["loss"]) for r in records if "loss" in r)
    return run


def merged_f16(run: Any, tmp_path: Path, family: str) -> tuple[Path, Any]:
    """(the merge as an f16 GGUF, its verify result against the merged model)."""
    from medkit.convert.adapter.merge import merge_run
    from medkit.convert.gguf.writer import write_gguf
    from medkit.convert.verify import held_out_texts, verify

    merged = merge_run(run)
    f16 = write_gguf(merged, tmp_path / "merged-f16.gguf", "f16").path
    (res,) = verify([f16], merged, texts=held_out_texts(), threads=THREADS)
    if family == "gemma4" and res.agreement < 0.99:  # f16 near-ties of the tiny PLE model: f32 must agree
        f32 = write_gguf(merged, tmp_path / "merged-f32.gguf", "f32").path
        (res,) = verify([f32], merged, texts=held_out_texts(), threads=THREADS)
        assert res.kl_vs_hf < 1e-4, res
    return f16, res


def adapter_equals_merge(run: Any, base: Path, f16: Path, tmp_path: Path) -> None:
    """The run's adapter as a GGUF LoRA over the base's f16 GGUF gives the merged GGUF's logits, and they
    differ from the base's (two steps moved the model)."""
    from medkit.convert.adapter.lora import write_lora_gguf
    from medkit.convert.gguf.writer import write_gguf
    from tests.convert.adapter.test_lora_gguf import llama_logits, token_ids

    lora = write_lora_gguf(run.adapter, tmp_path / "adapter.gguf", base_dir=base)
    base_f16 = write_gguf(base, tmp_path / "base-f16.gguf", "f16").path
    ids = token_ids(base)
    with_adapter, want = llama_logits(base_f16, ids, lora=lora), llama_logits(f16, ids)
    assert float(np.abs(with_adapter - want).max()) < 0.05
    assert float(np.abs(llama_logits(base_f16, ids) - want).max()) > 1e-3
