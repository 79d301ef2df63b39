"""Where a training step's time goes, and whether the FLOP count behind MFU is what torch executes.

    python -m benchmarks profile        (make bench-profile; MEDKIT_PROFILE_RECIPE / _STEPS change what runs)

A few optimizer steps of a recipe (the SmolLM2 CPU demo by default) run under torch.profiler with shapes
recorded, after two warm-up steps. Printed:
- tok/s and MFU of the profiled steps (the profiler itself costs a few percent);
- the step's time by kind (each op's own time): matmuls, attention, elementwise and copies, the optimizer,
  the rest (autograd, Python);
- the matmul FLOPs torch executed (every mm/addmm/addmm_, from its shapes) against what medkit.train.flops
  counts for the same batches without attention (attention is one fused kernel on CPU, not a matmul event):
  the count's honesty as a ratio. Two known gaps: the count includes the first layer's q/k/v input gradient,
  which is never computed (ratio above 1), and leaves out the padding that length-grouped batches still
  execute (below 1; MFU counts useful tokens only);
- the costliest matmul shapes at their in-step rate and at their rate timed alone (warm operands, a
  preallocated output), and the ceiling: the MFU a step would reach if nothing but its matmuls (each shape at
  the better of those two rates) and attention (at its in-step time) took time: what no elementwise fusion
  can pass. The peak is the faster of one measured before the isolated timings and one after.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

DEMO = Path(__file__).resolve().parents[1] / "recipes" / "smollm2_demo.toml"
MATMULS = {"aten::mm": 2, "aten::addmm": 3, "aten::addmm_": 3}  # op -> operands among its recorded shapes
# eager attention's score/value products: reported as attention
BATCHED = {"aten::bmm": 2, "aten::baddbmm": 3}


def matmul_flops(name: str, shapes: list[list[int]]) -> int:
    """2*m*k*n of one mm / addmm / addmm_ / bmm / baddbmm call from its recorded input shapes (0 otherwise)."""
    if name in MATMULS or name in BATCHED:
        ops = [s for s in shapes if s][: {**MATMULS, **BATCHED}[name]]
        a, b = ops[-2], ops[-1]  # addmm's first operand is the added matrix
        batch = a[0] if len(a) == 3 else 1
        return 2 * batch * a[-2] * a[-1] * b[-1]
    return 0


def kind(name: str) -> str:
    """The time table's row for one op."""
    low = name.lower()
    if name in MATMULS:
        return "matmul"
    if name in BATCHED or "scaled_dot_product" in low or "attention" in low:
        return "attention"
    if "adam" in low or low.startswith("optimizer"):
        return "optimizer"
    return "elementwise+copies" if name.startswith("aten::") else "autograd+python"


def build_trainer(recipe: Any, out: Path) -> Any:
    """medkit's trainer for `recipe`, as `medkit train` builds it, writing under `out`."""
    from accelerate import Accelerator

    from medkit import models
    from medkit.train import plan as lora
    from medkit.train.verb import _make_trainer, prepare_data

    plan = lora.plan_precision(recipe)
    acc = Accelerator(mixed_precision=plan.mixed_precision, cpu=plan.device == "cpu")
    tok = models.load_tokenizer(recipe.model.base)
    data = prepare_data(recipe, tok)
    model = lora.build_model(recipe, plan, local_device=acc.local_process_index)
    return _make_trainer(recipe, model, data, acc, plan, out, tok, None, None)


