"""`--gguf auto:SIZE`: per-tensor quant types chosen by measurement to keep the most quality under a size.

    res = quantize_auto(f16, dst, parse_budget("auto:90MB"), imatrix=im, texts=held_out, threads=2)
    res.types   # {tensor name: GGML type}, res.kl (KL vs the f16 GGUF on held-out rows), res.size

1. Every quantizable weight gets a ladder of candidate types its row length allows (the K/i-quant ladder
   for rows a multiple of 256, the 32-wide one for the rest: no fallback surprises).
2. The proxy error of each (tensor, type): llama.cpp quantizes the whole model once per ladder rung (with
   the imatrix), gguf.quants dequantizes, and err = sum_j imp_j |W_j - Q_j|^2 / sum_j imp_j |W_j|^2 (imp =
   the imatrix's mean x^2 of input column j: the relative error of the tensor's output).
3. The sensitivity of each tensor group (attn_q, ffn_down, token_embd, ...): the KL vs the f16 model, on
   held-out rows, when that group alone is at its lowest rung (the rest f16). KL_g / sum(err at lowest)
   scales the proxy into KL units per group: cost(t, T) = alpha_g * err(t, T).
4. Greedy by sensitivity per byte: all tensors start at the cheapest rung; the upgrade with the largest
   cost drop per added byte that still fits is taken until nothing fits.
5. The mix is written through tt_overrides, its KL measured, and the types and KL recorded
   (medkit.quant.mix, medkit.quant.kl) in the GGUF by a copy pass (llama.cpp only_copy).
"""

from __future__ import annotations

import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medkit.convert.quant.quantize import quantize
from medkit.errors import ConvertError
from medkit.formats.gguf_types import BY_NAME, QUANT_TYPES, SizeBudget

LADDER_K = ("Q3_K", "IQ4_XS", "Q4_K", "Q5_K", "Q6_K", "Q8_0")  # rows a multiple of 256
LADDER_32 = ("Q4_0", "IQ4_NL", "Q5_0", "Q5_1", "Q8_0")  # other rows (multiples of 32)
# the file type of every pass: 32-wide blocks (Q8_0), so llama.cpp drops no override for a row fallback
PASS_TYPE = next(t.name for t in QUANT_TYPES if t.ggml == "Q8_0")
ALIGN_SLACK = 32  # bytes per tensor the file's alignment padding may add


@dataclass
class Tensor:
    name: str
    ne0: int  # row length
    n: int  # weights
    ladder: tuple[str, ...]

    def nbytes(self, ggml: str) -> int:
        import gguf

        block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[ggml]]
        return self.n // block * size


@dataclass
class MixResult:
    path: Path
    types: dict[str, str]  # tensor -> GGML type
    kl: float  # measured, vs the f16 GGUF, on held-out rows
    size: int  # bytes of the file written
    budget: int  # bytes allowed (tensor data + the file's fixed part)
    group_kl: dict[str, float] = field(default_factory=dict)  # sensitivity: KL with the group alone low
    seconds: float = 0.0

    def summary(self) -> str:
        """'Q4_K:120,Q6_K:61,...' (fits llama.cpp's 127-byte metadata strings)."""
        counts = Counter(self.types.values())
        return ",".join(f"{t}:{n}" for t, n in sorted(counts.items(), key=lambda kv: -kv[1]))[:127]


def group_of(name: str) -> str:
    """blk.3.attn_q.weight -> attn_q; token_embd.weight -> token_embd."""
    return re.sub(r"^blk\.\d+\.", "", name).removesuffix(".weight")


def plan(f16: Path) -> tuple[list[Tensor], int]:
    """The quantizable weights of ``f16`` with their ladders, and the bytes of everything else in the file."""
    import gguf

    reader = gguf.GGUFReader(str(f16))
    tensors, kept = [], 0
    for t in reader.tensors:
        shape = [int(d) for d in t.shape]
        quantizable = (
            len(shape) == 2 and t.name.endswith(".weight") and "_norm" not in t.name
            and not re.search(r"position_embd|token_types|ffn_gate_inp", t.name) and shape[0] % 32 == 0
        )  # fmt: skip
        if not quantizable:
            kept += int(t.n_bytes)
            continue
        ladder = LADDER_K if shape[0] % 256 == 0 else LADDER_32
        tensors.append(Tensor(t.name, shape[0], int(t.n_elements), ladder))
    fixed = Path(f16).stat().st_size - sum(int(t.n_bytes) for t in reader.tensors) + kept
    return tensors, fixed + ALIGN_SLACK * len(reader.tensors)


