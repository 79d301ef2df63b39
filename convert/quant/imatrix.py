"""Importance matrices (llama.cpp's imatrix) from the run's own data: the calibration pass, and what
`medkit export` asks of it.

    seqs, what = run_sequences(run, hf_dir)          # medkit.convert.quant.calib: the run's conversations, sampled
    im = collect(hf_dir, seqs, datasets=[what])      # mean x^2 per input column of every weight matrix
    im = for_export(source, types, "auto")           # the above, written once as export/imatrix.gguf

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
The file and the quantizer's side: medkit.convert.quant.imatrix_file.
"""

from __future__ import annotations

import copy
import inspect
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

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
from medkit.convert.quant.calib import DEFAULT_BUDGET, file_sequences, run_sequences
from medkit.convert.quant.imatrix_file import (
    IMATRIX_FILE,
    IMatrix,
    read_imatrix,
    record_in_run,
    source_record,
    write_imatrix,
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
    from medkit.convert.quant import gptq

    if grams is False:
        return set()
    if grams is True:
        rows = {g: n for g, n in rows.items() if g not in gptq.SKIP}
        return set(rows) if gptq.gram_bytes(rows) <= gptq.GRAM_BUDGET else set()
    return set(grams) & set(rows)


# ---- what `medkit export` asks -------------------------------------------------------------------


def check_needed(
    types: list[str], mode: str, calib: Path | None, is_run: bool, gptq: bool | None = None
) -> None:
    """A type that needs an importance matrix, and none to be had, or ``--gptq`` asked for without the
    calibration data it rounds on: one line, before anything is written."""
    from medkit.formats.gguf_types import BY_NAME, FLOAT_TYPES

    data = mode == "auto" and (is_run or calib is not None)
    if gptq is True and not data and any(t not in FLOAT_TYPES for t in types):
        why = f"--imatrix {mode}" if mode != "auto" else "a HF folder without --calib"
        raise ConvertError(
            f"--gptq rounds on the calibration texts themselves and {why} gives none",
            hint="drop --gptq (llama.cpp's rounding), or use --imatrix auto with a run or --calib FILE",
        )

    needs = [t for t in types if t in BY_NAME and BY_NAME[t].imatrix]
    if needs and (mode == "none" or (mode == "auto" and not is_run and calib is None)):
        why = "--imatrix none" if mode == "none" else "a HF folder without --calib"
        raise ConvertError(
            f"{needs[0]} needs an importance matrix and {why} gives none: llama.cpp's i-quants below "
            "4 bits are unusable without one",
            hint="drop --imatrix none for a run, or give --calib FILE or --imatrix PATH",
        )


def for_export(
    source: Any,
    types: list[str],
    mode: str,
    calib: Path | None = None,
    *,
    force: bool = False,
    budget: int = DEFAULT_BUDGET,
    log: Callable[[str], Any] = print,
    gptq: bool = False,
) -> IMatrix | None:
    """The importance matrix an export quantizes ``types`` with. ``mode`` auto (a run: its train split,
    written once as export/imatrix.gguf; a HF folder: ``calib`` or none), none, or an imatrix GGUF path.
    A run's run.json records it (imatrix: file, datasets, tokens, the calibrated types). ``gptq``: the
    same pass sums the Gram matrices GPTQ rounds with (a file on disk has none: computed again)."""
    from medkit.formats.gguf_types import BY_NAME, FLOAT_TYPES

    quants = [t for t in types if t not in FLOAT_TYPES]
    needed = any(t in BY_NAME and BY_NAME[t].imatrix for t in quants)
    im, path = _imatrix(source, mode, calib, force, budget, log, needed, gptq) if quants else (None, None)
    if source.run is not None and quants:
        record = {"file": str(path), "datasets": im.datasets, "tokens": im.tokens} if im else {"file": None}
        from medkit.convert.quant.gptq import rounds

        gptq_types = [t for t in quants if rounds(t)] if im is not None and im.seqs and gptq else []
        record_in_run(
            source, {**record, "calibrated": quants if im else [], "mode": mode, "gptq": gptq_types}
        )
    return im


LAYERWISE = True  # a family medkit.convert.quant.layerwise runs is calibrated a decoder layer at a time


def _imatrix(
    source: Any,
    mode: str,
    calib: Path | None,
    force: bool,
    budget: int,
    log: Callable[[str], Any],
    needed: bool,
    gptq: bool = False,
) -> tuple[IMatrix | None, Path | None]:
    if mode == "none" or (mode == "auto" and source.run is None and calib is None):
        return None, None
    if mode != "auto":
        return read_imatrix(Path(mode)), Path(mode)
    from medkit.provenance import ADAPTER_KEY, recorded_merge_hash, stale_reason

    path = Path(source.out_dir) / IMATRIX_FILE
    if path.is_file() and not force and calib is None and stale_reason(path) is None and not gptq:
        log(f"importance matrix: {path} (reused; --force computes it again)")
        return read_imatrix(path), path
    try:
        if calib is not None:
            seqs, what = file_sequences(calib, source.hf_dir, budget)
        else:
            seqs, what = run_sequences(source.run, source.hf_dir, budget)
    except ConvertError as exc:
        if calib is not None or needed:
            raise
        log(f"note: quantizing without an importance matrix ({exc.message})")  # the data moved since training
        return None, None
    from medkit.convert.gguf.writer import read_config
    from medkit.convert.quant import layerwise

    if LAYERWISE and layerwise.supports(read_config(Path(source.hf_dir))):
        im = layerwise.calibrate(source, seqs, what, gptq, log, progress_bar)
    else:
        with progress_bar() as bar:
            im = collect(source.hf_dir, seqs, datasets=[what], progress=bar, grams=gptq)
    im.seqs = seqs
    sha = recorded_merge_hash(source.hf_dir)
    im.metadata = {**({ADAPTER_KEY: sha} if sha else {}), "medkit.imatrix.tokens": str(im.tokens)}
    im.metadata.update(source_record(source.hf_dir))
    write_imatrix(im, path)
    log(f"wrote {path} ({what}, {im.tokens} tokens, {len(im.sums)} tensors) in {im.seconds:.1f}s")
    return im, path


@contextmanager
def progress_bar(console: Any = None) -> Iterator[Callable[[int], Callable[[int], None]]]:
    """Rows and tokens/s on stderr while the importance matrix is read (shown on a terminal only)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    console = console or Console(stderr=True)
    cols = (TextColumn("importance matrix"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[tps]}"), TimeRemainingColumn())  # fmt: skip
    with Progress(*cols, console=console, transient=True, disable=not console.is_terminal) as bar:
        t0, seen = time.perf_counter(), [0]

        def start(total: int) -> Callable[[int], None]:
            task = bar.add_task("rows", total=total, tps="")

            def step(tokens: int) -> None:
                seen[0] += tokens
                tps = f"{seen[0] / max(1e-9, time.perf_counter() - t0):,.0f} tokens/s"
                bar.update(task, advance=1, tps=tps, refresh=True)

            return step

        yield start
