"""Training throughput: the seed notebooks' recipe (HF Trainer) against medkit's trainer, same model and data.

    python -m benchmarks train          (make bench)

(a) seed recipe: HF Trainer + peft, bitsandbytes NF4 on CUDA, random batches with dynamic padding, batch 8 x
    accumulation 4, r=64 on every linear layer, bf16 (CUDA), gradient checkpointing, full-vocabulary loss.
(b) medkit: medkit.train.loop with the recipe defaults (NF4 on CUDA, r=16 on attention+MLP, batch 4 x 4,
    length-grouped batches, selective cross-entropy, gradient checkpointing).
(c) medkit at the seed's settings: the same engine with r=64 (alpha 16, dropout 0.1) on every linear layer,
    batch 8 x accumulation 4, gradient checkpointing and the seed's optimizer: the same work as (a), so
    (c)/(a) is the engine's gain and (b)/(c) the gain of the defaults.
(d) (b) with train.compile = on (decoder layers through inductor; random ops from eager's generator, so the
    losses are eager's), (e) (b) with the old LoRA dropout 0.05 and (f) (b) with train.fuse = off (PEFT's own
    forward for every LoRA projection; (b) runs q/k/v, gate/up and the lone ones as train.lora_fn functions): each engine change's effect against (b), printed as a
    ratio (MEDKIT_BENCH_EXTRA=0 skips them).
Both see the same random-weight model (TinyLlama-1.1B's shape on CUDA; a 4-layer, hidden-256 llama with a
32k vocabulary on CPU) and the same example lengths (MedQuAD-like, mean ~290 tokens; a quarter on CPU).
Printed: non-pad tokens/s (after one warm-up step), peak memory (CUDA max allocated, else peak RSS
growth), MFU (training FLOPs counted by medkit.train.flops for what each side computes, over this machine's dense
matmul peak, measured in this run on the MLP's shape: fp32 on CPU, bf16 on CUDA; best of a measurement
before and one after the contestants) and the ratios. Set MEDKIT_BENCH_STEPS to change the number of timed optimizer steps, and
MEDKIT_BENCH_SHAPE=tinyllama | tinyllama-2l | tiny | smollm2 | mistral7b to pick the shape (tinyllama-2l: TinyLlama's width,
vocab and example lengths with 2 of its 22 layers, which a CPU can time in minutes; smollm2: the CPU demos' model).
"""

from __future__ import annotations

import gc
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkit.train.flops import ModelFlops, measure_peak, mfu, mlp_tokens

TINYLLAMA = dict(
    hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
    vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
)  # fmt: skip
MISTRAL7B = dict(
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
    vocab_size=32000, max_position_embeddings=4096, rms_norm_eps=1e-5, rope_theta=1000000.0,
)  # fmt: skip
SMOLLM2 = dict(
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
    vocab_size=49152, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=100000.0,
)  # fmt: skip
CPU_SHAPE = dict(
    hidden_size=256, intermediate_size=688, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
    vocab_size=32000, max_position_embeddings=1024, rms_norm_eps=1e-5, rope_theta=10000.0,
)  # fmt: skip

# MEDKIT_BENCH_SHAPE -> (config, what the header line calls it)
SHAPES = {
    "tinyllama": (TINYLLAMA, "TinyLlama-1.1B shape"),
    "tinyllama-2l": ({**TINYLLAMA, "num_hidden_layers": 2}, "TinyLlama-1.1B width and vocab, 2 layers"),
    "tiny": (CPU_SHAPE, "4-layer hidden-256 llama, 32k vocab"),
    "smollm2": (SMOLLM2, "SmolLM2-135M shape (the CPU demos' model)"),
    "mistral7b": (MISTRAL7B, "Mistral-7B shape (llama layout, GQA 32/8)"),
}


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def make_examples(n: int, mean_len: int, max_len: int, vocab: int, seed: int = 0) -> list[Example]:
    """Lengths drawn log-normally around `mean_len` (long tail, like MedQuAD answers); ~35% prompt, masked."""
    import numpy as np

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(np.log(mean_len) - 0.18, 0.6, n).astype(int), 16, max_len)
    out = []
    for n_tok in lengths:
        ids = rng.integers(3, vocab, int(n_tok)).tolist()
        prompt = max(1, int(0.35 * n_tok))
        out.append(Example(ids, [-100] * prompt + ids[prompt:]))
    return out


