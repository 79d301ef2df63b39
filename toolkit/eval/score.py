"""`medkit eval` scoring backends: transformers (base, base+adapter) and llama.cpp (GGUF).

Each backend returns the same dict per model: metrics, tokens scored, seconds, a few samples and the
qualitative answers. Torch, transformers, peft and llama.cpp are imported inside the functions that need them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkit.errors import EvalError
from medkit.eval.metrics import Scored, compute

SAMPLES_KEPT = 5  # generations stored per model in eval.json / eval.md


@dataclass
class EvalSet:
    """What every model is scored on: token ids + labels (loss) and conversations (generation)."""

    task: str
    metrics: tuple[str, ...]
    examples: list[Any]  # medkit.data.tokens.Example
    conversations: list[Any]  # medkit.data.tokens.Conversation
    prompts: dict[str, list[str]]  # "in_domain" / "out_of_domain" -> user prompts
    system_prompt: str
    max_new_tokens: int
    batch_size: int
    temperature: float
    seed: int
    enable_thinking: bool = (
        False  # the recipe's model.enable_thinking: prompts rendered as training rendered them
    )
    constrain: str | None = None  # answers held to an ICD-10 code set (medkit.eval.constrained)
    # model -> per example (summed NLL, tokens) already scored: a constrained pass reuses its free pass's
    # (the constraint changes the answers, not the likelihood of the references)
    likelihoods: dict[str, list[tuple[float, int]]] = field(default_factory=dict)

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


# ---- scoring: transformers --------------------------------------------------------------------------


def score_hf_models(
    run, recipe, tokenizer, evset: EvalSet, want_base: bool, want_tuned: bool, say, others=()
) -> dict:
    """Load the base once; with the adapter on top, score 'base' with the adapter disabled. ``others`` is
    [(column name, adapter folder)]: other runs' adapters on the same base (`--against RUN`), loaded beside
    the run's as further PEFT adapters (no second copy of the base) and scored on the same examples."""
    import torch

    from medkit.models import load_model

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = recipe.model.dtype if device == "cuda" else "float32"
    model = load_model(recipe.model.base, dtype=dtype).to(device).eval()
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
                out["base"] = _score_hf(model, tokenizer, evset, device, "base")
        else:
            out["base"] = _score_hf(model, tokenizer, evset, device, "base")
        out["base"] = {"kind": "hf", "source": recipe.model.base, **out["base"]}
    if want_tuned:
        say(f"scoring tuned (adapter/) on {len(evset.examples)} examples")
        out["tuned"] = {
            "kind": "hf+lora",
            "source": str(run.adapter),
            **_score_hf(model, tokenizer, evset, device, "tuned"),
        }
    for k, (name, adapter) in enumerate(others):
        try:
            model.load_adapter(str(adapter), adapter_name=f"against{k}")
        except (ValueError, KeyError, RuntimeError, OSError) as exc:
            raise EvalError(
                f"cannot load the adapter ({str(exc).splitlines()[0]})", where=str(adapter)
            ) from None
        model.set_adapter(f"against{k}")
        say(f"scoring {name} ({adapter}) on {len(evset.examples)} examples")
        out[name] = {
            "kind": "hf+lora",
            "source": str(adapter),
            **_score_hf(model.eval(), tokenizer, evset, device, name),
        }
    if others:
        model.set_adapter("default")
    return out


