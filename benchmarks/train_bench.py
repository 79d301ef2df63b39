"""Training throughput: the seed notebooks' recipe (HF Trainer) against medkit's trainer, same model and data.

    python -m benchmarks train          (make bench)

(a) seed recipe: HF Trainer + peft, bitsandbytes NF4 on CUDA, random batches with dynamic padding, batch 8 x
    accumulation 4, r=64 on every linear layer, bf16 (CUDA), gradient checkpointing, full-vocabulary loss.
(b) medkit: medkit.trainer with the recipe defaults (NF4 on CUDA, r=16 on attention+MLP, batch 4 x 4,
    length-grouped batches, selective cross-entropy, gradient checkpointing).
Both see the same random-weight model (TinyLlama-1.1B's shape on CUDA; a 4-layer, hidden-256 llama with a
32k vocabulary on CPU) and the same example lengths (MedQuAD-like, mean ~290 tokens; a quarter on CPU).
Printed: non-pad tokens/s (after one warm-up step) and peak memory (CUDA max allocated, else peak RSS
growth), and the ratios. Set MEDKIT_BENCH_STEPS to change the number of timed optimizer steps, and
MEDKIT_BENCH_SHAPE=tinyllama | tinyllama-2l | tiny to pick the shape (tinyllama-2l: TinyLlama's width, vocab
and example lengths with 2 of its 22 layers, which a CPU can time in minutes).
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

TINYLLAMA = dict(
    hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
    vocab_size=32000, max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
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


def seed_recipe(model_dir: Path, examples: list[Example], steps: int, cuda: bool) -> dict[str, float]:
    """(a): the notebooks' HF Trainer recipe. Returns tokens/s over steps 2.. and peak memory."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoModelForCausalLM,
        BitsAndBytesConfig,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    counted: list[int] = []

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
        counted.append(int(mask.sum()))
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
    tokens = sum(counted[clock.n1 : clock.n_end])
    result = {"tokens_per_s": tokens / (clock.t_end - clock.t1), "peak_gib": mem.gib}
    del trainer, model
    gc.collect()
    return result


def medkit_defaults(
    model_dir: Path, examples: list[Example], steps: int, cuda: bool, data_file: Path
) -> dict[str, float]:
    """(b): medkit's trainer with the recipe defaults."""
    import torch
    from accelerate import Accelerator

    from medkit import lora
    from medkit.recipe import recipe_from_dict
    from medkit.trainer import Trainer

    with tempfile.TemporaryDirectory() as out:
        raw = {"name": "bench", "model": {"base": str(model_dir)}, "data": {"source": str(data_file)},
               "train": {"max_steps": steps + 1, "save_every": 0, "eval_every": 0, "output_dir": out}}  # fmt: skip
        recipe = recipe_from_dict(raw, source="bench.toml")
        with PeakMemory(cuda) as mem:
            plan = lora.plan_precision(recipe)
            acc = Accelerator(mixed_precision=plan.mixed_precision, cpu=not cuda)
            model = lora.build_model(recipe, plan, local_device=0 if cuda else None)
            data = _Prepared(examples)
            trainer = Trainer(recipe=recipe, model=model, data=data, accelerator=acc, plan=plan, run_dir=Path(out),
                              pad_id=0)  # fmt: skip
            trainer.train_step()  # warm-up
            if cuda:
                torch.cuda.synchronize()
            t0, tokens = time.perf_counter(), 0
            for _ in range(steps):
                tokens += trainer.train_step()[2]
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - t0
    del trainer, model
    gc.collect()
    return {"tokens_per_s": tokens / elapsed, "peak_gib": mem.gib}


@dataclass
class _Prepared:
    train: list[Example]
    val: tuple = ()
    test: tuple = ()


def main() -> dict[str, Any]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cuda = torch.cuda.is_available()
    shape_name = os.environ.get("MEDKIT_BENCH_SHAPE") or ("tinyllama" if cuda else "tiny")
    if shape_name not in SHAPES:
        raise SystemExit(f"MEDKIT_BENCH_SHAPE: '{shape_name}' is not one of {', '.join(SHAPES)}")
    shape, what = SHAPES[shape_name]
    steps = int(os.environ.get("MEDKIT_BENCH_STEPS", "6" if cuda else "3"))
    mean_len, max_len = (72, 256) if shape_name == "tiny" else (290, 1024)
    examples = make_examples(32 * (steps + 2) * 2, mean_len, max_len, shape["vocab_size"])
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        torch.manual_seed(0)
        LlamaForCausalLM(LlamaConfig(**shape, tie_word_embeddings=False)).save_pretrained(model_dir)
        data_file = Path(tmp) / "unused.jsonl"
        data_file.write_text('{"question": "q", "answer": "a"}\n')
        mean = sum(len(e.input_ids) for e in examples) / len(examples)
        print(f"train bench on {'CUDA ' + torch.cuda.get_device_name() if cuda else 'CPU'}: {what}, "
              f"{len(examples)} examples, mean {mean:.0f} tokens, {steps} timed steps", flush=True)  # fmt: skip
        a = seed_recipe(model_dir, examples, steps, cuda)
        print(f"  (a) seed recipe (HF Trainer, padding, r=64 all-linear): {a['tokens_per_s']:10,.0f} tok/s  "
              f"peak {a['peak_gib']:.2f} GiB", flush=True)  # fmt: skip
        b = medkit_defaults(model_dir, examples, steps, cuda, data_file)
        print(f"  (b) medkit defaults (length-grouped, selective CE):    {b['tokens_per_s']:10,.0f} tok/s  "
              f"peak {b['peak_gib']:.2f} GiB", flush=True)  # fmt: skip
    ratio = {
        "speed": b["tokens_per_s"] / a["tokens_per_s"],
        "memory": b["peak_gib"] / max(a["peak_gib"], 1e-9),
    }
    print(
        f"  medkit / seed: {ratio['speed']:.2f}x tokens/s at {ratio['memory']:.2f}x peak memory", flush=True
    )
    result = {
        "device": "cuda" if cuda else "cpu",
        "shape": shape_name,
        "seed_recipe": a,
        "medkit": b,
        "ratio": ratio,
    }
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