def budget_bytes(budget: SizeBudget, tensors: list[Tensor], fixed: int) -> int:
    """The file size ``budget`` allows: its bytes, or bpw x the quantizable weights (plus the fixed part)."""
    if budget.bytes is not None:
        return budget.bytes
    assert budget.bpw is not None  # a SizeBudget holds bytes or bits per weight
    return int(fixed + budget.bpw * sum(t.n for t in tensors) / 8)


def smallest(tensors: list[Tensor], fixed: int) -> int:
    return fixed + sum(t.nbytes(t.ladder[0]) for t in tensors)


def _exact(names: list[str]) -> str:
    return "^(" + "|".join(re.escape(n) for n in names) + ")$"


def _overrides(types: dict[str, str]) -> dict[str, str]:
    """{tensor: type} -> one exact-name regex per type (llama.cpp's tt_overrides)."""
    by_type: dict[str, list[str]] = {}
    for name, ggml in types.items():
        by_type.setdefault(ggml, []).append(name)
    return {_exact(names): ggml for ggml, names in by_type.items()}


def proxy_errors(
    f16: Path, tensors: list[Tensor], imatrix: Any, work: Path, threads: int | None, log: Callable = print
) -> dict[str, dict[str, float]]:
    """{tensor: {type: imatrix-weighted relative error}} for every rung of every tensor's ladder."""
    import gguf
    from gguf import quants

    means = imatrix.means() if imatrix is not None else {}
    source = {t.name: t for t in gguf.GGUFReader(str(f16)).tensors}  # memory-mapped: read one at a time
    errors: dict[str, dict[str, float]] = {t.name: {} for t in tensors}

    def rel(name: str, q: np.ndarray) -> float:
        w = np.asarray(source[name].data, dtype=np.float32)
        imp = means.get(name, np.ones(w.shape[-1], dtype=np.float32))
        return float((((w - q) ** 2).sum(0) * imp).sum() / max(1e-30, float(((w * w).sum(0) * imp).sum())))

    for rung in range(max(len(t.ladder) for t in tensors)):
        todo = {t.name: t.ladder[rung] for t in tensors if len(t.ladder) > rung and t.ladder[rung] != "Q8_0"}
        if not todo:
            continue
        out = work / f".mix-pass{rung}.gguf"
        try:
            quantize(f16, out, PASS_TYPE, threads=threads, imatrix=imatrix, overrides=_overrides(todo))
            for t in gguf.GGUFReader(str(out)).tensors:
                if t.name in todo:
                    errors[t.name][todo[t.name]] = rel(t.name, quants.dequantize(t.data, t.tensor_type))
        finally:
            out.unlink(missing_ok=True)
        log(f"auto: measured {len(todo)} tensors at rung {rung + 1}")
    q8 = gguf.GGMLQuantizationType.Q8_0
    for t in tensors:  # q8_0 ignores the imatrix: gguf's own quantizer gives the same blocks
        errors[t.name]["Q8_0"] = rel(
            t.name,
            quants.dequantize(quants.quantize(np.asarray(source[t.name].data, dtype=np.float32), q8), q8),
        )
    return errors


def choose(
    tensors: list[Tensor], cost: dict[str, dict[str, float]], limit: int, fixed: int
) -> dict[str, str]:
    """Greedy: start at the cheapest rung; take the upgrade with the largest cost drop per byte that fits."""
    types = {t.name: t.ladder[0] for t in tensors}
    by_name = {t.name: t for t in tensors}
    used = smallest(tensors, fixed)
    while True:
        best: tuple[float, str, str, int] | None = None
        for name, cur in types.items():
            t = by_name[name]
            c0, b0 = cost[name][cur], t.nbytes(cur)
            for nxt in t.ladder[t.ladder.index(cur) + 1 :]:
                gain, extra = c0 - cost[name][nxt], t.nbytes(nxt) - b0
                if gain > 0 and extra > 0 and used + extra <= limit:
                    if best is None or gain / extra > best[0]:
                        best = (gain / extra, name, nxt, extra)
        if best is None:
            return types
        _, name, nxt, extra = best
        types[name], used = nxt, used + extra


