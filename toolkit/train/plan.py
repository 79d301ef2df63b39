"""The trainable model: device and precision plan, 4-bit NF4 base on CUDA, LoRA adapters through peft.

On CUDA the base is loaded in 4 bits by bitsandbytes (NF4 or FP4, double quantization, bf16 compute where
the GPU has it, else fp16) and prepared for k-bit training; elsewhere the same recipe trains plain LoRA
on a 16/32-bit base and says so in one line, or refuses when `quant.require` is set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkit.errors import ModelError, TrainError

if TYPE_CHECKING:  # the schema, for annotations only (no import cycle at run time)
    from medkit.recipe import Recipe

# 'auto' LoRA targets and the Conv1D (fan_in_fan_out) layout are family facts: medkit.convert.arch.


@dataclass
class Plan:
    """Where and in which precision to train, decided once from the recipe and the machine."""

    device: str  # "cuda" | "mps" | "cpu"
    quantize: bool  # 4-bit base through bitsandbytes
    dtype: Any  # torch dtype of the base's unquantized weights
    compute_dtype: Any  # torch dtype of matmuls (autocast on CUDA)
    mixed_precision: str  # accelerate: "no" | "bf16" | "fp16"
    note: str = ""  # the one line to tell the user (fallbacks), or ""


def detect_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def plan_precision(recipe: Recipe, device: str | None = None) -> Plan:
    """Decide quantization and dtypes; TrainError when 4-bit is required but cannot be had."""
    import torch

    device = device or detect_device()
    q = recipe.quant
    wants_4bit = q.mode != "none"
    names = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
    if device == "cuda":
        bf16_ok = torch.cuda.is_bf16_supported()
        half = torch.bfloat16 if bf16_ok else torch.float16
        compute = names.get(q.compute_dtype, half)
        if compute is torch.bfloat16 and not bf16_ok:
            raise TrainError(
                "quant.compute_dtype = 'bfloat16' but this GPU has no bf16; use 'float16' or 'auto'"
            )
        note = ""
        quantize = wants_4bit
        if wants_4bit and not _has_bitsandbytes():
            if q.require:
                raise TrainError(
                    "quant.require = true but bitsandbytes is not installed (pip install bitsandbytes)"
                )
            quantize, note = False, "bitsandbytes is not installed: training plain LoRA on a 16-bit base"
        dtype = names.get(recipe.model.dtype, compute) if not quantize else compute
        mp = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(compute, "no")
        return Plan(device, quantize, dtype, compute, mp, note)
    if wants_4bit and q.require:
        raise TrainError(
            f"quant.require = true but 4-bit {q.mode.upper()} needs a CUDA GPU (bitsandbytes); this machine has "
            f"{device}",
            hint="set quant.require = false to train plain LoRA here",
        )
    dtype = names.get(recipe.model.dtype, torch.float32)
    if dtype is torch.float16 and device == "cpu":
        dtype = torch.float32  # fp16 matmuls are not supported on CPU
    note = ""
    if wants_4bit:
        note = (
            f"no CUDA: training plain LoRA on {device} in {str(dtype).replace('torch.', '')} "
            f"(4-bit {q.mode.upper()} needs CUDA; quant.require = true makes this an error)"
        )
    return Plan(device, False, dtype, dtype, "no", note)


def _has_bitsandbytes() -> bool:
    import importlib.util

    return importlib.util.find_spec("bitsandbytes") is not None


def bnb_config(mode: str, double_quant: bool, compute_dtype: Any) -> Any:
    """transformers' BitsAndBytesConfig for 4-bit ``mode`` (nf4/fp4): the one builder, used by training and
    by `medkit merge --from-4bit` / `--report` (so both round the base alike). Storage is in the compute
    dtype, which FSDP needs to shard 4-bit weights."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=mode,
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_quant_storage=compute_dtype,
    )


def linear_names(model: Any) -> list[str]:
    """Leaf names of the linear-like modules (nn.Linear, GPT-2's Conv1D, bitsandbytes 4/8-bit) in a model."""
    import torch

    names = set()
    for full, mod in model.named_modules():
        kind = type(mod).__name__
        if isinstance(mod, torch.nn.Linear) or kind in ("Conv1D", "Linear4bit", "Linear8bitLt"):
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def resolve_targets(model: Any, targets: list[str]) -> list[str] | str:
    """'auto' -> the architecture's projections; 'all-linear' passes through; names must each match."""
    present = linear_names(model)
    if targets == ["all-linear"]:
        return "all-linear"
    if targets == ["auto"]:
        from medkit.convert.arch import auto_targets

        auto = auto_targets(model.config.model_type)
        if auto is None or not set(auto) & set(present):
            return "all-linear"
        chosen = [t for t in auto if t in present]
        from medkit.convert.arch import by_model_type

        # a multimodal checkpoint (MedGemma): adapt the language model only, the part that is exported
        fam = by_model_type(model.config.model_type)
        parts = sorted({p.rstrip(".").rsplit(".", 1)[-1] for p in (fam.dropped if fam else ())})
        if parts and any(f".{p}." in f".{n}." for n, _ in model.named_modules() for p in parts):
            return rf"^(?!(?:.*\.)?(?:{'|'.join(parts)})\.).*\.(?:{'|'.join(chosen)})$"
        return chosen
    missing = [t for t in targets if t not in present]
    if missing:
        raise TrainError(
            f"lora.targets: {', '.join(repr(t) for t in missing)} match(es) no module of this "
            f"{model.config.model_type} model; its linear modules are: {', '.join(present)}"
        )
    return list(targets)


