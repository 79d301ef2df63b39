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
as well 0.138. On a CPU the cost is the column loop (each column a handful of numpy ops): round_batch runs
the same layer of every block (30 ffn_down tensors, say) through one loop, each in its own act order, so
Python's per-column cost is paid once per layer kind rather than once per tensor (10-15 s per type on the
demo, 2 cores).

Not refined: the token embedding (a lookup table as well as, when tied, the output layer: error feedback
that helps the matmul would hurt the lookup), Q8_0 tensors (their codes are already within 0.4% of the
weights) and the types without a codec (Q2_K, Q3_K and the i-quants below 4 bits; qcodec.TYPES has the rest).
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
BATCH_BYTES = 256 * 2**20  # float32 weights rounded in one column loop (with their grids and codes: ~4x that)


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


def rounds(quant: str) -> bool:
    """Whether a GGUF of quant type ``quant`` (a name: q4_k_m, auto:90MB, ...) holds tensors GPTQ refines:
    every type but q8_0, whose quantized tensors are all Q8_0 (the K mixes keep Q4_K-Q6_K tensors even at
    q2_k)."""
    from medkit.convert.quantize import BY_NAME

    return not (quant in BY_NAME and BY_NAME[quant].ggml == "Q8_0")


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
    try:  # H = J M M^T J (J reverses the order) gives H^-1 = U^T U with U = J M^-1 J: one factorisation
        m = torch.linalg.cholesky(h.flip(0, 1))
        eye = torch.eye(n, dtype=h.dtype)
        u = torch.linalg.solve_triangular(m, eye, upper=False).flip(0, 1).float()
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
    return round_batch([(w, grid, k0, factor if factor is not None else inverse_factor(h))])[0]