class KLMeter:
    """KL(f16 || candidate) per token over held-out texts, both run by llama.cpp."""

    def __init__(self, f16: Path, texts: list[str], threads: int, max_tokens: int = 128) -> None:
        from medkit.convert.verify import gguf_logits, load_llama

        self.threads, self.max_tokens = threads, max_tokens
        llm = load_llama(f16, n_ctx=max_tokens + 8, threads=threads)
        self.seqs = [
            ids for t in texts if len(ids := llm.tokenize(t.encode(), special=True)[:max_tokens]) > 1
        ]
        if not self.seqs:
            raise ConvertError("no held-out text to measure the mix on")
        self.ref: list[np.ndarray] = [
            _log_softmax(gguf_logits(llm, ids)).astype(np.float32) for ids in self.seqs
        ]
        llm.close()

    def __call__(self, gguf_path: Path) -> float:
        from medkit.convert.verify import gguf_logits, load_llama

        llm = load_llama(gguf_path, n_ctx=self.max_tokens + 8, threads=self.threads)
        total, n = 0.0, 0
        for ids, ref in zip(self.seqs, self.ref, strict=True):
            lp = _log_softmax(gguf_logits(llm, ids))
            total += float((np.exp(ref) * (ref - lp)).sum())
            n += len(ids)
        llm.close()
        return max(0.0, total / max(1, n))


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64) - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def group_kl(
    f16: Path, tensors: list[Tensor], imatrix: Any, meter: KLMeter, work: Path, threads: int | None
) -> dict[str, float]:
    """{group: KL when that group alone is at its lowest rung and every other weight stays f16}."""
    out: dict[str, float] = {}
    for group in dict.fromkeys(group_of(t.name) for t in tensors):
        types = {t.name: (t.ladder[0] if group_of(t.name) == group else "F16") for t in tensors}
        path = work / ".mix-group.gguf"
        try:
            quantize(f16, path, PASS_TYPE, threads=threads, imatrix=imatrix, overrides=_overrides(types))
            out[group] = meter(path)
        finally:
            path.unlink(missing_ok=True)
    return out


def ftype_for(types: dict[str, str], tensors: list[Tensor]) -> str:
    """The file type a mix reports (general.file_type): the type holding the most weights."""
    n = {t.name: t.n for t in tensors}
    weight: Counter[str] = Counter()
    for name, ggml in types.items():
        weight[ggml] += n[name]
    top = weight.most_common(1)[0][0]
    return next((q.name for q in QUANT_TYPES if q.ggml == top), PASS_TYPE)  # Q5_0 -> q5_0 (not exported)


@dataclass
class Measured:
    """What auto learns of a model once (every budget of one export reuses it)."""

    src: Path
    tensors: list[Tensor]
    fixed: int  # bytes of the file outside the quantizable weights
    errors: dict[str, dict[str, float]]  # proxy, per tensor and type
    group_kl: dict[str, float]  # KL with the group alone at its lowest rung
    meter: KLMeter
    imatrix: Any = None
    seconds: float = 0.0

    def cost(self) -> dict[str, dict[str, float]]:
        """The proxy in KL units: each group's measured KL spread over its tensors by their proxy error."""
        ts, errs = self.tensors, self.errors
        low = {g: sum(errs[t.name][t.ladder[0]] for t in ts if group_of(t.name) == g) for g in self.group_kl}
        alpha = {g: self.group_kl[g] / low[g] if low[g] > 0 else 0.0 for g in self.group_kl}
        return {t.name: {k: alpha[group_of(t.name)] * e for k, e in errs[t.name].items()} for t in ts}


def _check_budget(budget: SizeBudget, tensors: list[Tensor], fixed: int) -> int:
    from medkit.formats.files import fmt_bytes

    limit, floor = budget_bytes(budget, tensors, fixed), smallest(tensors, fixed)
    if limit < floor:
        raise ConvertError(
            f"size budget {budget.spec} ({fmt_bytes(limit)}) is below the smallest possible file "
            f"({fmt_bytes(floor)}, every weight at {'/'.join(sorted({t.ladder[0] for t in tensors}))})",
            hint=f"give auto:{math.ceil(floor / 1e5) / 10:.1f}MB or more",
        )
    return limit


def check_budgets(src: Path, specs: list[str]) -> None:
    """Every auto:SIZE in ``specs`` fits float GGUF ``src``'s smallest possible file; else one ConvertError."""
    from medkit.formats.gguf_types import parse_budget

    tensors, fixed = plan(Path(src))
    for spec in specs:
        _check_budget(parse_budget(spec), tensors, fixed)


def measure(
    src: Path,
    *,
    imatrix: Any = None,
    texts: list[str] | None = None,
    threads: int | None = None,
    budgets: tuple[SizeBudget, ...] = (),
    log: Callable[[str], Any] = print,
) -> Measured:
    """Proxy errors and group sensitivities of float GGUF ``src`` (``budgets`` are checked first: a
    budget below the smallest possible file is one ConvertError before any work)."""
    from medkit.convert.verify import MEDICAL_TEXTS

    t0 = time.perf_counter()
    tensors, fixed = plan(Path(src))
    if not tensors:
        raise ConvertError("the model has no weight auto can quantize", where=str(src))
    for b in budgets:
        _check_budget(b, tensors, fixed)
    work = Path(src).parent
    meter = KLMeter(Path(src), texts or list(MEDICAL_TEXTS), threads or 2)
    errors = proxy_errors(Path(src), tensors, imatrix, work, threads, log)
    sens = group_kl(Path(src), tensors, imatrix, meter, work, threads)
    return Measured(Path(src), tensors, fixed, errors, sens, meter, imatrix, time.perf_counter() - t0)