class PeakMemory:
    """Peak CUDA allocation, or peak process RSS above the level at start (sampled every 5 ms)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def __enter__(self) -> PeakMemory:
        import torch

        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.base = 0
        else:
            import psutil

            self.proc = psutil.Process()
            self.base = self.peak = self.proc.memory_info().rss
            self.running = True
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc: Any) -> None:
        import torch

        if self.cuda:
            self.gib = torch.cuda.max_memory_allocated() / 2**30
        else:
            self.running = False
            self.thread.join()
            self.gib = (self.peak - self.base) / 2**30


def seed_recipe(
    model_dir: Path, examples: list[Example], steps: int, cuda: bool, peak: Any = None
) -> dict[str, float]:
    """(a): the notebooks' HF Trainer recipe. Returns tokens/s over steps 2.., peak memory and MFU."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        BitsAndBytesConfig,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    counted: list[list[int]] = []  # non-pad lengths of each micro-batch's rows

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:  # dynamic padding (DataCollatorForSeq2Seq)
        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            k = len(r["input_ids"])
            ids[i, :k], labels[i, :k], mask[i, :k] = (
                torch.tensor(r["input_ids"]),
                torch.tensor(r["labels"]),
                1,
            )
        counted.append([len(r["input_ids"]) for r in rows])
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            if cuda:
                torch.cuda.synchronize()
            if state.global_step == 1:
                self.t1, self.n1 = time.perf_counter(), len(counted)
            self.t_end, self.n_end = time.perf_counter(), len(counted)

    with PeakMemory(cuda) as mem:
        kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if cuda else torch.float32}
        if cuda:
            kwargs["quantization_config"] = BitsAndBytesConfig(
                load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )  # fmt: skip
            kwargs["device_map"] = {"": 0}
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        model.config.use_cache = False
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
        targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        model = get_peft_model(model, LoraConfig(r=64, lora_alpha=16, lora_dropout=0.1, target_modules=targets,
                                                 bias="none", task_type="CAUSAL_LM"))  # fmt: skip
        rows = [{"input_ids": e.input_ids, "labels": e.labels} for e in examples]
        with tempfile.TemporaryDirectory() as out:
            args = TrainingArguments(
                output_dir=out, per_device_train_batch_size=8, gradient_accumulation_steps=4, max_steps=steps + 1,
                learning_rate=2e-4, lr_scheduler_type="cosine", warmup_steps=0.03, bf16=cuda, use_cpu=not cuda,
                gradient_checkpointing=True, optim="paged_adamw_8bit" if cuda else "adamw_torch",
                logging_steps=1000, save_strategy="no", report_to="none", remove_unused_columns=False,
                dataloader_pin_memory=False, disable_tqdm=True, seed=0,
            )  # fmt: skip
            clock = Clock()
            trainer = Trainer(
                model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[clock]
            )
            trainer.train()
    timed = counted[clock.n1 : clock.n_end]
    mf = ModelFlops.from_model(model)  # full-vocabulary loss: the head runs on every token
    work = sum(mf.step(lens, sum(lens), grad_checkpointing=True).total for lens in timed)
    result = _result(sum(map(sum, timed)), work, clock.t_end - clock.t1, mem.gib, peak)
    del trainer, model
    gc.collect()
    return result


def seed_settings(cuda: bool) -> dict[str, Any]:
    """(c): the seed recipe's settings as medkit recipe keys."""
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    return {
        "lora": {"r": 64, "alpha": 16, "dropout": 0.1, "targets": targets},
        "train": {"batch_size": 8, "grad_accum": 4, "grad_checkpointing": True,
                  "optimizer": "paged_adamw_8bit" if cuda else "adamw"},
    }  # fmt: skip


# Rows beside (b), one engine change each (MEDKIT_BENCH_EXTRA=0 skips them): key -> (label, recipe sections)
EXTRA_ROWS = {
    "medkit_compiled": ("(d) (b) + train.compile = on (inductor, eager RNG):", {"train": {"compile": "on"}}),
    "medkit_dropout": ("(e) (b) with lora.dropout = 0.05 (the old default):", {"lora": {"dropout": 0.05}}),
    "medkit_unfused": (
        "(f) (b) with train.fuse = off (PEFT's separate matmuls):",
        {"train": {"fuse": "off"}},
    ),
}