def lora_config(recipe: Recipe, model: Any) -> Any:
    from peft import LoraConfig

    from medkit.convert.arch import by_model_type

    family = by_model_type(model.config.model_type)

    lo = recipe.lora
    return LoraConfig(
        r=lo.r,
        lora_alpha=lo.alpha,
        lora_dropout=lo.dropout,
        use_rslora=lo.rslora,
        target_modules=resolve_targets(model, list(lo.targets)),
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out=bool(family and family.conv1d),  # Conv1D layers (GPT-2) store (in, out) weights
    )


def init_run(recipe: Recipe) -> Path | None:
    """The adapter folder of `train.init_from` (None when empty): a finished run of the same base model,
    else one TrainError naming the key."""
    import json

    from medkit.errors import RunNotFoundError
    from medkit.runs import find_run

    spec = recipe.train.init_from
    if not spec:
        return None
    try:
        run = find_run(spec)
    except RunNotFoundError as exc:
        raise TrainError(exc.message, where="train.init_from") from None
    if not (run.adapter / "adapter_config.json").is_file():
        raise TrainError(f"{run.path} has no finished adapter ({run.adapter})", where="train.init_from")
    try:
        base = json.loads(run.manifest.read_text()).get("base_model")
    except (OSError, ValueError):
        base = None
    from medkit.models import same_base

    if not same_base(base, recipe.model.base):
        raise TrainError(
            f"{run.path} was trained on base {base!r}, not this recipe's {recipe.model.base!r}",
            where="train.init_from",
        )
    return run.adapter


def build_model(recipe: Recipe, plan: Plan, *, local_device: Any = None, init: Path | None = None) -> Any:
    """Load the base per `plan`, prepare it (k-bit, gradient checkpointing), add LoRA (a fresh one, or the
    trainable adapter of `init`, a run's adapter folder, with that adapter's own shape); a PeftModel."""
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training

    from medkit.models import load_model

    gc_kwargs = {"use_reentrant": False}
    kwargs: dict[str, Any] = {"dtype": plan.dtype, "trust_remote_code": recipe.model.trust_remote_code}
    if plan.quantize:
        kwargs["quantization_config"] = bnb_config(
            recipe.quant.mode, recipe.quant.double_quant, plan.compute_dtype
        )
        if plan.device != "cuda":  # bitsandbytes' CPU backend (tests of this path without a GPU)
            kwargs["device_map"] = {"": plan.device}
        elif not os.environ.get("ACCELERATE_USE_FSDP"):
            kwargs["device_map"] = {
                "": local_device if local_device is not None else torch.cuda.current_device()
            }
    model = load_model(recipe.model.base, **kwargs)
    if recipe.model.attn_implementation != "auto":
        try:
            model.set_attn_implementation(recipe.model.attn_implementation)
        except (ValueError, ImportError) as exc:
            raise ModelError(f"model.attn_implementation: {str(exc).splitlines()[0]}") from None
    model.config.use_cache = False
    if plan.quantize:
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=recipe.train.grad_checkpointing,
            gradient_checkpointing_kwargs=gc_kwargs,
        )
        _recast_embeddings(model, plan.compute_dtype)
    else:
        for p in model.parameters():
            p.requires_grad_(False)
        if recipe.train.grad_checkpointing:
            if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 name
                model.activation_checkpointing_enable(activation_checkpointing_kwargs=gc_kwargs)
            else:
                model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
            model.enable_input_require_grads()
    if init is not None:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, str(init), is_trainable=True)
    return get_peft_model(model, lora_config(recipe, model))


def _recast_embeddings(model: Any, dtype: Any) -> None:
    """prepare_model_for_kbit_training upcasts every unquantized weight to fp32; the frozen input and
    output embeddings only cost memory and a per-step cast there (autocast runs the head in `dtype`)."""
    for mod in (model.get_input_embeddings(), model.get_output_embeddings()):
        if mod is not None and getattr(mod, "weight", None) is not None and mod.weight.dtype != dtype:
            mod.weight.data = mod.weight.data.to(dtype)


def param_counts(model: Any) -> tuple[int, int]:
    """(trainable, total) parameters; 4-bit weights counted by their logical size."""
    trainable = total = 0
    for p in model.parameters():
        n = p.numel()
        if type(p).__name__ == "Params4bit":
            n *= 2  # two 4-bit values per stored byte
        total += n
        if p.requires_grad:
            trainable += n
    return trainable, total


def estimate_memory(recipe: Recipe, plan: Plan, model: Any) -> dict[str, float]:
    """A rough peak-memory estimate in GiB: weights, LoRA optimizer state, activations, logits."""
    cfg = model.config
    trainable, total = param_counts(model)
    weight_bytes = total * (0.55 if plan.quantize else _bytes(plan.dtype))
    state_bytes = trainable * (4 + 4 + 8)  # fp32 weights, grads, Adam moments
    hidden = int(getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0))
    layers = int(getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0))
    tokens = recipe.train.batch_size * recipe.data.max_seq_len
    act_dtype = _bytes(plan.compute_dtype)
    per_layer = tokens * hidden * act_dtype * (2 if recipe.train.grad_checkpointing else 18)
    act_bytes = per_layer * layers + tokens * hidden * act_dtype * 18
    vocab = getattr(cfg, "vocab_size", 0)
    logit_bytes = min(tokens, 2048) * vocab * 4 * 2
    gib = 2**30
    return {
        "weights": weight_bytes / gib,
        "adapter+optimizer": state_bytes / gib,
        "activations": act_bytes / gib,
        "logits": logit_bytes / gib,
        "total": (weight_bytes + state_bytes + act_bytes + logit_bytes) / gib,
    }


def _bytes(dtype: Any) -> int:
    return int(getattr(dtype, "itemsize", 4))