def quantize_auto(
    src: Path,
    dst: Path,
    budget: SizeBudget,
    *,
    imatrix: Any = None,
    texts: list[str] | None = None,
    threads: int | None = None,
    metadata: dict[str, Any] | None = None,
    measured: Measured | None = None,
    log: Callable[[str], Any] = print,
    post: Callable[[Path], Any] | None = None,
) -> MixResult:
    """Quantize float GGUF ``src`` into ``dst`` with the per-tensor mix that costs the least KL within
    ``budget``; ConvertError (nothing written) when the budget is below the smallest possible file.
    ``post`` rewrites the mix's codes (GPTQ) before its KL is measured."""
    from medkit.formats.files import fmt_bytes

    t0 = time.perf_counter()
    if measured is None:
        tensors, fixed = plan(Path(src))
        _check_budget(budget, tensors, fixed)
        measured = measure(src, imatrix=imatrix, texts=texts, threads=threads, log=log)
    m = measured
    limit = _check_budget(budget, m.tensors, m.fixed)
    types = choose(m.tensors, m.cost(), limit, m.fixed)
    mixed = Path(dst).parent / ".mix-final.gguf"
    try:
        quantize(Path(src), mixed, PASS_TYPE, threads=threads, imatrix=m.imatrix, overrides=_overrides(types))
        if post is not None:
            post(mixed)
        if mixed.stat().st_size > limit:  # the plan's sizes are exact up to alignment: a bug if it happens
            raise ConvertError(f"auto mix came out at {fmt_bytes(mixed.stat().st_size)}, over {budget.spec}")
        res = MixResult(Path(dst), types, m.meter(mixed), 0, limit, m.group_kl)
        meta = {**(metadata or {}), "medkit.quant.mix": res.summary(), "medkit.quant.kl": f"{res.kl:.6f}"}
        ftype = ftype_for(types, m.tensors)  # only_copy keeps the pass's file type: say the mix's own
        meta.update({"medkit.quant.budget": budget.spec, "general.file_type": BY_NAME[ftype].ftype})
        quantize(mixed, Path(dst), PASS_TYPE, threads=threads, metadata=meta, copy=True)
    finally:
        mixed.unlink(missing_ok=True)
    res.size, res.seconds = (
        Path(dst).stat().st_size,
        time.perf_counter() - t0,
    )  # the measurement too when made here
    log(f"auto: {res.summary()} -> {fmt_bytes(res.size)} (budget {fmt_bytes(limit)}), KL {res.kl:.4f}")
    return res


def record(res: MixResult) -> dict[str, Any]:
    """What run.json keeps of a mix (quant_mix section)."""
    return {
        "file": str(res.path), "size": res.size, "budget": res.budget, "kl": round(res.kl, 6),
        "group_kl": {g: round(v, 6) for g, v in res.group_kl.items()}, "types": res.types,
        "summary": res.summary(), "seconds": round(res.seconds, 1),
    }  # fmt: skip


def export_auto(run: Any, inter: Path, dst: Path, spec: str, cache: dict[str, Any], **kw: Any) -> float:
    """`--gguf auto:SIZE`: the mix medkit.convert.quant.mix measures (once per export) and chooses;
    run.json records it (quant_mix: {spec: types, KL, size})."""
    from medkit.convert.verify import held_out_texts
    from medkit.formats.gguf_types import is_auto, parse_budget

    if "measured" not in cache:  # every budget is checked before the (minutes-long) measurement
        budgets = tuple(parse_budget(t) for t in cache["types"] if is_auto(t))
        texts = held_out_texts(run.path if run else None)
        how = {k: v for k, v in kw.items() if k != "post"}  # the measurement ranks llama.cpp's own rounding
        cache["measured"] = measure(inter, texts=texts, budgets=budgets, **how)
        kw["log"](
            f"auto: measured {len(cache['measured'].tensors)} tensors in {cache['measured'].seconds:.1f}s"
        )
    meta = {
        "medkit.imatrix": kw.get("imatrix") is not None,
        **({"medkit.gptq": True} if kw.get("post") else {}),
    }
    res = quantize_auto(inter, dst, parse_budget(spec), metadata=meta, measured=cache["measured"], **kw)
    if run is not None:
        mixes = dict(run.read_manifest().get("quant_mix") or {})
        run.update_manifest(quant_mix={**mixes, spec: record(res)})
    kw["log"](f"wrote {dst} in {res.seconds:.1f}s ({res.summary()}; KL {res.kl:.4f} vs f16)")
    return res.seconds