def profile(trainer: Any, steps: int = 3, warm: int = 2, isolate: bool = True) -> dict[str, Any]:
    """Profile `steps` optimizer steps of a built trainer (after `warm` unprofiled ones) and sum them up."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    for _ in range(warm):
        trainer.train_step()
    no_attn = dataclasses.replace(trainer.flop_model, attn=0)
    counted = counted_mm = tokens = 0
    with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            tokens += trainer.train_step()[2]
            counted += trainer.last_flops
            counted_mm += trainer.count_flops(trainer.last_batches, of=no_attn)
        wall = time.perf_counter() - t0
    by_kind: dict[str, float] = defaultdict(float)
    for avg in prof.key_averages():
        by_kind[kind(avg.key)] += avg.self_cpu_time_total / 1e6
    calls: dict[tuple[str, tuple[tuple[int, ...], ...]], list[float]] = defaultdict(list)
    for ev in prof.events():
        if ev.name in MATMULS:
            calls[(ev.name, tuple(tuple(s) for s in ev.input_shapes if s))].append(ev.cpu_time_total / 1e6)
    from medkit.train.flops import faster

    peak = trainer.measure_peak()
    shapes, executed = [], 0
    for (name, sh), times in calls.items():
        operands = [list(s) for s in sh]
        work = matmul_flops(name, operands)
        executed += work * len(times)
        alone = _time_alone(name, sh) if isolate else None
        shapes.append({
            "op": name, "shapes": operands, "calls": len(times), "seconds": sum(times),
            "in_step_gflops": work * len(times) / max(sum(times), 1e-9) / 1e9,
            "alone_gflops": work / alone / 1e9 if alone else None,
            "best_seconds": min(sum(times), (alone or float("inf")) * len(times)),  # the best rate seen
        })  # fmt: skip
    shapes.sort(key=lambda r: -r["seconds"])
    peak = faster(peak, trainer.measure_peak()) if isolate else peak  # a VM's speed moves: as run.json does
    # MFU and the ceiling over that one peak, so the ceiling bounds the MFU (its time is a part of the wall's)
    floor = sum(r["best_seconds"] for r in shapes) + by_kind["attention"]
    rate = peak.flops_per_s if peak else 0.0
    return {
        "steps": steps, "wall_s": wall, "tokens_per_s": tokens / wall, "flops": counted,
        "mfu": counted / wall / rate if rate else None, "peak": peak.as_dict() if peak else None,
        "seconds_by_kind": dict(by_kind), "matmul_flops_executed": executed, "matmul_flops_counted": counted_mm,
        "count_over_executed": counted_mm / executed if executed else None, "matmul_shapes": shapes,
        "ceiling_mfu": counted / floor / rate if isolate and rate and floor else None,
    }  # fmt: skip


def _time_alone(name: str, shapes: tuple[tuple[int, ...], ...]) -> float:
    """Best of five of one matmul of these shapes on warm random operands, into a preallocated output."""
    import torch

    ops = [torch.randn(*s) for s in shapes[: MATMULS[name]]]
    fn = torch.mm if name == "aten::mm" else torch.addmm
    out = fn(*ops)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        fn(*ops, out=out)
        best = min(best, time.perf_counter() - t0)
    return best


def report(r: dict[str, Any], top: int = 8) -> list[str]:
    mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
    peak = r["peak"]["flops_per_s"] / 1e9 if r["peak"] else 0.0
    lines = [
        f"{r['steps']} steps in {r['wall_s']:.2f} s: {r['tokens_per_s']:,.0f} tok/s, "
        f"{r['flops'] / r['wall_s'] / 1e9:.1f} GFLOP/s counted, MFU {mfu} of a {peak:.1f} GFLOP/s peak (profiled)",
        "time by kind (each op's own time):",
    ]
    total = sum(r["seconds_by_kind"].values()) or 1.0
    for k, s in sorted(r["seconds_by_kind"].items(), key=lambda kv: -kv[1]):
        lines.append(f"  {k:<20}{s:8.2f} s  {s / total:6.1%}")
    ratio = r["count_over_executed"]
    lines.append(
        f"matmul FLOPs: executed {r['matmul_flops_executed'] / 1e9:,.2f} G, counted by medkit.train.flops "
        f"(attention aside) {r['matmul_flops_counted'] / 1e9:,.2f} G: count / executed {ratio:.4f}"
        if ratio
        else "matmul FLOPs: none recorded"
    )
    lines.append("costliest matmuls (in step vs timed alone):")
    for s in r["matmul_shapes"][:top]:
        alone = f"{s['alone_gflops']:7.1f}" if s["alone_gflops"] else "      -"
        shape = " x ".join(str(tuple(x)) for x in s["shapes"])
        lines.append(
            f"  {s['op']:<13}{shape:<40} x{s['calls']:<4}{s['seconds']:6.2f} s "
            f"{s['in_step_gflops']:7.1f} GFLOP/s in step, {alone} alone"
        )
    if r["ceiling_mfu"] is not None:
        lines.append(
            f"ceiling (only matmuls, each at its better rate, + attention as in step): MFU {r['ceiling_mfu']:.1%}"
        )
    return lines


def main() -> dict[str, Any]:
    from medkit.recipe import load_recipe

    path = os.environ.get("MEDKIT_PROFILE_RECIPE") or str(DEMO)
    steps = int(os.environ.get("MEDKIT_PROFILE_STEPS", "3"))
    with tempfile.TemporaryDirectory() as out:
        recipe = load_recipe(path, [f"train.output_dir={out}", "train.save_every=0", "train.eval_every=0"])
        print(f"profiling {steps} steps of {path} ({recipe.model.base})", flush=True)
        result = profile(build_trainer(recipe, Path(out)), steps=steps)
    for line in report(result):
        print(line)
    print(json.dumps({k: v for k, v in result.items() if k != "matmul_shapes"}))
    return result