def round_batch(
    problems: list[tuple[Any, qcodec.Grid, np.ndarray, tuple[Any, Any, Any]]],
) -> list[np.ndarray]:
    """round_codes for several weights of one shape [rows, n] (the same layer of every block), each with its
    own Gram factor and grid, in one column loop: step i rounds the i-th column of each in its own act
    order, so Python's per-column cost is paid once for all of them (the loop is what GPTQ costs on a CPU).
    All use a codebook or none do."""
    import torch

    f = np.float32

    def cols(x: Any, perm: Any, dtype: Any) -> Any:
        """[rows, n] -> [n, rows] in act order, contiguous (each step reads one column); torch's copies."""
        t = torch.from_numpy(np.ascontiguousarray(x)).to(dtype)
        return t.t().contiguous().index_select(0, perm)  # transposed, then whole rows gathered (1.6x)

    perms = [p[3][0] for p in problems]
    w = torch.stack(
        [cols(np.asarray(p[0], f), pm, torch.float32) for p, pm in zip(problems, perms, strict=True)]
    )
    for x, p, pm in zip(w, problems, perms, strict=True):
        x[p[3][1][pm]] = 0.0  # dead inputs (never nonzero in the calibration data): they do not matter
    u = torch.stack([p[3][2] for p in problems])  # [L, n, n]
    wn, un = w.numpy(), u.numpy()
    a = torch.stack([cols(p[1].a, pm, torch.float32) for p, pm in zip(problems, perms, strict=True)]).numpy()
    b = torch.stack([cols(p[1].b, pm, torch.float32) for p, pm in zip(problems, perms, strict=True)]).numpy()
    live = a != 0
    inv = np.divide(1.0, a, out=np.zeros_like(a), where=live)  # a dead block: t = 0, value = b whatever k
    grid0 = problems[0][1]
    book: np.ndarray | None = grid0.codebook.astype(f) if grid0.codebook is not None else None
    mids = (book[1:] + book[:-1]) / 2 if book is not None else None
    lut = _nearest_table(mids) if mids is not None else None
    nl, n, rows = wn.shape
    lo, hi = (np.stack([np.broadcast_to(np.asarray(getattr(p[1], x), f), (rows,)) for p in problems])
              for x in ("lo", "hi"))  # fmt: skip
    codes = np.empty((nl, n, rows), np.int16)
    for i1 in range(0, n, BLOCK):
        i2 = min(i1 + BLOCK, n)
        err = np.empty((nl, i2 - i1, rows), f)
        u1 = un[:, i1:i2, i1:i2]
        for i in range(i2 - i1):
            j = i1 + i
            col = wn[:, j]
            t = (col - b[:, j]) * inv[:, j]
            if lut is not None:  # the nearest codebook entry: a table over t's half-integer bins
                k = lut[np.clip(np.ceil(2 * t), -len(lut) // 2, len(lut) // 2 - 1).astype(np.intp)]
                q = a[:, j] * book[k] + b[:, j]  # type: ignore[index]
            elif mids is not None:
                k = np.searchsorted(mids, t)
                q = a[:, j] * book[k] + b[:, j]  # type: ignore[index]
            else:
                k = np.clip(np.rint(t), lo, hi)
                q = a[:, j] * k + b[:, j]
            codes[:, j] = k
            e = (col - q) / u1[:, i, i, None]
            err[:, i] = e
            if i + 1 < i2 - i1:
                wn[:, j + 1 : i2] -= u1[:, i, i + 1 :, None] * e[:, None, :]
        if i2 < n:
            w[:, i2:] -= torch.bmm(u[:, i1:i2, i2:].transpose(1, 2), torch.from_numpy(err))
    out = []
    for li, (p, pm) in enumerate(zip(problems, perms, strict=True)):
        c = codes[li]
        dead_blocks = ~live[li]
        if dead_blocks.any():  # keep llama.cpp's codes where a block's scale is 0
            c[dead_blocks] = cols(p[2], pm, torch.int16).numpy()[dead_blocks]
        out.append(torch.from_numpy(c).t().index_select(1, torch.argsort(pm)).contiguous().numpy())
    return out


def _nearest_table(mids: np.ndarray) -> np.ndarray | None:
    """For a codebook whose midpoints are multiples of 1/2 (IQ4's integer values): table[c] =
    searchsorted(mids, t) for every t with ceil(2 t) = c (c from -len/2, read with negative indices);
    None for any other codebook (searchsorted then)."""
    if not np.array_equal(mids * 2, np.round(mids * 2)):
        return None
    half = int(np.abs(mids).max() * 2) + 2
    c = np.arange(-half, half)
    table: np.ndarray = np.searchsorted(mids, (c - 0.5) / 2).astype(np.int16)  # any t in ((c-1)/2, c/2]
    return np.concatenate([table[half:], table[:half]])  # index c >= 0 first, c < 0 from the end


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
    # groups of one shape (the same layer in every block) share one column loop, BATCH_BYTES of weights at once
    batches: dict[tuple[int, int, bool], list[list[list[str]]]] = {}
    for (_, book), members in groups.items():
        n, rows = dst[members[0]].shape[0], sum(int(np.prod(dst[m].shape[1:])) for m in members)
        runs = batches.setdefault((n, rows, book), [[]])
        if runs[-1] and 4 * n * rows * (len(runs[-1]) + 1) > BATCH_BYTES:
            runs.append([])
        runs[-1].append(members)
    fmm = np.memmap(f16, dtype=np.uint8, mode="r")
    mm = np.memmap(path, dtype=np.uint8, mode="r+")
    kinds: dict[str, int] = {}
    cache = factors if factors is not None else {}

    def problem(
        members: list[str], mm: Any, fmm: Any
    ) -> tuple[Any, qcodec.Grid, np.ndarray, Any, list[np.ndarray]]:
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
        if id(h) not in cache:
            cache[id(h)] = (h, inverse_factor(h))  # h kept: its id is not reused while cached
        return np.concatenate(ws), grid, np.concatenate(ks), cache[id(h)][1], raws

    try:
        for runs in batches.values():
            for run in runs:
                probs = [problem(members, mm, fmm) for members in run]
                codes = round_batch([p[:4] for p in probs])
                for members, p, c in zip(run, probs, codes, strict=True):
                    at = 0
                    for name, raw in zip(members, p[4], strict=True):
                        t = dst[name]
                        enc = qcodec.encode(t.ggml, raw, c[at : at + raw.shape[0]])
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
