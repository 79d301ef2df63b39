"""`medkit eval`: base vs fine-tuned vs each GGUF on held-out data, one table.

    medkit eval                                  # latest run: base, tuned, every GGUF in export/
    medkit eval runs/smollm2_demo --n 50 --gguf runs/smollm2_demo/export/model-q4_0.gguf
    medkit eval --against none --set eval.max_new_tokens=64

Writes eval.md, eval.json and eval.png into the run directory (atomically, and only when everything
ran). Torch, transformers, peft and llama.cpp are imported inside the functions that need them.
"""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from medkit.errors import EvalError, MedkitError
from medkit.metrics import (
    HIGHER_IS_BETTER,
    check_references,
    guess_task,
    metrics_for_task,
    perplexity,
    stop_rate,
    task_metrics,
)
from medkit.runs import RunDir, atomic_path, find_run, latest_run

RATE_METRICS = frozenset(
    {
        "rouge1",
        "rouge2",
        "rougeL",
        "exact",
        "code_match",
        "category_match",
        "chapter_match",
        "valid_rate",
        "unparsed",
        "stop_rate",
    }
)
SAMPLES_KEPT = 5  # generations stored per model in eval.json / eval.md


@dataclass
class EvalSet:
    """What every model is scored on: token ids + labels (loss) and conversations (generation)."""

    task: str
    metrics: tuple[str, ...]
    examples: list[Any]  # medkit.data.Example
    conversations: list[Any]  # medkit.data.Conversation
    prompts: dict[str, list[str]]  # "in_domain" / "out_of_domain" -> user prompts
    system_prompt: str
    max_new_tokens: int
    batch_size: int
    temperature: float
    seed: int

    @property
    def references(self) -> list[str]:
        return [c.answer for c in self.conversations]

    def qualitative_messages(self) -> list[tuple[str, str, list[dict[str, str]]]]:
        out = []
        for domain, prompts in self.prompts.items():
            for p in prompts:
                msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
                out.append((domain, p, [*msgs, {"role": "user", "content": p}]))
        return out


# ---- the public entry point --------------------------------------------------------------------------


def evaluate_run(
    run_dir: str | Path | RunDir | None = None,
    *,
    split: str | None = "test",
    n: int | None = None,
    ggufs: Sequence[str | Path] | None = None,
    against: str = "base",
    tuned: bool = True,
    metrics: Sequence[str] | None = None,
    overrides: Sequence[str] = (),
    write: bool = True,
    progress: Any = None,
) -> dict[str, Any]:
    """Score base (``against='base'``), the tuned adapter and each GGUF; return the table as a dict.

    ``ggufs=None`` means every model GGUF in the run's export/; ``split=None`` the recipe's eval split.
    With ``write`` the table goes to eval.md / eval.json / eval.png in the run directory.
    """
    from medkit.recipe import load_recipe

    say = progress or (lambda msg: None)
    run = run_dir if isinstance(run_dir, RunDir) else (find_run(run_dir) if run_dir else latest_run())
    if against not in ("base", "none"):
        raise EvalError(f"--against must be 'base' or 'none', not '{against}'")
    recipe = load_recipe(run.recipe, list(overrides))
    gguf_paths = _gguf_list(run, ggufs)
    if tuned and not (run.adapter / "adapter_config.json").is_file():
        raise EvalError(f"no PEFT adapter in {run.adapter}", hint="train first, or pass --no-tuned")
    tokenizer = _tokenizer(run, recipe)
    evset = _eval_set(
        recipe, tokenizer, split or recipe.eval.split, recipe.eval.n if n is None else n, metrics
    )
    _check_ggufs(recipe.model.base, tokenizer, gguf_paths)
    if not (against == "base" or tuned or gguf_paths):
        raise EvalError("nothing to evaluate: no base, no tuned model and no GGUF")

    results: dict[str, dict[str, Any]] = {}
    if against == "base" or tuned:
        results.update(_score_hf_models(run, recipe, tokenizer, evset, against == "base", tuned, say))
    for path in gguf_paths:
        name = _gguf_name(run, path, results)
        say(f"scoring {name} ({path.name}) on {len(evset.examples)} examples")
        results[name] = {"kind": "gguf", "source": str(path), **_score_gguf(path, evset)}

    report = _report(run, recipe, split or recipe.eval.split, evset, results)
    if write:
        _write_outputs(run, report)
    return report


# ---- inputs -------------------------------------------------------------------------------------------


