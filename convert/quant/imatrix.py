"""Importance matrices (llama.cpp's imatrix) from the run's own data: the calibration pass.

    seqs, what = run_sequences(run, hf_dir)          # medkit.convert.quant.calib: the run's conversations, sampled
    im = collect(hf_dir, seqs, datasets=[what])      # mean x^2 per input column of every weight matrix

The importance of input column j of a weight W (out x in, GGUF row length = in) is E[x_j^2] over the
calibration tokens, read with forward hooks on the HF model's Linear/Conv1D layers. The pass batches
sequences of like length (padding masked out of the sums), runs in bfloat16 where the device is much
faster in it (forward_dtype: a GPU with bf16, a CPU with AMX), and sums in float32/float64; the Gram
matrices GPTQ needs are summed 2048 rows at a time, and an input with a Gram matrix takes its importance
from the diagonal. The tokens every sequence starts with (system prompt, template header) run once and
count once per sequence, the rest continuing from their cached keys and values: the same sums (exactly, in
float32), a third fewer tokens through the model on the Q&A demo. (SmolLM2 demo, 8192 tokens with Gram
matrices: ~8 s on 2 cores, was 28.5 s one float32 sequence at a time.) Weights fed the same input
(q/k/v, gate/up) share its sums. HF module names map to
GGUF tensor names through the model-family registry (medkit.convert.arch). The Q/K permutation of the
Llama family reorders output rows only, so input columns, and their importance, stay where they are.
The file and the quantizer's side: medkit.convert.quant.imatrix_file; what `medkit export` asks of the
pass (written once as export/imatrix.gguf, GPTQ's refiner): medkit.convert.quant.calibrate.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from medkit.convert.quant import gptq
from medkit.convert.quant.act_stats import (
    FORWARD_TOKENS,
    ActStats,
    calib_batches,
    forward_dtype,
    gguf_names,
    in_features,
    is_matmul,
    shared_prefix,
)
from medkit.convert.quant.imatrix_file import (
    IMatrix,
)
from medkit.errors import ConvertError

# ---- collection ----------------------------------------------------------------------------------

# the whole-model pass runs the tokens every row starts with once (act_stats.shared_prefix); False: every row whole
SHARE_PREFIX = True


def collect(
    hf_dir: Path,
    seqs: list[list[int]],
    *,
    datasets: list[str] | None = None,
    device: str | None = None,
    progress: Callable[[int], Callable[[int], None]] | None = None,
    grams: bool | Iterable[str] = False,
    dtype: str = "auto",
) -> IMatrix:
    """Run ``seqs`` through the HF model at ``hf_dir`` and sum x^2 per input column of each weight.
    ``grams``: also sum X^T X (medkit.convert.quant.gptq) for these GGUF weights (True: all of them, when they
    fit gptq.GRAM_BUDGET; else ``im.grams`` stays None). Weights fed the same input share one matrix.
    ``dtype``: the forward pass's (auto: forward_dtype(device)); the sums are float32/float64 either way."""
    import torch
    from transformers import AutoModelForCausalLM

    from medkit.convert import arch
    from medkit.convert.gguf.writer import read_config

    if not seqs:
        raise ConvertError("the calibration set is empty")
    config = read_config(Path(hf_dir))
    family = arch.detect(config, where=str(Path(hf_dir) / "config.json"))
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    run_dtype = forward_dtype(device) if dtype == "auto" else getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir), dtype=run_dtype).to(device).eval()
    layers = {n: m for n, m in model.named_modules() if is_matmul(m)}
    names = gguf_names(family, config, layers)
    widths = {g: in_features(layers[m]) for m, g in names.items()}
    want = _gram_names(grams, widths)
    stats = ActStats(widths, want, device)
    hook = stats.hook
    handles = [layers[m].register_forward_hook(hook(g)) for m, g in names.items()]
    # bfloat16 activations are exact in bfloat16: oneDNN may multiply them so, accumulating in float32 (3x)
    exact_bf16 = run_dtype == torch.bfloat16 and device == "cpu" and want
    mkl = getattr(torch.backends.mkldnn, "matmul", None)
    was = getattr(mkl, "fp32_precision", None)
    if exact_bf16 and was is not None:
        mkl.fp32_precision = "bf16"  # type: ignore[union-attr]
    step = progress(len(seqs)) if progress else (lambda n: None)
    # the body only, not the vocabulary-wide head: an untied head's input is the body's last hidden state
    body, head = model.base_model, model.get_output_embeddings()
    head_hook = next((hook(names[m]) for m, mod in layers.items() if mod is head and m in names), None)
    # the tokens every sequence starts with (the system prompt, the template's header) go through the model
    # once, their sums counted once per sequence; each batch then runs on from their cached keys and values
    # (transformers 5 calls the argument `cache`, `past_key_values` before; a body with neither runs whole)
    params = inspect.signature(body.forward).parameters
    cache_arg = next((a for a in ("cache", "past_key_values") if a in params), None)
    n_shared = shared_prefix(seqs) if SHARE_PREFIX and cache_arg and "use_cache" in params else 0
    try:
        with torch.inference_mode():
            prefix_cache = None
            if n_shared:
                stats.weight = float(len(seqs))
                out = body(torch.tensor([seqs[0][:n_shared]], device=device), use_cache=True)
                if head_hook is not None:
                    head_hook(head, (out.last_hidden_state,), None)
                stats.end_batch()
                prefix_cache = getattr(out, "cache", None) or getattr(out, "past_key_values", None)
                stats.weight = 1.0
                if prefix_cache is None:  # its sums are in: the rows cannot run whole now
                    raise ConvertError("the model returned no key/value cache for the calibration prefix")
            for batch in calib_batches([s[n_shared:] for s in seqs], FORWARD_TOKENS):
                width = max(len(ids) for ids in batch)
                ids = torch.zeros((len(batch), width), dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for i, row in enumerate(batch):  # padded on the right: a causal model's real tokens unchanged
                    ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
                real = mask.reshape(-1).nonzero().squeeze(1)
                stats.keep = real.to(device) if len(real) < mask.numel() else None
                kw: dict[str, Any] = {}
                if prefix_cache is not None and cache_arg is not None:
                    cache = copy.deepcopy(prefix_cache)
                    cache.batch_repeat_interleave(len(batch))
                    mask = torch.cat([torch.ones((len(batch), n_shared), dtype=torch.long), mask], dim=1)
                    kw = {cache_arg: cache, "use_cache": True}
                hidden = body(ids.to(device), attention_mask=mask.to(device), **kw).last_hidden_state
                if head_hook is not None:
                    head_hook(head, (hidden,), None)
                stats.end_batch()
                for row in batch:
                    step(n_shared + len(row))
            sums, counts, acc = stats.finish()
    finally:
        for h in handles:
            h.remove()
        if exact_bf16 and was is not None:
            mkl.fp32_precision = was  # type: ignore[union-attr]
    out = {g: s.cpu().numpy() for g, s in sums.items()}
    bad = next((g for g, s in out.items() if not np.isfinite(s).all()), None)
    if bad:
        raise ConvertError(f"the importance of {bad} is not finite (the model overflows on calibration text)")
    tokens = sum(len(s) for s in seqs)
    on_cpu = {id(h): h.cpu() for h in acc.values()}  # weights fed one input keep sharing one matrix
    shared = {g: on_cpu[id(h)] for g, h in acc.items()} if want else None
    return IMatrix(
        out, counts, list(datasets or ["medkit calibration"]), chunk_count=len(seqs),
        chunk_size=math.ceil(tokens / len(seqs)), arch=family.gguf_arch or "", tokens=tokens,
        seconds=time.perf_counter() - t0, grams=shared,
    )  # fmt: skip


def _gram_names(grams: bool | Iterable[str], rows: dict[str, int]) -> set[str]:
    """The GGUF weights whose Gram matrices collect() sums: the named ones, or all when they fit."""
    if grams is False:
        return set()
    if grams is True:
        rows = {g: n for g, n in rows.items() if g not in gptq.SKIP}
        return set(rows) if gptq.gram_bytes(rows) <= gptq.GRAM_BUDGET else set()
    return set(grams) & set(rows)
