"""What the calibration pass sums from each weight's inputs: x^2 per input column (the importance matrix)
and, for the weights GPTQ rounds, the Gram matrix X^T X (whose diagonal is that importance).

    stats = ActStats(names, widths, want, device)    # names: HF module -> GGUF weight
    handles = [mod.register_forward_hook(stats.hook(g)) for ...]
    stats.weight, stats.keep = 1.0, rows             # how many sequences a row stands for, real rows
    ...; stats.end_batch()                           # after each forward
    sums, counts, grams = stats.finish()

One home for the hooks both the whole-model pass (medkit.convert.imatrix.collect) and the layer-by-layer
one (medkit.convert.layerwise) use, so the two sum alike. Weights fed the very same input tensor in one
batch (q/k/v, gate/up) share its sums (an alias); the Gram sums are taken GRAM_TOKENS rows at a time in
float32, the importance of a weight without one in float32 per batch and float64 in total.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

# rows of activations summed into a Gram matrix at once: one sequence's ~100 tokens per addmm spends its
# time reading and writing the n x n sum (SmolLM2 demo 8.7 s); 2048 at once, 0.7 s
GRAM_TOKENS = 2048

# inputs this wide or wider sum their Gram matrix in PANELS row panels, each from the diagonal on (2/3 of
# the products; SmolLM2's 1536-wide ffn_down input: 15 ms instead of 24 ms per 2048 rows), mirrored once
SYM_WIDTH, PANELS = 1024, 3


def _panels(n: int) -> list[tuple[int, int]]:
    """The [i, j) column ranges of a wide input's PANELS diagonal blocks."""
    width = -(-n // PANELS)
    return [(i, min(n, i + width)) for i in range(0, n, width)]


def gram_add(acc: Any, x: Any, alpha: float = 1.0) -> None:
    """acc += alpha x^T x: on and above the diagonal blocks only for a wide x (mirror fills the rest)."""
    if x.shape[1] < SYM_WIDTH:
        acc.addmm_(x.T, x, alpha=alpha)
        return
    for i, j in _panels(x.shape[1]):
        acc[i:j, i:].addmm_(x[:, i:j].T, x[:, i:], alpha=alpha)


def mirror(acc: Any) -> None:
    """Copy what gram_add summed above the diagonal blocks into the blocks below (in place)."""
    if acc.shape[0] < SYM_WIDTH:
        return
    for i, j in _panels(acc.shape[0]):
        acc[j:, i:j] = acc[i:j, j:].T


class ActStats:
    """The sums of the GGUF weights ``widths`` ({name: input width}); Gram matrices for those in ``want``."""

    def __init__(self, widths: dict[str, int], want: Iterable[str], device: Any) -> None:
        import torch

        self.device = device
        self.want = set(want)
        self.sums = {g: torch.zeros(n, dtype=torch.float64, device=device) for g, n in widths.items()}
        self.counts = dict.fromkeys(widths, 0.0)
        self.acc: dict[str, Any] = {}  # Gram sums, one per distinct input
        self.alias: dict[str, str] = {}  # weight -> the weight fed the same input (q/k/v, gate/up)
        self.seen: list[tuple[Any, str]] = []  # this batch's inputs so far (held, so no address is reused)
        self.pending: dict[str, list[Any]] = {}  # inputs not yet in their Gram sum
        self.keep: Any = None  # the current batch's non-padding row indices (None: no padding)
        self.weight = 1.0  # how many sequences these rows stand for (a shared prefix: all of them)

    def hook(self, gname: str) -> Callable[..., None]:
        def fn(module: Any, args: tuple[Any, ...], output: Any) -> None:
            self.add(gname, args[0])

        return fn

    def add(self, gname: str, inp: Any) -> None:
        import torch

        if gname in self.alias:
            return
        owner = next((g for t, g in self.seen if t is inp), None)
        if owner is not None and (gname not in self.want or owner in self.want):  # the very tensor an
            self.alias[gname] = owner  # earlier weight of this batch read, summing all this one needs
            return
        self.seen.append((inp, gname))
        raw = inp.detach().reshape(-1, inp.shape[-1])
        raw = raw if self.keep is None else raw.index_select(0, self.keep)  # real tokens, not padding
        w = self.weight
        self.counts[gname] += w * float(raw.shape[0])
        if gname not in self.want:
            x = raw.float()
            self.sums[gname] += (x * x).sum(0).double() * w  # a batch's sum in float32, the total float64
            return
        if gname not in self.acc:  # fp32: one fused multiply-add per input (GPTQ damps H by 1% anyway)
            n = raw.shape[1]
            self.acc[gname] = torch.zeros((n, n), dtype=torch.float32, device=self.device)
        if w != 1.0:
            gram_add(self.acc[gname], raw.float(), alpha=w)
            return
        held = self.pending.setdefault(gname, [])
        held.append(raw)  # in the forward's dtype until its Gram sum, whose diagonal is the importance
        if sum(len(t) for t in held) >= GRAM_TOKENS:
            self.flush(gname)

    def end_batch(self) -> None:
        self.seen.clear()

    def flush(self, gname: str) -> None:
        import torch

        held = self.pending.pop(gname, [])
        if held:  # converted straight into one float32 block: no concatenated copy in the forward's dtype
            n = sum(len(t) for t in held)
            x = torch.empty((n, held[0].shape[1]), dtype=torch.float32, device=self.device)
            at = 0
            for t in held:
                x[at : at + len(t)].copy_(t)
                at += len(t)
            gram_add(self.acc[gname], x)

    def finish(self) -> tuple[dict[str, Any], dict[str, float], dict[str, Any]]:
        """(sums float64, counts, {weight: its Gram matrix}) once every batch is in; weights fed one input
        share one Gram tensor (the same object)."""
        import torch

        for gname in list(self.pending):
            self.flush(gname)
        for h in self.acc.values():
            mirror(h)
        for g, h in self.acc.items():
            self.sums[g] = torch.diagonal(h).double()
        for g, owner in self.alias.items():
            self.sums[g], self.counts[g] = self.sums[owner].clone(), self.counts[owner]
        grams = {g: self.acc[self.alias.get(g, g)] for g in self.want if self.alias.get(g, g) in self.acc}
        return self.sums, self.counts, grams
