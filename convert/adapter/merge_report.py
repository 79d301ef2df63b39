"""`medkit merge --report`: what each merge choice costs in val perplexity, stored in run.json.

Base alone, base + adapter unmerged, the merged folder as saved, and (where bitsandbytes loads) the other
merge base and the QLoRA setup itself (4-bit base + adapter): the same val examples through each.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medkit.convert.adapter.merge import Quant, apply_adapter, load_4bit, load_base, run_settings
from medkit.errors import ConvertError


def perplexity(model: Any, examples: list[Any]) -> float:
    """exp(mean NLL) over the label positions (the answers) of tokenized examples (medkit.train.loss.label_nll)."""
    import math

    from medkit.train.loss import label_nll

    total, count = label_nll(model, examples)
    if not count:
        raise ConvertError("the val examples have no answer tokens to score")
    return math.exp(total / count)


def report_run(
    run: Any, *, merged_dir: Path, from_4bit: bool = False, max_examples: int = 64
) -> dict[str, Any]:
    """Val perplexity of base, base+adapter unmerged, each merge choice (and the 4-bit setup when
    bitsandbytes can load it); stored in run.json under ``merge_report``."""
    import gc
    import importlib.util

    from medkit.data.tokens import prepare, run_tokenizer
    from medkit.models import load_model

    recipe, quant, trained_4bit = run_settings(run)
    prepared = prepare(recipe, run_tokenizer(recipe, run.adapter))
    split = "val" if prepared.val else "test"
    examples = prepared.split(split)[:max_examples]
    if not examples:
        raise ConvertError("the run's data has no val or test examples to measure perplexity on")
    base, rows = recipe.model.base, dict[str, Any]()

    def measure(key: str, build: Callable[[], Any]) -> None:
        model = build()
        rows[key] = round(perplexity(model, examples), 4)
        del model
        gc.collect()

    measure("base", lambda: load_base(base, dtype="float32"))
    measure(
        "adapter_unmerged", lambda: apply_adapter(load_base(base, dtype="float32"), run.adapter, merge=False)
    )
    measure("merged_saved", lambda: load_model(str(merged_dir), dtype="float32").eval())
    bnb = importlib.util.find_spec("bitsandbytes") is not None
    if bnb:
        other = "merged_16bit" if from_4bit else "merged_from_4bit"
        try:
            measure(
                other,
                lambda: apply_adapter(
                    load_base(base, dtype="float32", from_4bit=not from_4bit, quant=quant), run.adapter
                ),
            )
            measure("4bit_adapter_unmerged", lambda: _four_bit_with_adapter(base, run.adapter, quant))
        except ConvertError as exc:
            rows["note"] = exc.one_line()
    ref = rows["adapter_unmerged"]
    data = {
        "split": split, "examples": len(examples), "merged_saved_is": "NF4-dequantized base" if from_4bit else "full-precision base",
        "trained_4bit": trained_4bit, "perplexity": rows,
        "merged_vs_unmerged_rel_diff": round(abs(rows["merged_saved"] - ref) / ref, 6),
    }  # fmt: skip
    run.update_manifest(merge_report=data)
    return data


def _four_bit_with_adapter(base: str, adapter_dir: Path, quant: Quant) -> Any:
    """The training setup itself: 4-bit base, adapter applied on top, nothing merged."""
    return apply_adapter(load_4bit(base, quant), adapter_dir, merge=False)


def print_report(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    labels = {
        "base": "base alone",
        "adapter_unmerged": "base + adapter, unmerged (full precision)",
        "merged_saved": f"merged, as saved (into the {data['merged_saved_is']})",
        "merged_16bit": "merged into the full-precision base",
        "merged_from_4bit": "merged into the NF4-dequantized base",
        "4bit_adapter_unmerged": "4-bit base + adapter (the QLoRA setup)",
    }
    table = Table(title=f"val perplexity ({data['examples']} {data['split']} examples)")
    table.add_column("model")
    table.add_column("perplexity", justify="right")
    for key, value in data["perplexity"].items():
        if key != "note":
            table.add_row(labels.get(key, key), f"{value:.4f}")
    console = Console()
    console.print(table)
    if "note" in data["perplexity"]:
        console.print(f"note: {data['perplexity']['note']}")
    console.print(f"merged vs unmerged: relative difference {data['merged_vs_unmerged_rel_diff']:.2e}")
