"""GPTQ rounding for llama.cpp's quantized weights: the codes chosen by error feedback on the run's data.

llama.cpp picks each block's scales (weighing columns by the imatrix) and then rounds every weight to its
nearest code on that grid. Nearest rounding minimises each weight's own error, not the layer's output error:
on the calibration inputs X, the error of W x is what the model feels. GPTQ (Frantar et al., 2022) rounds
one input column at a time and moves what that column's rounding cost onto the columns not yet rounded,
weighted by the inverse of the Gram matrix H = X^T X, which cancels much of it in the output. medkit keeps
llama.cpp's file, types and scales as they are and rewrites only the integer codes (medkit.convert.qcodec),
so the result is a plain GGUF that any llama.cpp loads; only the choice of codes differs.

    grams = collect_grams(hf_dir, seqs)         # X^T X per GGUF weight, from the same pass as the imatrix
    res = refine(q4_0_gguf, f16_gguf, grams)    # rewrites the codes in place; res.tensors, res.seconds

Measured on the SmolLM2 demo (KL vs f16 on held-out rows): q4_0 with the imatrix 0.206, with GPTQ codes
as well 0.138.

Not refined: the token embedding (a lookup table as well as, when tied, the output layer: error feedback
that helps the matmul would hurt the lookup), Q8_0 tensors (their codes are already within 0.4% of the
weights) and the types without a codec (the K/i-quants other than Q4_K, Q6_K, IQ4_NL).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medkit.convert import qcodec
from medkit.errors import ConvertError

DAMP = 0.01  # ridge added to H, as a fraction of its mean diagonal (GPTQ's default): keeps H invertible
BLOCK = 32  # columns rounded between two matmul updates of the rest (GPTQ's lazy batch; 128 on GPUs,
# 32 on CPU, where the per-column update of the block is memory-bound)


def _ram_quarter() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 4
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): assume 16 GiB
        return 4 * 2**30


# bytes of Gram matrices held at once (a quarter of RAM, at most 8 GiB; TinyLlama-1.1B needs ~5 GiB): a
# wider model takes one calibration pass per part of it, for each quantized file
GRAM_BUDGET = min(8 * 2**30, _ram_quarter())
REFINED = tuple(t for t in qcodec.TYPES if t != "Q8_0")
SKIP = ("token_embd.weight",)


@dataclass
class RefineResult:
    tensors: int
    seconds: float
    kinds: dict[str, int]  # GGML type -> tensors refined


def gram_bytes(shapes: dict[str, int]) -> int:
    """Bytes the Gram matrices of {GGUF name: row length} take (float32: how collect sums them)."""
    return sum(4 * n * n for n in shapes.values())


def parts(shapes: dict[str, int], budget: int = GRAM_BUDGET) -> list[list[str]]:
    """The weights in file order, cut into parts whose Gram matrices fit ``budget`` (one pass each)."""
    out: list[list[str]] = [[]]
    used = 0
    for name, n in shapes.items():
        if out[-1] and used + 4 * n * n > budget:
            out.append([])
            used = 0
        out[-1].append(name)
        used += 4 * n * n
    return [p for p in out if p]


def inverse_factor(h: Any) -> tuple[Any, Any, Any]:
    """(act order, dead columns, upper Cholesky factor of the damped inverse of H in that order) of a Gram
    matrix: what every weight fed this input (and every quant type of it) is rounded with."""
    import torch

    h = torch.as_tensor(h, dtype=torch.float64).clone()
    n = h.shape[0]
    dead = torch.diagonal(h) <= 0
    h[dead, dead] = 1.0
    perm = torch.argsort(torch.diagonal(h), descending=True)
    h = h[perm][:, perm]
    h += DAMP * torch.diagonal(h).mean() * torch.eye(n, dtype=h.dtype)
    try:
        u = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()
    except RuntimeError as exc:  # not positive definite even damped: a degenerate calibration set
        raise ConvertError(f"GPTQ: the calibration inputs' Gram matrix is singular ({exc})") from exc
    return perm, dead, u


def round_codes(
    w: Any, h: Any, grid: qcodec.Grid, k0: np.ndarray, factor: tuple[Any, Any, Any] | None = None
) -> np.ndarray:
    """GPTQ codes for weights ``w`` [rows, n] on ``grid``, given the inputs' Gram matrix ``h`` [n, n]
    (or its ``factor``, inverse_factor(h)). Columns are taken largest H_jj first (act order); the grid (the
    block scales) stays fixed. Rows are independent given H: weights fed one input (q/k/v, gate/up) are
    rounded in one call, rows stacked."""
    import torch

    perm, dead, u = factor if factor is not None else inverse_factor(h)
    n = u.shape[0]
    pn = perm.numpy()
    uu = u.numpy()

    def cols(x: Any, dtype: Any) -> np.ndarray:
        """[rows, n] -> [n, rows] in act order, contiguous (each step reads one column); torch's copies."""
        t = torch.from_numpy(np.ascontiguousarray(x)).to(dtype)
        return t.index_select(1, perm).t().contiguous().numpy()  # type: ignore[no-any-return]

    f = np.float32
    w = cols(np.asarray(w, f), torch.float32)
    w[dead.numpy()[pn]] = 0.0
    a, b = cols(grid.a, torch.float32), cols(grid.b, torch.float32)
    live = a != 0
    inv = np.divide(1.0, a, out=np.zeros_like(a), where=live)  # a dead block: t = 0, value = b whatever k
    book: np.ndarray | None = grid.codebook.astype(f) if grid.codebook is not None else None
    mids = (book[1:] + book[:-1]) / 2 if book is not None else None
    rows = w.shape[1]
    lo, hi = (np.broadcast_to(np.asarray(x, f), (rows,)) for x in (grid.lo, grid.hi))
    codes = np.empty((n, rows), np.int16)
    for i1 in range(0, n, BLOCK):
        i2 = min(i1 + BLOCK, n)
        err = np.empty((i2 - i1, rows), f)
        u1 = uu[i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            col = w[j]
            t = (col - b[j]) * inv[j]
            if mids is not None:
                k = np.searchsorted(mids, t)
                q = a[j] * book[k] + b[j]  # type: ignore[index]
            else:
                k = np.clip(np.rint(t), lo, hi)
                q = a[j] * k + b[j]
            codes[j] = k
            e = (col - q) / u1[i, i]
            err[i] = e
            if i + 1 < i2 - i1:
                w[j + 1 : i2] -= u1[i, i + 1 :, None] * e[None, :]
        if i2 < n:
            w[i2:] -= uu[i1:i2, i2:].T @ err
    dead_blocks = ~live
    if dead_blocks.any():  # keep llama.cpp's codes where a block's scale is 0
        codes[dead_blocks] = cols(k0, torch.int16)[dead_blocks]
    back = torch.argsort(perm)
    out: np.ndarray = torch.from_numpy(codes).t().index_select(1, back).contiguous().numpy()
    return out


def refine(
    path: Path,
    f16: Path,
    grams: dict[str, Any],
    names: Iterable[str] | None = None,
    factors: dict[int, Any] | None = None,
) -> RefineResult:
    """Rewrite, in place, the codes of ``path``'s weights (those in ``grams``, or ``names``) by GPTQ
    against the float weights of ``f16`` (the GGUF ``path`` was quantized from: same names and layout).
    Nothing is written unless every weight fits. ``factors`` keeps each Gram matrix's factor for the next
    file (the types of one export share them)."""
    import gguf

    from medkit.runtime.gguf_header import tensor_table

    t0 = time.perf_counter()
    src, dst = tensor_table(f16), tensor_table(path)
    wanted = set(grams if names is None else names) & set(grams)
    todo = [
        n for n, t in dst.items() if n in wanted and t.ggml in REFINED and n not in SKIP and len(t.shape) == 2
    ]
    for name in todo:
        ref, n = src.get(name), dst[name].shape[0]
        if ref is None or ref.shape != dst[name].shape or tuple(grams[name].shape) != (n, n):
            raise ConvertError(
                f"GPTQ: {name} does not match the float GGUF or its Gram matrix", where=str(f16)
            )
    # one call per (input, codebook or not): q/k/v and gate/up share their Gram matrix
    groups: dict[tuple[int, bool], list[str]] = {}
    for name in todo:
        groups.setdefault((id(grams[name]), dst[name].ggml.startswith("IQ4")), []).append(name)
    fmm = np.memmap(f16, dtype=np.uint8, mode="r")
    mm = np.memmap(path, dtype=np.uint8, mode="r+")
    kinds: dict[str, int] = {}
    try:
        for members in groups.values():
            raws, grids, ks, ws = [], [], [], []
            for name in members:
                t, r = dst[name], src[name]
                rows = int(np.prod(t.shape[1:]))
                raws.append(np.asarray(mm[t.offset : t.offset + t.nbytes]).reshape(rows, -1))
                grid, k = qcodec.decode(t.ggml, raws[-1])
                grids.append(grid)
                ks.append(k)
                data = np.asarray(fmm[r.offset : r.offset + r.nbytes])
                ws.append(gguf.quants.dequantize(data, gguf.GGMLQuantizationType[r.ggml]).reshape(rows, -1))
            lo = np.concatenate([np.full(g.a.shape[0], g.lo) for g in grids])  # per row: types may differ
            hi = np.concatenate([np.full(g.a.shape[0], g.hi) for g in grids])
            grid = qcodec.Grid(np.concatenate([g.a for g in grids]), np.concatenate([g.b for g in grids]),
                               lo, hi, grids[0].codebook)  # fmt: skip
            h = grams[members[0]]
            cache = factors if factors is not None else {}
            if id(h) not in cache:
                cache[id(h)] = (h, inverse_factor(h))  # h kept: its id is not reused while cached
            codes = round_codes(np.concatenate(ws), h, grid, np.concatenate(ks), cache[id(h)][1])
            at = 0
            for name, raw in zip(members, raws, strict=True):
                t = dst[name]
                enc = qcodec.encode(t.ggml, raw, codes[at : at + raw.shape[0]])
                at += raw.shape[0]
                mm[t.offset : t.offset + t.nbytes] = enc.reshape(-1)
                kinds[t.ggml] = kinds.get(t.ggml, 0) + 1
        mm.flush()
    finally:
        del mm, fmm
    return RefineResult(sum(kinds.values()), time.perf_counter() - t0, kinds)


def refiner(
    hf_dir: Path,
    seqs: list[list[int]],
    f16: Path,
    grams: dict[str, Any] | None = None,
    log: Callable[[str], Any] = print,
) -> Callable[[Path], RefineResult]:
    """What `medkit export` runs on each freshly quantized file (before it is renamed into place).
    ``grams``: the Gram matrices the imatrix pass already summed (they fit GRAM_BUDGET); without them,
    one calibration pass over ``seqs`` per part of the model that fits, for every file."""
    from medkit.convert.imatrix import collect

    shapes = refinable_shapes(f16)
    cut = [list(shapes)] if grams is not None else parts(shapes)
    if len(cut) > 1:
        log(
            f"GPTQ: the Gram matrices take {gram_bytes(shapes) / 2**30:.1f} GiB: {len(cut)} calibration passes"
        )

    factors: dict[int, Any] = {}  # one Cholesky factor per input, for every file of the export

    def run(path: Path) -> RefineResult:
        total = RefineResult(0, 0.0, {})
        for part in cut:
            got = grams if grams is not None else collect(hf_dir, seqs, grams=part).grams or {}
            res = refine(path, f16, got, part, factors if grams is not None else None)
            total.tensors += res.tensors
            total.seconds += res.seconds
            for k, v in res.kinds.items():
                total.kinds[k] = total.kinds.get(k, 0) + v
        return total

    return run


def refinable_shapes(f16: Path) -> dict[str, int]:
    """{GGUF name: row length} of the float GGUF's 2-D weights GPTQ may refine (any quant type)."""
    from medkit.runtime.gguf_header import tensor_table

    return {
        name: t.shape[0]
        for name, t in tensor_table(f16).items()
        if len(t.shape) == 2 and name not in SKIP and t.shape[0] % 32 == 0
    }