def _gguf_list(run: RunDir, ggufs: Sequence[str | Path] | None) -> list[Path]:
    if ggufs is None:
        return [p for p in run.ggufs() if "adapter" not in p.name]
    paths = [Path(g).expanduser() for g in ggufs]
    for p in paths:
        if not p.is_file():
            raise EvalError(f"GGUF file not found: {p}")
    return paths


def _tokenizer(run: RunDir, recipe: Any) -> Any:
    """The run's saved tokenizer (adapter/), else the base's, with the recipe's chat template."""
    from transformers import AutoTokenizer

    from medkit.data import load_tokenizer as base_tokenizer
    from medkit.templates import apply_template

    saved = (run.adapter / "tokenizer_config.json").is_file()
    tok = AutoTokenizer.from_pretrained(str(run.adapter)) if saved else base_tokenizer(recipe)
    apply_template(tok, recipe)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _eval_set(recipe: Any, tokenizer: Any, split: str, n: int, metrics: Sequence[str] | None) -> EvalSet:
    from medkit.data import prepare

    prepared = prepare(recipe, tokenizer)
    rows = getattr(prepared, "rows", {}) or {}
    if split not in rows:
        known = ", ".join(rows) or "none"
        raise EvalError(f"split '{split}' does not exist in {recipe.data.source} (splits: {known})")
    examples, convs = list(getattr(prepared, split, []) or []), list(rows[split])
    if n and n > 0:
        examples, convs = examples[:n], convs[:n]
    if not examples or not convs:
        raise EvalError(f"split '{split}' of {recipe.data.source} has zero examples to evaluate")
    ev = recipe.eval
    task = ev.task if ev.task != "auto" else guess_task([c.answer for c in convs])
    check_references(task, [c.answer for c in convs], where=f"{recipe.data.source} ({split})")
    return EvalSet(
        task=task,
        metrics=metrics_for_task(task, metrics),
        examples=examples,
        conversations=convs,
        prompts={"in_domain": list(ev.prompts.in_domain), "out_of_domain": list(ev.prompts.out_of_domain)},
        system_prompt=recipe.data.system_prompt,
        max_new_tokens=ev.max_new_tokens,
        batch_size=ev.batch_size,
        temperature=ev.temperature,
        seed=ev.seed,
    )


_ARCH_ALIASES = {"mistral": "llama"}  # llama.cpp writes Mistral checkpoints with the llama architecture


def _check_ggufs(base: str, tokenizer: Any, paths: Sequence[Path]) -> None:
    """Each GGUF must have the base's architecture, width, depth and vocabulary (metadata vs HF config)."""
    if not paths:
        return
    from transformers import AutoConfig

    from medkit.models import loadable

    cfg = AutoConfig.from_pretrained(loadable(base))
    arch = _ARCH_ALIASES.get(cfg.model_type, cfg.model_type)
    want = {
        "arch": arch,
        "n_embd": getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None),
        "n_layer": getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None),
    }
    vocab_ok = {cfg.vocab_size, len(tokenizer)}
    for path in paths:
        got = gguf_shape(path)
        for key, value in want.items():
            if got[key] != value:
                raise EvalError(
                    f"GGUF does not match the run's base: {key} {got[key]} != {value} ({base})",
                    where=str(path),
                )
        if got["vocab"] not in vocab_ok:
            raise EvalError(
                f"GGUF does not match the run's base: vocab {got['vocab']} != {cfg.vocab_size} ({base})",
                where=str(path),
            )


