"""What the calibration pass sums from each weight's inputs: x^2 per input column (the importance matrix)
and, for the weights GPTQ rounds, the Gram matrix X^T X (whose diagonal is that importance).

    stats = ActStats(names, widths, want, device)    # names: HF module -> GGUF weight
    handles = [mod.register_forward_hook(stats.hook(g)) for ...]
    stats.weight, stats.keep = 1.0, rows             # how many sequences a row stands for, real rows
    ...; stats.end_batch()                           # after each forward
    sums, counts, grams = stats.finish()

One home for the hooks both the whole-model pass (medkit.convert.quant.imatrix.collect) and the layer-by-layer
one (medkit.convert.quant.layerwise) use, so the two sum alike. Weights fed the very same input tensor in one
batch (q/k/v, gate/up) share its sums (an alias); the Gram sums are taken GRAM_TOKENS rows at a time in
float32, the importance of a weight without one in float32 per batch and float64 in total.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import Any

from medkit.errors import ConvertError

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
        self.gram_flops = 0  # the Gram sums' useful work: rows x width^2 per distinct input (symmetric)

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
        self.gram_flops += int(raw.shape[0]) * int(raw.shape[1]) ** 2
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


def gguf_names(family: Any, config: dict[str, Any], module_names: Iterable[str]) -> dict[str, str]:
    """HF Linear/Conv1D module name -> GGUF weight name, for the modules whose weight the GGUF holds."""
    from medkit.convert.arch.layout import plan_tensor, tensor_name_map

    name_map = tensor_name_map(family, family.read_dims(config).n_layer)
    out = {}
    for mod in module_names:
        try:
            planned = plan_tensor(family, config, name_map, f"{mod}.weight", 2)
        except ConvertError:
            continue  # a layer the GGUF does not hold (a classifier head, ...)
        if planned is not None:
            out[mod] = planned[0]
    return out


FORWARD_TOKENS = 1024  # padded tokens a calibration batch holds (sequences of like length batched)


def calib_batches(seqs: list[list[int]], budget: int) -> list[list[list[int]]]:
    """``seqs`` sorted by length and cut into batches of at most ``budget`` padded tokens (one sequence
    alone when it is longer): one matmul of ~1000 rows instead of ten of ~100 (2.5x on CPU)."""
    out: list[list[list[int]]] = []
    for ids in sorted(seqs, key=len):
        if out and len(ids) * (len(out[-1]) + 1) <= budget:
            out[-1].append(ids)
        else:
            out.append([ids])
    return out


# the common prefix of the calibration sequences is run once when it is this long (SmolLM2's Q&A demo: 28
# tokens of every row's ~84, the system prompt and the template's header: a third of the pass)
MIN_SHARED = 8


def shared_prefix(seqs: list[list[int]]) -> int:
    """The number of tokens every sequence of ``seqs`` starts with (each keeping one of its own at least),
    when there are two sequences or more and it is MIN_SHARED or longer; else 0."""
    if len(seqs) < 2:
        return 0
    first, n = seqs[0], min(len(s) for s in seqs) - 1
    for s in seqs[1:]:
        n = next((i for i in range(n) if s[i] != first[i]), n)  # the first place it differs, if sooner
    return n if n >= MIN_SHARED else 0


@functools.lru_cache(maxsize=4)
def forward_dtype(device: str) -> Any:
    """The dtype the calibration forward runs in: bfloat16 where ``device`` multiplies in it much faster
    than in float32 (a CUDA GPU with bf16; a CPU with AMX or AVX512-BF16, measured once: 5x on a Xeon with
    AMX, slower than float32 where it is emulated), else float32. Importance and Gram sums stay float32+."""
    import torch

    if str(device).startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if str(device) != "cpu":
        return torch.float32
    secs = {}
    for dt in (torch.float32, torch.bfloat16):
        a, b = torch.ones(256, 1024, dtype=dt), torch.ones(1024, 1024, dtype=dt)
        a @ b  # warm-up (oneDNN picks its kernel)
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        secs[dt] = time.perf_counter() - t0
    return torch.bfloat16 if secs[torch.bfloat16] * 2 < secs[torch.float32] else torch.float32


def is_matmul(module: Any) -> bool:
    import torch

    return isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"


def in_features(module: Any) -> int:
    return int(module.in_features if hasattr(module, "in_features") else module.weight.shape[0])