def medkit_run(
    model_dir: Path,
    examples: list[Example],
    steps: int,
    cuda: bool,
    data_file: Path,
    peak: Any = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, float]:
    """(b): medkit's trainer with the recipe defaults, or (c) with `settings` (recipe sections) over them."""
    import torch
    from accelerate import Accelerator

    from medkit.recipe import recipe_from_dict
    from medkit.train import plan as lora
    from medkit.train.loop import Trainer

    with tempfile.TemporaryDirectory() as out:
        raw = {"name": "bench", "model": {"base": str(model_dir)}, "data": {"source": str(data_file)},
               "train": {"max_steps": steps + 3, "save_every": 0, "eval_every": 0, "output_dir": out}}  # fmt: skip
        for section, keys in (settings or {}).items():
            raw[section] = {**raw.get(section, {}), **keys}
        recipe = recipe_from_dict(raw, source="bench.toml")
        with PeakMemory(cuda) as mem:
            plan = lora.plan_precision(recipe)
            acc = Accelerator(mixed_precision=plan.mixed_precision, cpu=not cuda)
            model = lora.build_model(recipe, plan, local_device=0 if cuda else None)
            data = _Prepared(examples)
            trainer = Trainer(recipe=recipe, model=model, data=data, accelerator=acc, plan=plan, run_dir=Path(out),
                              pad_id=0)  # fmt: skip
            # warm-up; compiled layers also compile a second variant (a batch without padding has no mask)
            for _ in range(3 if recipe.train.compile == "on" else 1):
                trainer.train_step()
            if cuda:
                torch.cuda.synchronize()
            t0, tokens, work = time.perf_counter(), 0, 0
            for _ in range(steps):
                tokens += trainer.train_step()[2]
                work += trainer.last_flops  # medkit.train.flops: selective CE's head on trained tokens only
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
    del trainer, model
    gc.collect()
    return _result(tokens, work, elapsed, mem.gib, peak)


def _result(tokens: int, work: float, seconds: float, gib: float, peak: Any) -> dict[str, Any]:
    util = mfu(work, seconds, peak)
    return {
        "tokens_per_s": tokens / seconds, "peak_gib": gib, "tflops": work / seconds / 1e12,
        "flops_per_token": work / max(tokens, 1), "mfu": util,
    }  # fmt: skip


def measure_machine_peak(shape: dict[str, Any], tokens: int, cuda: bool) -> Any:
    """This machine's dense matmul peak on the model's MLP shape (bf16 on CUDA, fp32 on CPU)."""
    import torch

    dtype, device = (torch.bfloat16, "cuda") if cuda else (torch.float32, "cpu")
    hidden, inter = shape["hidden_size"], shape["intermediate_size"]
    rows = mlp_tokens(tokens, hidden, inter, device)
    return measure_peak(
        rows, hidden, inter, dtype=dtype, device=device, budget_s=2.0
    )  # the bench can spare 2 s


def _row(label: str, r: dict[str, Any]) -> str:
    util = f"{r['mfu']:6.1%}" if r.get("mfu") is not None else "     -"
    return f"  {label:<58}{r['tokens_per_s']:10,.0f} tok/s  peak {r['peak_gib']:6.2f} GiB  MFU {util}"


@dataclass
class _Prepared:
    train: list[Example]
    val: tuple = ()
    test: tuple = ()