def gguf_shape(path: Path) -> dict[str, Any]:
    """arch, n_embd, n_layer and vocab size from a GGUF's metadata (gguf package, no weights read)."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except (ValueError, OSError) as exc:
        raise EvalError(f"not a readable GGUF file ({exc})", where=str(path)) from None

    def value(key: str) -> Any:
        field = reader.get_field(key)
        return None if field is None else field.contents()

    arch = value("general.architecture")
    tokens = reader.get_field("tokenizer.ggml.tokens")
    vocab = value(f"{arch}.vocab_size") or (len(tokens.data) if tokens is not None else None)
    if value("general.type") == "adapter":
        raise EvalError("this GGUF is a LoRA adapter, not a model", where=str(path))
    return {
        "arch": arch,
        "n_embd": value(f"{arch}.embedding_length"),
        "n_layer": value(f"{arch}.block_count"),
        "vocab": vocab,
    }


def _gguf_name(run: RunDir, path: Path, taken: dict[str, Any]) -> str:
    name = path.stem
    for sep in ("-", "_", "."):
        if name.startswith(run.name + sep) and len(name) > len(run.name) + 1:
            name = name[len(run.name) + 1 :]
    base, i = name, 2
    while name in taken or name in ("base", "tuned"):
        name, i = f"{base}-{i}", i + 1
    return name


# ---- scoring: transformers --------------------------------------------------------------------------


def _score_hf_models(run, recipe, tokenizer, evset: EvalSet, want_base: bool, want_tuned: bool, say) -> dict:
    """Load the base once; with the adapter on top, score 'base' with the adapter disabled."""
    import torch

    from medkit.models import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = recipe.model.dtype if device == "cuda" else "float32"
    try:
        model = load_model(recipe.model.base, dtype=dtype).to(device).eval()
    except MedkitError:
        raise
    out: dict[str, dict[str, Any]] = {}
    if want_tuned:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(run.adapter)).eval()
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise EvalError(
                f"cannot load the adapter ({str(exc).splitlines()[0]})", where=str(run.adapter)
            ) from None
    if want_base:
        say(f"scoring base ({Path(recipe.model.base).name}) on {len(evset.examples)} examples")
        if want_tuned:
            with model.disable_adapter():
                out["base"] = _score_hf(model, tokenizer, evset, device)
        else:
            out["base"] = _score_hf(model, tokenizer, evset, device)
        out["base"] = {"kind": "hf", "source": recipe.model.base, **out["base"]}
    if want_tuned:
        say(f"scoring tuned (adapter/) on {len(evset.examples)} examples")
        out["tuned"] = {
            "kind": "hf+lora",
            "source": str(run.adapter),
            **_score_hf(model, tokenizer, evset, device),
        }
    return out


def _score_hf(model, tokenizer, evset: EvalSet, device: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    nll, count = _hf_nll(model, tokenizer, evset.examples, evset.batch_size, device)
    messages = [c.messages for c in evset.conversations] + [m for _, _, m in evset.qualitative_messages()]
    gens = _hf_generate(model, tokenizer, messages, evset, device)
    return _finish(evset, nll, count, gens, time.perf_counter() - t0)


def _hf_nll(model, tokenizer, examples, batch_size: int, device: str) -> tuple[float, int]:
    """Summed negative log-likelihood over label positions (labels != -100) and their count."""
    import torch
    import torch.nn.functional as F

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples = sorted(examples, key=lambda e: len(e.input_ids))  # similar lengths batch with less padding
    total, count = 0.0, 0
    with torch.inference_mode():
        for i in range(0, len(examples), batch_size):
            batch = examples[i : i + batch_size]
            width = max(len(e.input_ids) for e in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            labels = torch.full((len(batch), width), -100, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, e in enumerate(batch):
                k = len(e.input_ids)
                ids[row, :k] = torch.tensor(e.input_ids)
                labels[row, :k] = torch.tensor(e.labels)
                mask[row, :k] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
            target = labels[:, 1:].to(device)
            loss = F.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)),
                target.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(loss)
            count += int((target != -100).sum())
    return total, count


def _stop_ids(tokenizer) -> list[int]:
    from medkit.templates import end_of_turn_token

    ids = set()
    eot = end_of_turn_token(tokenizer)
    for tok in (eot, tokenizer.eos_token):
        if tok is None:
            continue
        tid = tok if isinstance(tok, int) else tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid >= 0 and tid != tokenizer.unk_token_id:
            ids.add(tid)
    return sorted(ids)


def _hf_generate(model, tokenizer, conversations: list[list[dict]], evset: EvalSet, device: str):
    """Batched generation with left padding; returns (text, stopped-on-its-own) per conversation."""
    import torch

    stops = _stop_ids(tokenizer)
    pad = tokenizer.pad_token_id
    prompts = [_prompt_ids(tokenizer, msgs) for msgs in conversations]
    sample = evset.temperature > 0
    if sample:
        torch.manual_seed(evset.seed)
    order = sorted(range(len(prompts)), key=lambda k: len(prompts[k]))  # less left padding per batch
    out: list[tuple[str, bool]] = [("", False)] * len(prompts)
    with torch.inference_mode():
        for i in range(0, len(prompts), evset.batch_size):
            at = order[i : i + evset.batch_size]
            batch = [prompts[k] for k in at]
            width = max(len(p) for p in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, p in enumerate(batch):
                ids[row, width - len(p) :] = torch.tensor(p)
                mask[row, width - len(p) :] = 1
            kwargs: dict[str, Any] = {"do_sample": sample}
            if sample:
                kwargs["temperature"] = evset.temperature
            else:
                kwargs.update(temperature=None, top_p=None, top_k=None)
            gen = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=evset.max_new_tokens,
                eos_token_id=stops,
                pad_token_id=pad,
                **kwargs,
            )
            for k, row in zip(at, gen[:, width:].tolist(), strict=True):
                cut = next((j for j, t in enumerate(row) if t in stops), None)
                text = tokenizer.decode(row[:cut] if cut is not None else row, skip_special_tokens=True)
                out[k] = (text.strip(), cut is not None)
    return out


def _prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The prompt exactly as training saw it (medkit.data): template text, the tokenizer's BOS once."""
    from medkit.templates import render

    ids = tokenizer(render(tokenizer, messages, generation_prompt=True), add_special_tokens=False)[
        "input_ids"
    ]
    bos = tokenizer.bos_token_id
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    if bos is not None and probe and probe[0] == bos and not (ids and ids[0] == bos):
        ids = [bos, *ids]
    return ids


