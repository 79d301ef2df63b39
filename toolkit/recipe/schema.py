"""The recipe schema: the dataclasses below are the single source of every key, its type, default, allowed
values and help (medkit.recipe.load reads and checks a TOML file against them; `describe_keys` lists them
for `medkit validate --keys` and the docs)."""

from __future__ import annotations

import dataclasses
import hashlib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.eval.metrics import TASKS as EVAL_TASKS
from medkit.eval.metrics import task_help
from medkit.formats.gguf_types import EXPORT_TYPES

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt", ".arrow")
TEMPLATES = ("auto", "chatml", "zephyr", "mistral", "llama3", "alpaca", "dialogpt")
DATA_FORMATS = (
    "auto",
    "preference",
    "qa",
    "cot",
    "dialogue",
    "messages",
    "alpaca",
    "prompt_completion",
    "text",
)
TRAIN_METHODS = ("sft", "dpo", "orpo", "grpo")
TASKS = ("auto", *EVAL_TASKS)  # medkit.eval.metrics holds the tasks and the metrics of each
# Names users bring from other tools, for "did you mean".
SYNONYMS = {
    "rank": "r",
    "lora_r": "r",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "target_modules": "targets",
    "learning_rate": "lr",
    "num_epochs": "epochs",
    "num_train_epochs": "epochs",
    "micro_batch_size": "batch_size",
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "gradient_checkpointing": "grad_checkpointing",
    "sequence_len": "max_seq_len",
    "max_length": "max_seq_len",
    "lr_scheduler": "scheduler",
    "lr_scheduler_type": "scheduler",
    "warmup": "warmup_ratio",
    "loss_type": "method",
    "orpo_alpha": "orpo_lambda",
    "rpo_alpha": "sft_weight",
    "path": "source",
    "dataset": "source",
    "model_name": "base",
    "base_model": "base",
    "template": "chat_template",
}
GGUF_TYPES = EXPORT_TYPES  # medkit.convert.quant.quantize holds the one table of GGUF types


def opt(default: Any = dataclasses.MISSING, help: str = "", *, choices=None, lo=None, hi=None, factory=None):
    """A recipe key: default, help text and allowed values live together."""
    meta = {"help": help, "choices": choices, "lo": lo, "hi": hi}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class ModelSection:
    base: str = opt(help="Base model: hub id, local HF folder, .gguf file, or package:<pkg>/<file>.gguf")
    dtype: str = opt(
        "auto", "Weights/compute dtype for 16-bit parts", choices=("auto", "bfloat16", "float16", "float32")
    )
    chat_template: str = opt(
        "auto",
        "Chat template: 'auto' uses the tokenizer's own, else a named one or a path to a .jinja file",
    )
    enable_thinking: bool = opt(
        False, "Templates with thinking blocks (Qwen3): render them on (train on and generate thinking)"
    )
    trust_remote_code: bool = opt(False, "Run code shipped with a hub model (off unless you trust it)")
    revision: str = opt("", "Hub revision (branch, tag or commit); empty for the default")
    attn_implementation: str = opt(
        "auto", "Attention kernel", choices=("auto", "sdpa", "eager", "flash_attention_2")
    )


@dataclass
class CleanSection:
    strip_html: bool = opt(True, "Remove HTML tags and unescape entities")
    collapse_whitespace: bool = opt(True, "Collapse runs of spaces/tabs; keep paragraph breaks")
    min_chars: int = opt(1, "Drop rows whose answer is shorter than this", lo=0)
    max_chars: int = opt(0, "Drop rows whose prompt+answer is longer than this (0: no limit)", lo=0)
    dedupe: bool = opt(True, "Drop exact duplicate (prompt, answer) pairs")
    drop_overlap: bool = opt(
        False, "Drop train rows whose prompt (case, spacing, punctuation folded) is also a val/test prompt"
    )