def _score_hf(model, tokenizer, evset: EvalSet, device: str, name: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    from medkit.train.loss import label_nll_rows

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    rows = evset.likelihoods.get(name) or label_nll_rows(
        model, evset.examples, batch_size=evset.batch_size, pad_id=pad, device=device
    )
    messages = [c.messages for c in evset.conversations] + [m for _, _, m in evset.qualitative_messages()]
    gens = _hf_generate(model, tokenizer, messages, evset, device)
    return _finish(evset, rows, gens, time.perf_counter() - t0)


def _stop_ids(tokenizer) -> list[int]:
    from medkit.formats.chat_template import end_of_turn_token

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
    prompts = [_prompt_ids(tokenizer, msgs, evset.enable_thinking) for msgs in conversations]
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
            if evset.constrain:
                from medkit.eval.constrained import processors

                kwargs["logits_processor"] = processors(tokenizer, evset, width, stops)
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


def _prompt_ids(tokenizer, messages: list[dict], enable_thinking: bool = False) -> list[int]:
    """The prompt exactly as training saw it (medkit.data.tokens): template text with the recipe's thinking
    setting, the tokenizer's BOS once."""
    from medkit.formats.chat_template import render

    text = render(tokenizer, messages, generation_prompt=True, enable_thinking=enable_thinking)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = tokenizer.bos_token_id
    probe = tokenizer("a", add_special_tokens=True)["input_ids"]
    if bos is not None and probe and probe[0] == bos and not (ids and ids[0] == bos):
        ids = [bos, *ids]
    return ids


# ---- scoring: llama.cpp -----------------------------------------------------------------------------


def score_gguf(path: Path, evset: EvalSet, name: str | None = None) -> dict[str, Any]:
    """``name``: the model's column, whose likelihood rows ``evset.likelihoods`` may already hold."""
    t0 = time.perf_counter()
    rows = evset.likelihoods.get(name or "") or _gguf_nll(path, evset.examples)
    from medkit.runtime.engine import Runtime

    n_ctx = max(2048, max(len(e.input_ids) for e in evset.examples) + evset.max_new_tokens + 16)
    gens: list[tuple[str, bool]] = []
    with Runtime(
        path, ctx=n_ctx, seed=evset.seed, enable_thinking=evset.enable_thinking, constrain=evset.constrain
    ) as rt:
        messages = [c.messages for c in evset.conversations] + [m for _, _, m in evset.qualitative_messages()]
        for msgs in messages:
            rt.reset()
            ans = rt.chat(
                msgs, temperature=evset.temperature, max_tokens=evset.max_new_tokens, seed=evset.seed
            )
            gens.append((ans.text.strip(), ans.stats.stop_reason == "eos"))
    return _finish(evset, rows, gens, time.perf_counter() - t0)


def _gguf_nll(path: Path, examples) -> list[tuple[float, int]]:
    """The same token ids through llama.cpp (all logits kept); per example, (NLL summed over its label
    positions, their count)."""
    import llama_cpp
    import numpy as np

    n_ctx = max(512, max(len(e.input_ids) for e in examples) + 8)
    try:
        llm = llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, logits_all=True, verbose=False, n_gpu_layers=0
        )
    except (ValueError, RuntimeError) as exc:
        raise EvalError(f"llama.cpp could not load the model ({exc})", where=str(path)) from None
    out: list[tuple[float, int]] = []
    try:
        for e in examples:
            labels = np.asarray(e.labels[1:])
            keep = labels != -100
            if not keep.any():
                out.append((0.0, 0))
                continue
            llm.reset()
            llm.eval(list(e.input_ids))
            logits = np.asarray(llm.scores[: len(e.input_ids) - 1], dtype=np.float64)
            rows = logits[keep]
            top = rows.max(axis=1, keepdims=True)
            logz = (top[:, 0] + np.log(np.exp(rows - top).sum(axis=1))).astype(np.float64)
            out.append((float((logz - rows[np.arange(len(rows)), labels[keep]]).sum()), int(keep.sum())))
    finally:
        llm.close()
    return out


# ---- results ----------------------------------------------------------------------------------------


def _finish(
    evset: EvalSet, rows: list[tuple[float, int]], gens: list[tuple[str, bool]], seconds: float
) -> dict:
    n = len(evset.conversations)
    main, qual = gens[:n], gens[n:]
    # every answer and each example's likelihood: what the report's intervals resample
    per = {"answers": [t for t, _ in main], "stopped": [s for _, s in main],
           "nll": [r[0] for r in rows], "tokens": [r[1] for r in rows]}  # fmt: skip
    scored = scored_of(evset, per)
    samples = [
        {"prompt": c.messages[-1]["content"], "reference": c.answer, "answer": t, "stopped": s}
        for c, (t, s) in zip(evset.conversations[:SAMPLES_KEPT], main[:SAMPLES_KEPT], strict=False)
    ]
    qualitative = [
        {"domain": d, "prompt": p, "answer": t}
        for (d, p, _), (t, _) in zip(evset.qualitative_messages(), qual, strict=True)
    ]
    return {
        "metrics": compute(evset.metrics, scored),
        "tokens_scored": scored.tokens,
        "seconds": round(seconds, 2),
        "samples": samples,
        "qualitative": qualitative,
        "rows": per,
    }


def scored_of(evset: EvalSet, rows: dict[str, Any]) -> Scored:
    """A model's Scored from its result's ``rows`` (answers, stopped, per-example nll and tokens)."""
    nll, tokens = list(rows["nll"]), list(rows["tokens"])
    return Scored(list(rows["answers"]), evset.references, list(rows["stopped"]), sum(nll), sum(tokens),
                  nll, tokens)  # fmt: skip