# ---- scoring: llama.cpp -----------------------------------------------------------------------------


def _score_gguf(path: Path, evset: EvalSet) -> dict[str, Any]:
    t0 = time.perf_counter()
    nll, count = _gguf_nll(path, evset.examples)
    from medkit.runtime import Runtime

    n_ctx = max(2048, max(len(e.input_ids) for e in evset.examples) + evset.max_new_tokens + 16)
    gens: list[tuple[str, bool]] = []
    with Runtime(path, ctx=n_ctx, seed=evset.seed) as rt:
        messages = [c.messages for c in evset.conversations] + [m for _, _, m in evset.qualitative_messages()]
        for msgs in messages:
            rt.reset()
            ans = rt.chat(
                msgs, temperature=evset.temperature, max_tokens=evset.max_new_tokens, seed=evset.seed
            )
            gens.append((ans.text.strip(), ans.stats.stop_reason == "eos"))
    return _finish(evset, nll, count, gens, time.perf_counter() - t0)


def _gguf_nll(path: Path, examples) -> tuple[float, int]:
    """The same token ids through llama.cpp (all logits kept); NLL summed over label positions."""
    import llama_cpp
    import numpy as np

    n_ctx = max(512, max(len(e.input_ids) for e in examples) + 8)
    try:
        llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_gpu_layers=0
        )
    except (ValueError, RuntimeError) as exc:
        raise EvalError(f"llama.cpp could not load the model ({exc})", where=str(path)) from None
    total, count = 0.0, 0
    try:
        for e in examples:
            llm.reset()
            llm.eval(list(e.input_ids))
            logits = np.asarray(llm.scores[: len(e.input_ids) - 1], dtype=np.float64)
            labels = np.asarray(e.labels[1:])
            keep = labels != -100
            if not keep.any():
                continue
            rows = logits[keep]
            top = rows.max(axis=1, keepdims=True)
            logz = (top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))).astype(np.float64)
            total += float((logz - rows[np.arange(len(rows)), labels[keep]]).sum())
            count += int(keep.sum())
    finally:
        llm.close()
    return total, count


# ---- results ----------------------------------------------------------------------------------------


def _finish(evset: EvalSet, nll: float, count: int, gens: list[tuple[str, bool]], seconds: float) -> dict:
    n = len(evset.conversations)
    main, qual = gens[:n], gens[n:]
    preds = [t for t, _ in main]
    values: dict[str, float | None] = {}
    if count:
        values["loss"] = nll / count
        values["ppl"] = perplexity(nll / count)
    values.update(task_metrics(evset.task, preds, evset.references))
    values["stop_rate"] = stop_rate([s for _, s in main])
    samples = [
        {"prompt": c.messages[-1]["content"], "reference": c.answer, "answer": t, "stopped": s}
        for c, (t, s) in zip(evset.conversations[:SAMPLES_KEPT], main[:SAMPLES_KEPT], strict=False)
    ]
    qualitative = [
        {"domain": d, "prompt": p, "answer": t}
        for (d, p, _), (t, _) in zip(evset.qualitative_messages(), qual, strict=True)
    ]
    return {
        "metrics": {k: values.get(k) for k in evset.metrics},
        "tokens_scored": count,
        "seconds": round(seconds, 2),
        "samples": samples,
        "qualitative": qualitative,
    }