@dataclass
class DataSection:
    source: str = opt(help="Hub dataset id or local .jsonl/.json/.csv/.parquet file")
    format: str = opt("auto", "Row layout; 'auto' guesses from the columns", choices=DATA_FORMATS)
    fields: dict[str, str] = opt(
        help="Map of role -> column, e.g. {question='Question', answer='Response', cot='Complex_CoT'}",
        factory=dict,
    )
    prompt_template: str = opt(
        "", "Python format string for the user turn over row columns, e.g. 'Code this: {dialogue}'"
    )
    answer_template: str = opt(
        "", "Python format string for the assistant turn, e.g. '{cot}\\n\\n{response}'"
    )
    system_prompt: str = opt("", "System message put before every example (and used at chat time)")
    config_name: str = opt("", "Hub dataset configuration name")
    train_split: str = opt("train", "Split to train on")
    val_split: str = opt("", "Existing validation split; empty: carve one with split_ratios")
    test_split: str = opt("", "Existing test split; empty: carve one with split_ratios")
    split_ratios: list[float] = opt(
        help="train/val/test ratios when splits are carved", factory=lambda: [0.8, 0.1, 0.1]
    )
    seed: int = opt(42, "Seed for shuffling and splitting")
    train_part: list[float] = opt(
        help="The part [from, to] of the train split (as fractions, after the seeded split) this run trains on: "
        "e.g. [0, 0.6] for supervised tuning and [0.6, 1] for reward tuning after it, on prompts it has not seen; "
        "val and test stay whole",
        factory=lambda: [0.0, 1.0],
    )
    max_samples: int = opt(0, "Use at most this many rows (0: all), taken after a seeded shuffle", lo=0)
    max_seq_len: int = opt(512, "Token budget per example", lo=16, hi=131072)
    truncation: str = opt(
        "drop",
        "Examples whose answer does not fit: drop them or keep the cut version",
        choices=("drop", "keep"),
    )
    packing: bool = opt(False, "Pack several examples per sequence (no cross-attention between them)")
    train_on_prompt: bool = opt(False, "Also train on prompt tokens (default: only the assistant's answers)")
    malformed_threshold: float = opt(
        0.05, "Error out if more than this share of rows is malformed", lo=0.0, hi=1.0
    )
    clean: CleanSection = opt(help="Cleaning rules", factory=CleanSection)


@dataclass
class LoraSection:
    r: int = opt(16, "LoRA rank", lo=1, hi=1024)
    alpha: float = opt(32, "LoRA alpha (scale = alpha / r, or alpha / sqrt(r) with rslora)", lo=0.0)
    dropout: float = opt(
        0.0,
        "LoRA dropout (on CPU each adapted layer's mask comes from a serial generator: 0.05 costs ~35% of a "
        "small model's step)",
        lo=0.0,
        hi=0.9,
    )
    targets: list[str] = opt(
        help="Module names to adapt; ['auto'] = the architecture's attention+MLP projections, ['all-linear'] = every linear",
        factory=lambda: ["auto"],
    )
    rslora: bool = opt(False, "Rank-stabilized LoRA scaling")


@dataclass
class QuantSection:
    mode: str = opt(
        "nf4",
        "4-bit base on CUDA through bitsandbytes; 'none' trains a 16-bit base",
        choices=("nf4", "fp4", "none"),
    )
    double_quant: bool = opt(True, "Quantize the quantization constants too")
    compute_dtype: str = opt(
        "auto",
        "Dtype of 4-bit matmuls: auto = bf16 where supported else fp16",
        choices=("auto", "bfloat16", "float16"),
    )
    require: bool = opt(
        False, "Fail instead of falling back to plain LoRA when 4-bit is unavailable (no CUDA)"
    )