def main(shape_name: str | None = None, steps: int | None = None) -> dict[str, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cuda = torch.cuda.is_available()
    shape_name = shape_name or os.environ.get("MEDKIT_BENCH_SHAPE") or ("tinyllama" if cuda else "tiny")
    if shape_name not in SHAPES:
        raise SystemExit(f"MEDKIT_BENCH_SHAPE: '{shape_name}' is not one of {', '.join(SHAPES)}")
    shape, what = SHAPES[shape_name]
    steps = steps or int(os.environ.get("MEDKIT_BENCH_STEPS", "6" if cuda else "3"))
    mean_len, max_len = {"tiny": (72, 256), "smollm2": (100, 256)}.get(shape_name, (290, 1024))
    examples = make_examples(32 * (steps + 2) * 2, mean_len, max_len, shape["vocab_size"])
    mean = sum(len(e.input_ids) for e in examples) / len(examples)
    batch_tokens = int(4 * mean)  # medkit's default micro-batch: 4 sequences
    before = measure_machine_peak(shape, batch_tokens, cuda)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        torch.manual_seed(0)
        with torch.device("cuda" if cuda else "cpu"):  # on CUDA: random init on the GPU, saved in bf16
            model = LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False))
        (model.to(torch.bfloat16) if cuda else model).save_pretrained(model_dir)
        del model
        data_file = Path(tmp) / "unused.jsonl"
        data_file.write_text('{"question": "q", "answer": "a"}\n')
        print(f"train bench on {'CUDA ' + torch.cuda.get_device_name() if cuda else 'CPU'}: {what}, "
              f"{len(examples)} examples, mean {mean:.0f} tokens, {steps} timed steps", flush=True)  # fmt: skip
        m, k, n = before.shape
        print(f"  matmul peak ({before.dtype}, the faster of the MLP's two: {m}x{k} @ {k}x{n}): "
              f"{before.flops_per_s / 1e9:,.1f} GFLOP/s (MFU is measured against it)", flush=True)  # fmt: skip
        a = seed_recipe(model_dir, examples, steps, cuda, before)
        print(_row("(a) seed recipe (HF Trainer, padding, r=64 all-linear):", a), flush=True)
        b = medkit_run(model_dir, examples, steps, cuda, data_file, before)
        print(_row("(b) medkit defaults (length-grouped, selective CE):", b), flush=True)
        c = medkit_run(model_dir, examples, steps, cuda, data_file, before, seed_settings(cuda))
        print(_row("(c) medkit at the seed's settings (r=64 all-linear, 8x4):", c), flush=True)
        extra, failed = {}, {}
        if os.environ.get("MEDKIT_BENCH_EXTRA", "1") != "0":  # each engine change beside the defaults
            for key, (label, settings) in EXTRA_ROWS.items():
                try:  # a row that fails (e.g. compile on a new device) must not cost the rows measured
                    extra[key] = medkit_run(model_dir, examples, steps, cuda, data_file, before, settings)
                except Exception as exc:
                    failed[key] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[
                        :300
                    ]
                    print(f"  {label} failed: {failed[key]}", flush=True)
                    continue
                print(_row(label, extra[key]), flush=True)
    after = measure_machine_peak(shape, batch_tokens, cuda)
    peak = max(before, after, key=lambda p: p.flops_per_s)
    for side in (
        a,
        b,
        c,
        *extra.values(),
    ):  # against the better of the two measurements: the machine's limit in this run
        side["mfu"] = mfu(side["tflops"] * 1e12, 1.0, peak)
    ratio = {
        "speed": b["tokens_per_s"] / a["tokens_per_s"],
        "memory": b["peak_gib"] / max(a["peak_gib"], 1e-9),
        "same_work_speed": c["tokens_per_s"] / a["tokens_per_s"],
        "same_work_memory": c["peak_gib"] / max(a["peak_gib"], 1e-9),
    }
    print(f"  matmul peak again after the runs: {after.flops_per_s / 1e9:,.1f} GFLOP/s; MFU below uses the "
          f"better, {peak.flops_per_s / 1e9:,.1f}", flush=True)  # fmt: skip
    if any((side["mfu"] or 0) > 1 for side in (a, b, c, *extra.values())):
        print("  note: MFU above 100%: the steps' matmuls ran faster than the peak measured (other work on the "
              "cores then, or this machine's speed moving between measurements); rerun idle")  # fmt: skip
    print(
        "  MFU against that peak:  "
        + "  ".join(f"({k}) {v['mfu']:.1%}" for k, v in zip("abc", (a, b, c), strict=True))
    )
    for key, side in extra.items():
        ratio[key] = side["tokens_per_s"] / b["tokens_per_s"]
        print(
            f"  {EXTRA_ROWS[key][0].split(':')[0].strip()} / (b): {ratio[key]:.2f}x tokens/s, MFU {side['mfu']:.1%}"
        )
    print(
        f"  medkit / seed: {ratio['speed']:.2f}x tokens/s at {ratio['memory']:.2f}x peak memory", flush=True
    )
    print(f"  same work (c) / seed: {ratio['same_work_speed']:.2f}x tokens/s at "
          f"{ratio['same_work_memory']:.2f}x peak memory (the engine alone)", flush=True)  # fmt: skip
    result = {
        "device": "cuda" if cuda else "cpu",
        "shape": shape_name,
        "peak": peak.as_dict(),
        "peak_before_after_gflops": [round(before.flops_per_s / 1e9, 2), round(after.flops_per_s / 1e9, 2)],
        "seed_recipe": a,
        "medkit": b,
        "medkit_seed_settings": c,
        **extra,
        **({"failed_rows": failed} if failed else {}),
        "ratio": ratio,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
