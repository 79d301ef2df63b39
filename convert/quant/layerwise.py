"""The calibration pass one decoder layer at a time: memory grows with one layer, not with the model.

    im = collect_layerwise(hf_dir, seqs, grams=True, store=GramStore(tmp_dir))

The calibration rows are embedded (the embedding rows they use read from the memory-mapped safetensors,
never the whole table), then carried through the decoder a layer at a time: each layer's weights are read
from the safetensors when its turn comes (medkit.convert.gguf.writer.WeightReader, memory-mapped), its
inputs' importance sums and Gram matrices taken by the same hooks as the whole-model pass
(medkit.convert.quant.act_stats), the layer freed, and its Gram matrices handed to ``store`` (written to disk,
read back a few layers at a time by GPTQ: medkit.convert.quant.gram_store) before the next. Where the disk
has no room for them (a 7B's take ~31 GiB), the loop runs again for each quantized file and GPTQ rounds each
layer as soon as its matrices are summed (Recompute): nothing kept, one more pass per file. Each layer sees the
previous layer's full-precision outputs, as the whole-model pass does, so the sums equal its sums (to float
rounding; tests/convert/quant/test_layerwise.py). The tokens every row starts with run once per layer, their keys
and values reused by every batch, as in the whole-model pass. The loop is device-agnostic (``device``).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
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
from medkit.convert.quant.imatrix_file import IMatrix
from medkit.errors import ConvertError

# model types whose body is embed_tokens -> layers -> norm, with rotary position embeddings computed
# once by the body and no scaling of the embeddings: the layer loop runs them; any other family takes
# the whole-model pass (medkit.convert.quant.imatrix.collect)
LAYERWISE_TYPES = ("llama", "mistral", "qwen2", "qwen3")


def supports(config: dict[str, Any]) -> bool:
    return config.get("model_type") in LAYERWISE_TYPES


DEVICE_ENV = "MEDKIT_CALIB_DEVICE"  # cpu or cuda[:N]: where the layer loop runs (default: CUDA when present)


def calib_device() -> str:
    """The device the calibration's layer loop runs on: MEDKIT_CALIB_DEVICE, else CUDA when torch sees a
    GPU, else the CPU (GPTQ's rounding stays on the CPU either way)."""
    import os

    import torch

    asked = os.environ.get(DEVICE_ENV, "").strip()
    if asked:
        if asked.startswith("cuda") and not torch.cuda.is_available():
            raise ConvertError(f"{DEVICE_ENV}={asked} but torch sees no CUDA device")
        return asked
    return "cuda" if torch.cuda.is_available() else "cpu"


def _rows(reader: Any, name: str, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` of the 2-D tensor ``name`` as float32, read from the memory map (not the whole table)."""
    from medkit.convert.gguf.safetensors_io import DTYPES, widen_bf16

    e = reader.entries.get(name)
    if e is None:
        raise ConvertError(f"the model has no tensor {name}", where=str(reader.folder))
    if reader._pickled is not None or e.dtype not in ("BF16", "F16", "F32"):
        return np.asarray(reader.get(name)[ids], dtype=np.float32)
    count = int(np.prod(e.shape, dtype=np.int64))
    raw = np.memmap(e.file, dtype=DTYPES[e.dtype], mode="r", offset=e.start, shape=(count,)).reshape(e.shape)
    got = np.asarray(raw[ids])
    return widen_bf16(got) if e.dtype == "BF16" else got.astype(np.float32)


def _load(module: Any, prefix: str, reader: Any, device: Any, dtype: Any) -> None:
    """Give ``module`` (on the meta device) its weights from ``reader``, in place."""
    import torch

    module.to_empty(device=device)
    for name, p in module.named_parameters():
        key = prefix + name
        if key not in reader.entries:
            raise ConvertError(f"the model has no tensor {key}", where=str(reader.folder))
        with torch.no_grad():
            p.copy_(torch.from_numpy(np.array(reader.get(key), dtype=np.float32)).to(dtype))


def _free(module: Any) -> None:
    module.to_empty(device="meta")


def collect_layerwise(
    hf_dir: Path,
    seqs: list[list[int]],
    *,
    datasets: list[str] | None = None,
    device: str | None = None,
    progress: Callable[[int], Callable[[int], None]] | None = None,
    grams: bool = False,
    dtype: str = "auto",
    store: Any = None,
) -> IMatrix:
    """medkit.convert.quant.imatrix.collect, a decoder layer at a time (same arguments and result). ``store``
    (gram_store.GramStore) takes each layer's Gram matrices as soon as they are summed (``im.grams`` is
    then the store); without one they stay in memory (``im.grams`` a dict, as collect's)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from medkit.convert import arch, memtrace
    from medkit.convert.gguf.writer import WeightReader, read_config

    if not seqs:
        raise ConvertError("the calibration set is empty")
    hf_dir = Path(hf_dir)
    config = read_config(hf_dir)
    if not supports(config):
        raise ConvertError(f"the layer-by-layer pass does not run {config.get('model_type')} models")
    family = arch.detect(config, where=str(hf_dir / "config.json"))
    device = device or calib_device()
    t0 = time.perf_counter()
    run_dtype = forward_dtype(device) if dtype == "auto" else getattr(torch, dtype)
    reader = WeightReader(hf_dir)
    hf_config = AutoConfig.from_pretrained(str(hf_dir))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config, dtype=run_dtype, attn_implementation="sdpa")
    with torch.device(device):
        rotary = type(model.base_model.rotary_emb)(hf_config)
    body, prefix = model.base_model, model.base_model_prefix
    layers = {n: m for n, m in model.named_modules() if is_matmul(m)}
    names = gguf_names(family, config, layers)
    widths = {g: in_features(layers[m]) for m, g in names.items()}
    want = set(widths) if grams else set()  # every weight's (an export's GPTQ rounds them from the store)
    head = model.get_output_embeddings()
    head_name = next((names[m] for m, mod in layers.items() if mod is head and m in names), None)

    n_shared = shared_prefix(seqs)
    batches = calib_batches([s[n_shared:] for s in seqs], FORWARD_TOKENS)
    embed = f"{prefix}.embed_tokens.weight"

    def embedded(ids: list[int]) -> Any:
        return torch.from_numpy(_rows(reader, embed, np.asarray(ids))).to(device, run_dtype)

    # the carried state: the shared prefix's hidden states [1, P, h] and each batch's [B, W, h] (padded)
    pre = embedded(seqs[0][:n_shared])[None] if n_shared else None
    hidden, keeps = [], []
    for batch in batches:
        width = max(len(r) for r in batch)
        h = torch.zeros((len(batch), width, pre.shape[-1] if pre is not None else hf_config.hidden_size),
                        dtype=run_dtype, device=device)  # fmt: skip
        mask = torch.zeros((len(batch), width), dtype=torch.bool)
        for i, row in enumerate(batch):  # padded on the right: a causal model's real tokens unchanged
            h[i, : len(row)] = embedded(row)
            mask[i, : len(row)] = True
        real = mask.reshape(-1).nonzero().squeeze(1)
        hidden.append(h)
        keeps.append(real.to(device) if len(real) < mask.numel() else None)
    pos_pre = torch.arange(n_shared, device=device)[None]
    sums: dict[str, Any] = {}
    counts: dict[str, float] = {}
    kept_grams: dict[str, Any] = {}
    gram_flops = [0]
    step = progress(len(body.layers)) if progress else (lambda n: None)

    def run_layer(layer: Any, i: int, mine: dict[str, str]) -> ActStats:
        from transformers import DynamicCache

        stats = ActStats({g: widths[g] for g in mine.values()}, want & set(mine.values()), device)
        handles = [layers[m].register_forward_hook(stats.hook(g)) for m, g in mine.items()]
        nonlocal pre
        try:
            cache = None
            if n_shared:
                stats.weight = float(len(seqs))
                cache = DynamicCache(config=hf_config)
                pe = rotary(pre, pos_pre)
                out_pre = layer(pre, attention_mask=None, position_ids=pos_pre, cache=cache, use_cache=True,
                                position_embeddings=pe)  # fmt: skip
                stats.end_batch()
                stats.weight = 1.0
            for b, h in enumerate(hidden):
                stats.keep = keeps[b]
                nb, width = h.shape[:2]
                pos = (torch.arange(width, device=device) + n_shared)[None]
                kw: dict[str, Any] = {"attention_mask": None}
                if cache is not None:  # every row continues from the prefix's keys and values
                    c = copy.deepcopy(cache)
                    c.batch_repeat_interleave(nb)
                    cols = torch.arange(n_shared + width, device=device)
                    allowed = (cols[None, :] < n_shared) | (
                        cols[None, :] - n_shared <= pos[0][:, None] - n_shared
                    )
                    kw = {"attention_mask": allowed[None, None].expand(nb, 1, -1, -1), "cache": c,
                          "use_cache": True}  # fmt: skip
                hidden[b] = layer(h, position_ids=pos, position_embeddings=rotary(h, pos), **kw)
                stats.end_batch()
            if n_shared:
                pre = out_pre
        finally:
            for hd in handles:
                hd.remove()
        return stats

    def take(stats: ActStats) -> None:
        """A finished layer's (or the head's) sums and counts kept, its Gram matrices to the store (or kept)."""
        s, c_, g = stats.finish()
        gram_flops[0] += stats.gram_flops
        sums.update(s)
        counts.update(c_)
        stats.acc.clear()  # the matrices' only other holder: the store may free them as it goes
        if g and store is not None:
            store.put(g)
        else:
            kept_grams.update(g)

    with torch.inference_mode():
        for i, layer in enumerate(body.layers):
            memtrace.phase(f"calibration: layer {i}")
            lp = f"{prefix}.layers.{i}."
            _load(layer, lp, reader, device, run_dtype)
            stats = run_layer(layer, i, {m: g for m, g in names.items() if m.startswith(lp)})
            _free(layer)
            take(stats)  # the layer's weights freed first: a store that rounds (Recompute) has their room
            step(sum(len(s) for s in seqs) // len(body.layers))
        memtrace.phase("calibration: head")
        _load(body.norm, f"{prefix}.norm.", reader, device, run_dtype)
        if head_name is not None:  # the head's input: the last hidden state, normed
            stats = ActStats({head_name: widths[head_name]}, want & {head_name}, device)
            if pre is not None:
                stats.weight = float(len(seqs))
                stats.add(head_name, body.norm(pre))
                stats.end_batch()
                stats.weight = 1.0
            for h, keep in zip(hidden, keeps, strict=True):
                stats.keep = keep
                stats.add(head_name, body.norm(h))
                stats.end_batch()
            take(stats)
    out = {g: s.cpu().numpy() for g, s in sums.items()}
    bad = next((g for g, s in out.items() if not np.isfinite(s).all()), None)
    if bad:
        raise ConvertError(f"the importance of {bad} is not finite (the model overflows on calibration text)")
    tokens = sum(len(s) for s in seqs)
    seconds = time.perf_counter() - t0
    flops, mfu = _work(model, seqs, n_shared, gram_flops[0], seconds, run_dtype, device)
    if store is not None:
        store.close_writing()
    on_cpu = {id(h): h.cpu() for h in kept_grams.values()}
    held = {g: on_cpu[id(h)] for g, h in kept_grams.items()}
    return IMatrix(
        out, counts, list(datasets or ["medkit calibration"]), chunk_count=len(seqs),
        chunk_size=math.ceil(tokens / len(seqs)), arch=family.gguf_arch or "", tokens=tokens,
        seconds=seconds, grams=store if store is not None else (held if want else None), flops=flops, mfu=mfu,
    )  # fmt: skip


def _work(model: Any, seqs: list[list[int]], n_shared: int, grams: int, seconds: float, dtype: Any,
          device: Any) -> tuple[float, str]:  # fmt: skip
    """The pass's FLOPs (the body's forward over the real tokens, the shared prefix once, and the Gram
    sums) and its MFU line (medkit.train.flops, the one home of that arithmetic)."""
    from medkit.train.flops import ModelFlops, causal_pairs, mfu_line

    mf = ModelFlops.from_model(model)
    rest = [len(s) - n_shared for s in seqs]
    pairs = causal_pairs(n_shared) + sum(n * n_shared + causal_pairs(n) for n in rest)
    flops = float(mf.forward(n_shared + sum(rest), pairs) + grams)
    return flops, mfu_line(flops, seconds, mf, FORWARD_TOKENS, dtype=dtype, device=device)


def calibrate(
    source: Any,
    seqs: list[list[int]],
    what: str,
    gptq: bool,
    log: Callable[[str], Any],
    progress_bar: Any,
    reserve: int = 0,
) -> IMatrix:
    """An export's calibration pass (medkit.convert.quant.calibrate._imatrix), a decoder layer at a time: its memory
    planned first (one line when it cannot fit), the Gram matrices written to a hidden folder of the export
    (``im.grams``, the store) that GPTQ reads back and export removes, or, when the disk lacks room for
    them beside the ``reserve`` bytes the export has still to write, computed again for each quantized file
    (``im.grams`` a Recompute). ``progress_bar``: imatrix's."""
    import tempfile

    import torch

    from medkit.convert.gguf.writer import read_config
    from medkit.convert.quant import memplan
    from medkit.convert.quant.gram_store import GramStore

    config = read_config(Path(source.hf_dir))

    device = calib_device()
    width = 2 if forward_dtype(device) == torch.bfloat16 else 4
    plan = memplan.plan_calibration(config, sum(map(len, seqs)) * 5 // 4, width)
    on_disk = not gptq or memplan.grams_on_disk(plan.store, Path(source.out_dir), reserve)
    plan.streamed = not on_disk
    if device != "cpu":
        plan = plan.on_gpu(device_free(device))
    free, why = memplan.available()
    blocks = plan.fit(free, why)
    store = None
    if gptq and on_disk:
        Path(source.out_dir).mkdir(parents=True, exist_ok=True)
        # named as medkit's other partial outputs, so a killed export's folder is removed by the next one
        tmp = tempfile.mkdtemp(prefix=f".{source.name}-grams.gguf.", suffix=".partial", dir=source.out_dir)
        store = GramStore(Path(tmp))
    try:
        with progress_bar() as bar:
            im = collect_layerwise(
                source.hf_dir, seqs, datasets=[what], progress=bar, grams=gptq and on_disk, store=store,
                device=device,
            )  # fmt: skip
    except BaseException:
        if store is not None:
            store.remove()
        raise
    if store is not None:
        store.budget = blocks * max(store.block_bytes().values())
    rounding = f"; GPTQ {blocks} block(s) at a time" if gptq and on_disk else ""
    if gptq and not on_disk:
        im.grams = Recompute(Path(source.hf_dir), seqs, device, log)
        rounding = (f"; no disk for the Gram matrices ({plan.store / 2**30:.1f} GiB): GPTQ rounds each layer "
                    "as the pass runs again for each quantized file")  # fmt: skip
    log(f"calibration pass: {im.mfu} (forward{' and Gram sums' if gptq and on_disk else ''})")
    log(f"calibrated a decoder layer at a time: planned peak ~{plan.need(blocks) / 2**30:.1f} GiB "
        f"({free / 2**30:.1f} GiB free, {why}){rounding}")  # fmt: skip
    return im


class Recompute:
    """GPTQ's Gram matrices with no disk to keep them: for each quantized file the layer loop runs again and
    each layer's matrices are rounded with as soon as they are summed (one input at a time), then dropped.
    Same matrices as the store's (the same pass), so the same codes; one more pass per file."""

    def __init__(self, hf_dir: Path, seqs: list[list[int]], device: str, log: Callable[[str], Any]) -> None:
        self.hf_dir, self.seqs, self.device, self.log = hf_dir, seqs, device, log

    def refiner(self, f16: Path, budget: int = 0) -> Callable[[Path], Any]:
        def run(path: Path) -> Any:
            sink = _Rounding(path, f16)
            t0 = time.perf_counter()
            collect_layerwise(self.hf_dir, self.seqs, grams=True, store=sink, device=self.device)
            self.log(f"GPTQ: calibration pass again, rounding as it went ({time.perf_counter() - t0:.0f}s)")
            return sink.total

        return run


class _Rounding:
    """The store a Recompute pass hands each layer's Gram matrices to: rounds ``path``'s weights with
    them at once (gptq.refine, one input's weights at a time) and keeps nothing."""

    def __init__(self, path: Path, f16: Path) -> None:
        from medkit.convert.quant.gptq import RefineResult, refinable_shapes

        self.path, self.f16 = path, f16
        self.names = set(refinable_shapes(f16))
        self.total = RefineResult(0, 0.0, {})

    def put(self, grams: dict[str, Any]) -> None:
        from medkit.convert import memtrace
        from medkit.convert.quant.gptq import refine

        by_input: dict[int, tuple[Any, list[str]]] = {}
        for name, h in grams.items():
            if name in self.names:
                by_input.setdefault(id(h), (h, []))[1].append(name)
        grams.clear()
        while by_input:  # each input's matrix freed once its weights are rounded
            _, (h, members) = by_input.popitem()
            memtrace.phase(f"gptq: {members[0]}")
            self.total.add(
                refine(self.path, self.f16, {m: h for m in members}, members, {}, keep_weights=False)
            )
            del h

    def close_writing(self) -> None:
        """Nothing kept."""


def device_free(device: str) -> int:
    import torch

    return int(torch.cuda.mem_get_info(torch.device(device))[0])