@dataclass
class TrainSection:
    epochs: float = opt(1.0, "Passes over the training split (ignored when max_steps > 0)", lo=0.0)
    max_steps: int = opt(0, "Optimizer steps to run; 0 means use epochs", lo=0)
    batch_size: int = opt(4, "Sequences per micro-batch", lo=1)
    grad_accum: int = opt(4, "Micro-batches per optimizer step", lo=1)
    lr: float = opt(2e-4, "Peak learning rate", lo=0.0, hi=1.0)
    scheduler: str = opt(
        "cosine", "Learning-rate schedule after warmup", choices=("cosine", "linear", "constant")
    )
    warmup_ratio: float = opt(0.03, "Share of steps spent warming up", lo=0.0, hi=0.5)
    weight_decay: float = opt(0.0, "AdamW weight decay", lo=0.0)
    optimizer: str = opt(
        "auto",
        "auto = fused AdamW on CUDA and CPU, else AdamW",
        choices=("auto", "adamw", "adamw_fused", "paged_adamw_8bit", "adamw_8bit"),
    )
    grad_checkpointing: bool = opt(True, "Trade compute for memory")
    compile: str = opt(
        "auto",
        "torch.compile the decoder layers (inductor; losses as in eager): auto = on for CPU runs of >= 200 "
        "steps of a model >= 512 wide with a C++ compiler, off on GPUs until measured (medkit.train.compile)",
        choices=("auto", "on", "off"),
    )
    fuse: str = opt(
        "auto",
        "One matmul for the LoRA projections that read the same input (q/k/v, gate/up; the same losses and "
        "adapter files): auto = on where safe (plain float base, lora.dropout = 0, one adapter, no DoRA); "
        "off = PEFT's own forward (medkit.train.fuse)",
        choices=("auto", "on", "off"),
    )
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0: off)", lo=0.0)
    seed: int = opt(42, "Seed for initialisation, dropout and data order")
    eval_every: int = opt(50, "Evaluate on the val split every N steps (0: only at the end)", lo=0)
    save_every: int = opt(100, "Checkpoint every N steps (0: only at the end)", lo=0)
    log_every: int = opt(10, "Log train loss every N steps", lo=1)
    keep_last: int = opt(2, "Checkpoints to keep", lo=1)
    early_stopping_patience: int = opt(
        0, "Stop after this many evals without val-loss improvement (0: off)", lo=0
    )
    output_dir: str = opt("", "Run directory; empty: runs/<recipe name>")
    method: str = opt(
        "sft",
        "sft = supervised answers; dpo / orpo = preference pairs (data rows with prompt or messages, chosen, "
        "rejected; medkit.train.preference); grpo = rewards on sampled answers (medkit.train.grpo)",
        choices=TRAIN_METHODS,
    )
    beta: float = opt(
        0.1,
        "dpo: how strongly the policy is held to the reference (the starting adapter, or the base)",
        lo=0.0,
    )
    orpo_lambda: float = opt(
        0.1, "orpo: weight of the odds-ratio term beside the chosen answers' NLL", lo=0.0
    )
    sft_weight: float = opt(
        0.0,
        "dpo: weight of the chosen answers' NLL (mean over their tokens) added to the DPO loss, which keeps "
        "their likelihood from falling with the rejected ones' (RPO; TRL's loss_type ['sigmoid', 'sft']); 0 = plain DPO",
        lo=0.0,
    )
    group_size: int = opt(
        4, "grpo: completions sampled per prompt (rewards are normalized within the group)", lo=2
    )
    kl_coef: float = opt(
        0.0,
        "grpo: weight of the KL penalty to the reference (the starting adapter, or the base); 0 = none",
        lo=0.0,
    )
    clip_epsilon: float = opt(0.2, "grpo: the policy ratio is clipped to [1 - eps, 1 + eps]", lo=0.0, hi=1.0)
    rewards: dict[str, float] = opt(
        help="grpo: reward name -> weight, e.g. {icd10_exact = 1.0, icd10_valid = 0.5, format = 0.2}; built in: "
        "icd10_exact, icd10_category, icd10_valid, numeric, format, length; or a dotted path to your own "
        "function (medkit.train.rewards)",
        factory=dict,
    )
    trust_reward_code: bool = opt(
        False, "grpo: allow rewards named by a dotted path (imports and runs that code)"
    )
    reward_tolerance: float = opt(0.05, "grpo: the numeric reward's relative tolerance", lo=0.0)
    sample_temperature: float = opt(1.0, "grpo: sampling temperature of the completions", lo=0.01)
    resample_flat: int = opt(
        0,
        "grpo: a group whose rewards are all equal gives no advantage to learn from; up to this many other "
        "train prompts are sampled in its place until one gives a spread (DAPO's dynamic sampling); 0 = keep "
        "every group",
        lo=0,
    )
    max_new_tokens: int = opt(32, "grpo: generation budget of each sampled completion", lo=1)
    init_from: str = opt(
        "",
        "Start from an earlier run's adapter, e.g. 'runs/smollm2_icd10_demo' (same base model); it is also "
        "DPO's frozen reference. Empty: a fresh adapter (DPO's reference is then the base)",
    )


