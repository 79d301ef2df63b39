"""GPTQ rounding for llama.cpp's quantized weights: the codes chosen by error feedback on the run's data.

llama.cpp picks each block's scales (weighing columns by the imatrix) and then rounds every weight to its
nearest code on that grid. Nearest rounding minimises each weight's own error, not the layer's output error:
on the calibration inputs X, the error of W x is what the model feels. GPTQ (Frantar et al., 2022) rounds
one input column at a time and moves what that column's rounding cost onto the columns not yet rounded,
weighted by the inverse of the Gram matrix H = X^T X, which cancels much of it in the output. medkit keeps
llama.cpp's file, types and scales as they are and rewrites only the integer codes (medkit.convert.quant.qcodec),
so the result is a plain GGUF that any llama.cpp loads; only the choice of codes differs.

    grams = collect_grams(hf_dir, seqs)         # X^T X per GGUF weight, from the same pass as the imatrix
    res = refine(q4_0_gguf, f16_gguf, grams)    # rewrites the codes in place; res.tensors, res.seconds

Measured on the SmolLM2 demo (KL vs f16 on held-out rows): q4_0 with the imatrix 0.206, with GPTQ codes
as well 0.138. On a CPU the cost is the column loop: round_batch runs the same layer of every block (30
ffn_down tensors, say) through one loop, each in its own act order, so Python's per-column cost is paid
once per layer kind rather than once per tensor, in torch on every core, each column brought up to date
by one small product just before it is rounded (5-10 s per type on the demo, 2 cores, the first type's
including the factors; 10-15 s with numpy and eager updates).

Not refined: the token embedding (a lookup table as well as, when tied, the output layer: error feedback
that helps the matmul would hurt the lookup), Q8_0 tensors (their codes are already within 0.4% of the
weights) and the types without a codec (the i-quants below 4 bits; qcodec.TYPES has the rest).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medkit.convert.quant import qcodec
from medkit.errors import ConvertError

DAMP = 0.01  # ridge added to H, as a fraction of its mean diagonal (GPTQ's default): keeps H invertible
BLOCK = 32  # columns rounded between two updates of the rest of their OUTER block (GPTQ's lazy batch)
OUTER = 256  # columns between two updates of all the columns after them
BATCH_BYTES = 256 * 2**20  # float32 weights rounded in one column loop (with their grids and codes: ~4x that)
# float32 weights of one slice of rows of a weight wider than BATCH_BYTES: with its grids, codes and copies a
# slice holds ~12x that (measured: 128 MiB slices of the TinyLlama shape's 49152 x 2048 output took 1.58 GB)
SLICE_BYTES = 32 * 2**20


def _ram_quarter() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) // 4
    except (ValueError, OSError, AttributeError):  # no sysconf (Windows): assume 16 GiB
        return 4 * 2**30


# bytes of Gram matrices held at once (a quarter of RAM, at most 8 GiB; TinyLlama-1.1B needs ~5 GiB): a
# wider model takes one calibration pass per part of it, for each quantized file
GRAM_BUDGET = min(8 * 2**30, _ram_quarter())
# bytes of float weights, transposed into act order, kept for the export's next file (SmolLM2: 0.4 GiB;
# a wider model keeps what fits and reads the rest again)
WEIGHT_CACHE = min(2**30, _ram_quarter() // 4)
REFINED = tuple(t for t in qcodec.TYPES if t != "Q8_0")
SKIP = ("token_embd.weight",)


def rounds(quant: str) -> bool:
    """Whether a GGUF of quant type ``quant`` (a name: q4_k_m, auto:90MB, ...) holds tensors GPTQ refines:
    every type but q8_0, whose quantized tensors are all Q8_0 (the K mixes keep Q4_K-Q6_K tensors even at
    q2_k)."""
    from medkit.formats.gguf_types import BY_NAME

    return not (quant in BY_NAME and BY_NAME[quant].ggml == "Q8_0")


@dataclass
class RefineResult:
    tensors: int
    seconds: float
    kinds: dict[str, int]  # GGML type -> tensors refined

    def add(self, other: RefineResult) -> None:
        """Count ``other`` (a part of the same refinement) into this total."""
        self.tensors += other.tensors
        self.seconds += other.seconds
        for k, v in other.kinds.items():
            self.kinds[k] = self.kinds.get(k, 0) + v


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
    """(act order, dead columns, V) of a Gram matrix: what every weight fed this input (and every quant type of
    it) is rounded with. H, damped and in act order, is L^T L with L lower triangular (the Cholesky factor of H
    with its order reversed); rounding column j leaves the error e_j = w_j - q_j of the weight as it was before
    any update, and each later column i moves by -V[j, i] e_j with V[j, i] = -L[i, j] / L[i, i]. These are GPTQ's
    updates (the Cholesky factor of H^-1, error scaled by its diagonal) written as Babai's nearest plane on L
    (Chen et al., 2025, "GPTQ as Babai's nearest plane algorithm"): the same codes without forming the inverse,
    n^3/3 flops instead of 4n^3/3 (the inverse was most of GPTQ's time on a 5632- or 14336-wide input).
    float32 (as GPTQ's reference)."""
    import torch

    h = torch.as_tensor(h).to(torch.float32, copy=True)
    n = h.shape[0]
    dead = torch.diagonal(h) <= 0
    h[dead, dead] = 1.0
    perm = torch.argsort(torch.diagonal(h), descending=True)
    h = h.index_select(0, perm).index_select(1, perm)
    h += DAMP * torch.diagonal(h).mean() * torch.eye(n, dtype=h.dtype)
    try:  # J H J = M M^T (J reverses the order) gives H = L^T L with L = J M^T J, so L^T = J M J
        m = torch.linalg.cholesky(h.flip(0, 1))
    except RuntimeError as exc:  # not positive definite even damped: a degenerate calibration set
        raise ConvertError(f"GPTQ: the calibration inputs' Gram matrix is singular ({exc})") from exc
    del h
    v = m.flip(0, 1)  # L^T, upper triangular
    del m
    v.div_(torch.diagonal(v).clone()[None, :]).neg_()  # V[j, i] = -L^T[j, i] / L^T[i, i]
    return perm, dead, v


def round_codes(
    w: Any, h: Any, grid: qcodec.Grid, k0: np.ndarray, factor: tuple[Any, Any, Any] | None = None
) -> np.ndarray:
    """GPTQ codes for weights ``w`` [rows, n] on ``grid``, given the inputs' Gram matrix ``h`` [n, n]
    (or its ``factor``, inverse_factor(h)). Columns are taken largest H_jj first (act order); the grid (the
    block scales) stays fixed. Rows are independent given H: weights fed one input (q/k/v, gate/up) are
    rounded in one call, rows stacked."""
    return round_batch([(w, grid, k0, factor if factor is not None else inverse_factor(h))])[0]


def ordered_weights(problems: list[tuple[Any, qcodec.Grid, np.ndarray, tuple[Any, Any, Any]]]) -> Any:
    """The float weights of round_batch's ``problems`` as it rounds them: [L, n, rows], each weight
    transposed, its columns in its act order, its dead inputs 0 (the same for every quant type)."""
    import torch

    nl, (rows, n) = len(problems), np.shape(problems[0][0])
    w = torch.empty((nl, n, rows))
    for x, p in zip(w, problems, strict=True):
        src = torch.from_numpy(np.ascontiguousarray(p[0], dtype=np.float32))
        perm = p[3][0]
        torch.index_select(src.t(), 0, perm, out=x)  # one gather
        x[p[3][1][perm]] = 0.0  # dead inputs (never nonzero in the calibration data): they do not matter
    return w


def round_batch(
    problems: list[tuple[Any, qcodec.Grid, np.ndarray, tuple[Any, Any, Any]]],
    stacked: Any = None,
    ordered: Any = None,
    orig: Any = None,
) -> list[np.ndarray]:
    """round_codes for several weights of one shape [rows, n] (the same layer of every block), each with its
    own Gram factor and grid, in one column loop: step j rounds the j-th column of each in its own act
    order, so Python's per-column cost is paid once for all of them (the loop is what GPTQ costs on a CPU).
    All use a codebook or none do. In torch (both cores). Each rounded column's error moves onto the rest
    of its BLOCK at once (one in-place multiply-add over every problem: a batched product of one column
    runs as a loop of small GEMVs on a CPU, 2.5x slower); the rest of the OUTER block is updated once per
    BLOCK and the columns after it once per OUTER block (each a batched product in place): the weights
    outside a BLOCK are read and written ~n/OUTER times instead of once per column.
    ``stacked``: the factors' U already stacked [L, n, n] (kept by refine for the export's next file);
    ``ordered``: ordered_weights(problems), overwritten (then the problems' weights may be None); ``orig``: the
    same weights left as they are (read, never written: the errors are taken against them), else a copy of
    ``ordered`` is made before the loop."""
    import torch

    w = ordered if ordered is not None else ordered_weights(problems)  # [L, n, rows]
    nl, n, rows = w.shape
    perms = [p[3][0] for p in problems]
    # the grids are constant over each block of g columns: held [L, n/g, rows] in the weights' own order,
    # each column's row of them gathered when it is rounded (no act-order copy of two more weight-sized arrays)
    g = min(_group(np.asarray(p[1].a), np.asarray(p[1].b)) for p in problems)

    def per_block(x: list[Any]) -> Any:
        return torch.stack(
            [torch.from_numpy(np.ascontiguousarray(np.asarray(v, np.float32)[:, ::g].T)) for v in x]
        )

    a, b = per_block([p[1].a for p in problems]), per_block([p[1].b for p in problems])
    nb = a.shape[1]
    inv = torch.where(a == 0, 0.0, 1.0 / a)  # a dead block (scale 0): every t 0, its codes llama.cpp's
    abi = torch.stack([a, b, inv], dim=2).reshape(nl * nb, 3, rows)  # [L * n/g, (a, b, 1/a), rows]
    # each problem's j-th column (act order) reads its grid block's row of abi: one index_select a column
    rows_at = (torch.stack(perms) // g + torch.arange(nl)[:, None] * nb).t().contiguous()  # [n, L]
    u = stacked if stacked is not None else torch.stack([p[3][2] for p in problems])  # [L, n, n]: the V's
    if orig is None:  # each column's error is taken against the weight before any update (inverse_factor)
        orig = w.clone()
    lo, hi = (torch.from_numpy(np.stack([np.broadcast_to(np.asarray(getattr(p[1], x), np.float32), (rows,))
                                         for p in problems])) for x in ("lo", "hi"))  # fmt: skip
    grid0 = problems[0][1]
    book = torch.from_numpy(grid0.codebook.astype(np.float32)) if grid0.codebook is not None else None
    mids = (book[1:] + book[:-1]) / 2 if book is not None else None
    table = _nearest_table(mids.numpy()) if mids is not None else None
    half = len(table) // 2 if table is not None else 0
    lut = (
        torch.from_numpy(np.roll(table, half).astype(np.int64)) if table is not None else None
    )  # at c + half
    codes = torch.empty((nl, n, rows), dtype=torch.int16)
    for o1 in range(0, n, OUTER):
        o2 = min(o1 + OUTER, n)
        err = torch.empty(
            (nl, o2 - o1, rows)
        )  # each column's rounding error (against its weight before any update)
        for i1 in range(o1, o2, BLOCK):
            i2 = min(i1 + BLOCK, o2)
            for j in range(i1, i2):
                col = w[:, j]  # up to date: each earlier column of its block moved its error onto it
                aj, bj, ij = abi.index_select(0, rows_at[j]).unbind(1)
                t = torch.sub(col, bj).mul_(ij)
                if lut is not None:  # the nearest codebook entry: a table over t's half-integer bins
                    k = lut[t.mul_(2).ceil_().clamp_(-half, half - 1).long() + half]
                    q = torch.addcmul(bj, aj, book[k])  # type: ignore[index]
                elif mids is not None:
                    k = torch.searchsorted(mids, t)
                    q = torch.addcmul(bj, aj, book[k])  # type: ignore[index]
                else:
                    k = t.round_().clamp_(lo, hi)
                    q = torch.addcmul(bj, aj, k)
                codes[:, j] = k
                e = torch.sub(orig[:, j], q, out=err[:, j - o1])
                if j + 1 < i2:  # onto the rest of the block at once: one in-place pass, no per-problem GEMV
                    w[:, j + 1 : i2].addcmul_(u[:, j, j + 1 : i2].unsqueeze(2), e.unsqueeze(1), value=-1)
            if i2 < o2:
                w[:, i2:o2].baddbmm_(u[:, i1:i2, i2:o2].transpose(1, 2), err[:, i1 - o1 : i2 - o1], alpha=-1)
        if o2 < n:
            w[:, o2:].baddbmm_(u[:, o1:o2, o2:].transpose(1, 2), err, alpha=-1)
    out = []
    for c, p, pm in zip(codes, problems, perms, strict=True):
        c = c.index_select(0, torch.argsort(pm)).t().contiguous().numpy()  # [rows, n] in the weight's order
        dead_blocks = np.asarray(p[1].a) == 0
        if dead_blocks.any():  # keep llama.cpp's codes where a block's scale is 0
            c[dead_blocks] = np.asarray(p[2])[dead_blocks]
        out.append(np.ascontiguousarray(c))
    return out


def _group(a: np.ndarray, b: np.ndarray) -> int:
    """The widest g in 32, 16 (1 else) such that the grid ``a``, ``b`` [rows, n] is constant over each run
    of g columns (every llama.cpp type GPTQ refines has blocks or sub-blocks of 16 or 32)."""
    rows, n = a.shape
    for g in (32, 16):
        if n % g == 0 and all((x.reshape(rows, n // g, g) == x.reshape(rows, n // g, g)[..., :1]).all()
                              for x in (a, b)):  # fmt: skip
            return g
    return 1


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


Piece = tuple[str, int, int]  # a weight's GGUF name and the rows [first, end) of it rounded in one problem


def _rows(t: Any) -> int:
    return int(np.prod(t.shape[1:]))


def row_slices(
    members: list[str],
    shapes: dict[str, tuple[int, ...]],
    budget: int = BATCH_BYTES,
    piece: int = SLICE_BYTES,
) -> list[list[Piece]]:
    """The problems a group of weights sharing one input (``members``, GGUF shapes [n, rows...]) is rounded
    as: the group whole where its float weights fit ``budget``, else each weight in slices of rows (a
    multiple of 256) of ``piece`` bytes of float weights at most."""
    n = shapes[members[0]][0]
    rows = {m: int(np.prod(shapes[m][1:])) for m in members}
    if 4 * n * sum(rows.values()) <= budget:
        return [[(m, 0, rows[m]) for m in members]]
    step = max(256, piece // (4 * n) // 256 * 256)
    return [[(m, r0, min(r0 + step, rows[m]))] for m in members for r0 in range(0, rows[m], step)]


def refine(
    path: Path,
    f16: Path,
    grams: dict[str, Any],
    names: Iterable[str] | None = None,
    factors: dict[Any, Any] | None = None,
    keep_weights: bool = True,
) -> RefineResult:
    """Rewrite, in place, the codes of ``path``'s weights (those in ``grams``, or ``names``) by GPTQ
    against the float weights of ``f16`` (the GGUF ``path`` was quantized from: same names and layout).
    Nothing is written unless every weight fits. ``factors`` keeps each Gram matrix's factor for the next
    file (the types of one export share them), and the weights too unless not ``keep_weights``."""
    import gguf
    import torch

    from medkit.formats.gguf_header import tensor_table

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
    # groups of one shape (the same layer in every block) share one column loop, BATCH_BYTES of weights at once;
    # a group wider than that (the output layer: 49152 x 2048 with SmolLM2's vocabulary) is rounded in slices
    # of rows, each alone (rows are independent given H): its memory is one slice's, not the tensor's
    batches: dict[tuple[int, int, bool], list[list[list[Piece]]]] = {}
    for (_, book), members in groups.items():
        for pieces in row_slices(members, {m: dst[m].shape for m in members}, BATCH_BYTES, SLICE_BYTES):
            n, rows = dst[members[0]].shape[0], sum(p[2] - p[1] for p in pieces)
            runs = batches.setdefault((n, rows, book), [[]])
            if runs[-1] and 4 * n * rows * (len(runs[-1]) + 1) > BATCH_BYTES:
                runs.append([])
            runs[-1].append(pieces)
    fmm = np.memmap(f16, dtype=np.uint8, mode="r")
    mm = np.memmap(path, dtype=np.uint8, mode="r+")
    kinds: dict[str, int] = {}
    cache = factors if factors is not None else {}

    # a tensor's bytes, one row of it per row (every type's blocks lie within a row)
    def rows_of(mm: Any, t: Any) -> Any:
        return mm[t.offset : t.offset + t.nbytes].reshape(_rows(t), -1)

    def problem(
        members: list[Piece], mm: Any, fmm: Any, floats: bool
    ) -> tuple[Any, qcodec.Grid, np.ndarray, Any, list[np.ndarray]]:
        raws, grids, ks, ws = [], [], [], []
        for name, r0, r1 in members:
            t, r = dst[name], src[name]
            raws.append(np.asarray(rows_of(mm, t)[r0:r1]))
            grid, k = qcodec.decode(t.ggml, raws[-1])
            grids.append(grid)
            ks.append(k)
            if floats:
                data = np.ascontiguousarray(rows_of(fmm, r)[r0:r1])
                ws.append(
                    gguf.quants.dequantize(data, gguf.GGMLQuantizationType[r.ggml]).reshape(r1 - r0, -1)
                )
        lo = np.concatenate([np.full(g.a.shape[0], g.lo) for g in grids])  # per row: types may differ
        hi = np.concatenate([np.full(g.a.shape[0], g.hi) for g in grids])
        grid = qcodec.Grid(np.concatenate([g.a for g in grids]), np.concatenate([g.b for g in grids]),
                           lo, hi, grids[0].codebook)  # fmt: skip
        h = grams[members[0][0]]
        if id(h) not in cache:
            cache[id(h)] = (h, inverse_factor(h))  # h kept: its id is not reused while cached
        return np.concatenate(ws) if floats else None, grid, np.concatenate(ks), cache[id(h)][1], raws

    try:
        for runs in batches.values():
            for run in runs:
                wkey = ("weights", *(tuple(pieces) for pieces in run))
                kept = cache.get(wkey)
                probs = [problem(pieces, mm, fmm, kept is None) for pieces in run]
                key = ("stacked", *(id(grams[pieces[0][0]]) for pieces in run))
                if key not in cache:  # the factors stacked once for every file; each then a view of it
                    cache[key] = torch.stack([p[3][2] for p in probs])
                    for li, pieces in enumerate(run):
                        h, (perm, dead, _) = cache[id(grams[pieces[0][0]])]
                        cache[id(grams[pieces[0][0]])] = (h, (perm, dead, cache[key][li]))
                if kept is not None:
                    ordered = kept.clone()
                else:
                    ordered = ordered_weights([p[:4] for p in probs])
                    probs = [(None, *p[1:]) for p in probs]  # the float weights live on in `ordered` alone
                    held = cache.get("weight-bytes", 0) + ordered.numel() * 4
                    whole = all(r0 == 0 and r1 == _rows(dst[name]) for m in run for name, r0, r1 in m)
                    if keep_weights and whole and held <= WEIGHT_CACHE:  # the next file starts from these
                        cache[wkey], cache["weight-bytes"] = ordered.clone(), held
                # the weights before any update: the kept copy where there is one (not written), else a clone
                codes = round_batch([p[:4] for p in probs], cache[key], ordered, cache.get(wkey))
                del ordered
                for pieces, p, c in zip(run, probs, codes, strict=True):
                    at = 0
                    for (name, r0, r1), raw in zip(pieces, p[4], strict=True):
                        t = dst[name]
                        enc = qcodec.encode(t.ggml, raw, c[at : at + raw.shape[0]])
                        at += raw.shape[0]
                        rows_of(mm, t)[r0:r1] = enc.reshape(r1 - r0, -1)
                        if r0 == 0:  # a tensor counted once, however many slices
                            kinds[t.ggml] = kinds.get(t.ggml, 0) + 1
                del probs, codes
        mm.flush()
    finally:
        del mm, fmm
    return RefineResult(sum(kinds.values()), time.perf_counter() - t0, kinds)


def refinable_shapes(f16: Path) -> dict[str, int]:
    """{GGUF name: row length} of the float GGUF's 2-D weights GPTQ may refine (any quant type)."""
    from medkit.formats.gguf_header import tensor_table

    return {
        name: t.shape[0]
        for name, t in tensor_table(f16).items()
        if len(t.shape) == 2 and name not in SKIP and t.shape[0] % 32 == 0
    }