def _report(run: RunDir, recipe, split: str, evset: EvalSet, results: dict) -> dict[str, Any]:
    return {
        "run": str(run.path),
        "recipe": recipe.name,
        "base": recipe.model.base,
        "split": split,
        "n": len(evset.conversations),
        "task": evset.task,
        "metrics": list(evset.metrics),
        "generation": {
            "max_new_tokens": evset.max_new_tokens,
            "temperature": evset.temperature,
            "seed": evset.seed,
            "greedy": evset.temperature == 0,
        },
        "sources": {name: r["source"] for name, r in results.items()},
        "table": {name: r["metrics"] for name, r in results.items()},
        "models": results,
    }


def _fmt(value: Any, metric: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if metric in ("ppl", "bleu", "mae", "rmse"):
        return f"{value:.2f}"
    return f"{value:.4f}" if metric == "loss" else f"{value:.3f}"


def _label(metric: str) -> str:
    return f"{metric} {'↑' if HIGHER_IS_BETTER.get(metric, True) else '↓'}"


def _best(table: dict[str, dict[str, Any]], metric: str) -> str | None:
    """The model with the strictly best value of ``metric`` (None on a tie or with one model)."""
    vals = {k: v[metric] for k, v in table.items() if v.get(metric) is not None}
    if len(vals) < 2:
        return None
    ordered = sorted(vals, key=vals.__getitem__, reverse=HIGHER_IS_BETTER.get(metric, True))
    return ordered[0] if _fmt(vals[ordered[0]], metric) != _fmt(vals[ordered[1]], metric) else None


def render_markdown(report: dict[str, Any]) -> str:
    """eval.md: the table, a few generations per model, and the qualitative prompts side by side."""
    metrics, table = report["metrics"], report["table"]
    arrows = [_label(m) for m in metrics]
    lines = [
        f"# Eval: {report['recipe']}",
        "",
        f"Split `{report['split']}`, {report['n']} examples, task `{report['task']}`, base `{report['base']}`, "
        f"{'greedy' if report['generation']['greedy'] else 'temperature ' + str(report['generation']['temperature'])}, "
        f"max {report['generation']['max_new_tokens']} new tokens.",
        "",
        "| metric | " + " | ".join(table) + " |",
        "|---|" + "---:|" * len(table),
    ]
    for metric, label in zip(metrics, arrows, strict=True):
        best = _best(table, metric)
        cells = [
            (f"**{_fmt(row[metric], metric)}**" if best == name else _fmt(row[metric], metric))
            for name, row in table.items()
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "## Sample generations", ""]
    for name, res in report["models"].items():
        lines.append(f"### {name}")
        for s in res["samples"]:
            lines += [
                f"- **Q:** {_one(s['prompt'])}",
                f"  - reference: {_one(s['reference'])}",
                f"  - answer: {_one(s['answer'])}",
            ]
        lines.append("")
    qual = _qualitative(report)
    if qual:
        names = list(report["models"])
        lines += [
            "## Qualitative prompts",
            "",
            "| domain | prompt | " + " | ".join(names) + " |",
            "|---" * (len(names) + 2) + "|",
        ]
        for (domain, prompt), answers in qual.items():
            lines.append(
                f"| {domain} | {_one(prompt)} | " + " | ".join(_one(answers.get(k, "")) for k in names) + " |"
            )
    return "\n".join(lines) + "\n"


def _one(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _qualitative(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, str]]:
    out: dict[tuple[str, str], dict[str, str]] = {}
    for name, res in report["models"].items():
        for q in res["qualitative"]:
            out.setdefault((q["domain"], q["prompt"]), {})[name] = q["answer"]
    return out


def render_png(report: dict[str, Any]) -> bytes:
    """eval.png: one bar panel per metric, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics, table = report["metrics"], report["table"]
    names = list(table)
    cols = min(4, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, metric in zip(axes.flat, metrics, strict=False):
        vals = [table[k][metric] for k in names]
        finite = [v if v is not None and math.isfinite(v) else 0.0 for v in vals]
        ax.bar(range(len(names)), finite, color=[colors[i % len(colors)] for i in range(len(names))])
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        top = max(finite, default=0.0)
        ax.set_ylim(0, 1.1 if metric in RATE_METRICS else (top * 1.15 or 1.0))
        ax.set_title(
            f"{metric} ({'higher' if HIGHER_IS_BETTER.get(metric, True) else 'lower'} is better)", fontsize=9
        )
        for i, v in enumerate(vals):
            ax.text(i, finite[i], _fmt(v, metric), ha="center", va="bottom", fontsize=7)
    for ax in list(axes.flat)[len(metrics) :]:
        ax.axis("off")
    fig.suptitle(f"{report['recipe']}: {report['split']} split, n={report['n']}", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def print_table(report: dict[str, Any], console: Any = None) -> None:
    """The comparison table (and the qualitative answers) with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    metrics, table = report["metrics"], report["table"]
    t = Table(title=f"{report['recipe']} · {report['split']} · n={report['n']} · task {report['task']}")
    t.add_column("metric", style="bold")
    for name in table:
        t.add_column(name, justify="right")
    for metric in metrics:
        best = _best(table, metric)
        cells = [
            (f"[green]{_fmt(row[metric], metric)}[/]" if best == name else _fmt(row[metric], metric))
            for name, row in table.items()
        ]
        t.add_row(_label(metric), *cells)
    console.print(t)
    qual = _qualitative(report)
    if qual:
        q = Table(title="qualitative prompts", show_lines=True)
        q.add_column("prompt", max_width=30)
        for name in report["models"]:
            q.add_column(name, max_width=40)
        for (domain, prompt), answers in qual.items():
            q.add_row(
                f"[dim]{domain}[/]\n{prompt}", *[_one(answers.get(k, ""), 200) for k in report["models"]]
            )
        console.print(q)


def _write_outputs(run: RunDir, report: dict[str, Any]) -> None:
    """Render everything first, then move each file into place atomically."""
    payload = {
        "eval.json": (json.dumps(report, indent=2, default=str) + "\n").encode(),
        "eval.md": render_markdown(report).encode(),
        "eval.png": render_png(report),
    }
    for name, data in payload.items():
        with atomic_path(run.path / name) as tmp:
            tmp.write_bytes(data)
    run.update_manifest(
        eval={"split": report["split"], "n": report["n"], "task": report["task"], "table": report["table"]}
    )


# ---- CLI --------------------------------------------------------------------------------------------


@click.command(name="eval")
@click.argument("target", required=False)
@click.option("--split", default=None, help="Split to evaluate (default: the recipe's eval.split).")
@click.option(
    "--n", "n", type=int, default=None, help="Examples to evaluate (default: the recipe's eval.n; 0: all)."
)
@click.option(
    "--gguf",
    "ggufs",
    multiple=True,
    type=click.Path(dir_okay=False),
    help="GGUF file to compare (repeatable; default: every GGUF in the run's export/).",
)
@click.option("--no-gguf", is_flag=True, help="Compare base and tuned only.")
@click.option(
    "--against",
    type=click.Choice(["base", "none"]),
    default="base",
    show_default=True,
    help="Also score the base model.",
)
@click.option("--no-tuned", is_flag=True, help="Skip the fine-tuned (adapter) model.")
@click.option("--metric", "metrics", multiple=True, help="Only these metrics (must fit the task).")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe key, e.g. eval.max_new_tokens=64.",
)
def command(target, split, n, ggufs, no_gguf, against, no_tuned, metrics, overrides) -> None:
    """Score base vs fine-tuned vs GGUF exports on held-out data.

    TARGET is a run directory or name (default: the latest run), or a .gguf file inside a run's
    export/ folder (compared instead of every GGUF in export/).
    """
    from rich.console import Console

    console = Console(stderr=False)
    run_spec: str | None = target
    gguf_list: list[str] | None = list(ggufs) or None
    if target and target.lower().endswith(".gguf"):
        path = Path(target)
        if not path.is_file():
            raise EvalError(f"GGUF file not found: {path}")
        run_spec, gguf_list = str(path.absolute().parent.parent), [str(path), *(gguf_list or [])]
        if not RunDir(Path(run_spec)).is_run():
            raise EvalError(
                f"{path} is not inside a run's export/ folder", hint="pass the run directory and --gguf FILE"
            )
    if no_gguf:
        gguf_list = []
    report = evaluate_run(
        run_spec,
        split=split,
        n=n,
        ggufs=gguf_list,
        against=against,
        tuned=not no_tuned,
        metrics=metrics or None,
        overrides=overrides,
        progress=lambda msg: console.print(f"[dim]{msg}[/]"),
    )
    print_table(report, console)
    console.print(f"wrote {Path(report['run']) / 'eval.md'}, eval.json, eval.png")