@dataclass
class QualitativePrompts:
    in_domain: list[str] = opt(help="Prompts shown side by side, in the training domain", factory=list)
    out_of_domain: list[str] = opt(help="Prompts outside the domain, to spot regressions", factory=list)


@dataclass
class EvalSection:
    task: str = opt(
        "auto",
        f"Which metrics: auto (guessed from the answers), {task_help()}",
        choices=TASKS,
    )
    split: str = opt("test", "Split to evaluate", choices=("train", "val", "test"))
    n: int = opt(100, "Examples to evaluate (0: all)", lo=0)
    max_new_tokens: int = opt(128, "Generation budget per example", lo=1)
    batch_size: int = opt(8, "Generation batch size", lo=1)
    temperature: float = opt(0.0, "0 = greedy", lo=0.0)
    seed: int = opt(0, "Sampling seed when temperature > 0")
    constrain: str = opt(
        "auto",
        "Also score every model with answers held to ICD-10-CM codes ('<model>+icd10' columns): auto "
        "(icd10 tasks), none, or icd10 / icd10:<prefix> / icd10:<codes file>",
    )
    prompts: QualitativePrompts = opt(help="Qualitative prompts", factory=QualitativePrompts)


@dataclass
class ExportSection:
    """`medkit export` of the run uses these as its defaults; a flag (--gguf, --no-verify, ...) wins."""

    gguf: list[str] = opt(help=f"GGUF types to write: {', '.join(GGUF_TYPES)}", factory=lambda: ["q4_0"])
    modelfile: bool = opt(True, "Write an Ollama Modelfile next to the GGUF (--[no-]modelfile)")
    verify: bool = opt(True, "Check llama.cpp against transformers after export (--[no-]verify)")
    imatrix: str = opt(
        "auto",
        "Importance matrix for quantized types: auto (from the run's train split), none, or an imatrix "
        "GGUF path (--imatrix)",
    )
    gptq: bool = opt(
        True,
        "Choose the quantized codes by GPTQ error feedback on the calibration data (llama.cpp's types "
        "and scales kept; needs the imatrix pass's data: not with --imatrix none/PATH) (--[no-]gptq)",
    )
    temperature: float = opt(0.7, "Default sampling temperature for the Modelfile / chat", lo=0.0)
    top_p: float = opt(0.9, "Default top-p", lo=0.0, hi=1.0)
    num_ctx: int = opt(2048, "Default context length", lo=128)


@dataclass
class Recipe:
    name: str = opt("", "Run name; empty: the recipe file's stem")
    description: str = opt("", "What this recipe is for")
    model: ModelSection = opt(help="Base model", factory=lambda: ModelSection(base=""))
    data: DataSection = opt(help="Dataset and how to render it", factory=lambda: DataSection(source=""))
    lora: LoraSection = opt(help="LoRA adapter", factory=LoraSection)
    quant: QuantSection = opt(help="4-bit quantization of the base (CUDA)", factory=QuantSection)
    train: TrainSection = opt(help="Optimisation", factory=TrainSection)
    eval: EvalSection = opt(help="Evaluation", factory=EvalSection)
    export: ExportSection = opt(help="Export defaults", factory=ExportSection)
    source_path: str = field(default="", metadata={"internal": True})

    # ---- derived -------------------------------------------------------------------------------
    def run_dir(self) -> Path:
        from medkit.runs import runs_root

        return Path(self.train.output_dir) if self.train.output_dir else runs_root() / self.name

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("source_path", None)
        return d

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(_drop_empty(self.to_dict()))

    def fingerprint(self) -> str:
        return hashlib.sha256(self.to_toml().encode()).hexdigest()


def type_hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _drop_empty(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_empty(v) for k, v in d.items() if v is not None}
    return d


def describe_keys(cls=Recipe, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key path, default, help) for every key: used by `medkit validate --keys` and the docs."""
    rows = []
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            rows += describe_keys(tp, f"{prefix}{f.name}.")
            continue
        default = (
            f.default
            if f.default is not dataclasses.MISSING
            else (f.default_factory() if f.default_factory is not dataclasses.MISSING else "(required)")
        )
        help_text = f.metadata.get("help", "")
        if f.metadata.get("choices"):
            help_text += f" [{'|'.join(map(str, f.metadata['choices']))}]"
        rows.append((prefix + f.name, repr(default), help_text))
    return rows
