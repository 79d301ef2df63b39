"""Training FLOPs of a LoRA step and this machine's matmul peak: the one home of MFU arithmetic.

MFU (model-FLOPs utilisation) = the FLOPs a training step needs / seconds / the dense matmul peak measured on
this machine (fp32 on CPU, the compute dtype on CUDA, in a matmul of the model's own MLP shape). The count:

- every frozen linear of the body (the 4-bit or 16-bit base): forward 2*in*out per token, plus the gradient
  with respect to its input, another 2*in*out (no weight gradient: the weights are frozen) -> 4 x params;
- every trainable linear (LoRA's A and B): forward, input gradient and weight gradient -> 6 x params;
- attention's score and value matmuls per layer: 4 * heads * head_dim per causal (query, key) pair forward,
  twice that backward; pairs are counted per example (packed rows do not attend across examples) and only
  inside the sliding window where the model has one;
- the output head only on the tokens it is computed for (selective CE: the trained tokens; HF's full loss:
  every token), forward + input gradient;
- with gradient checkpointing every decoder layer's forward runs again in the backward pass (frozen and
  LoRA linears and attention), and so does the head for chunks that the selective loss checkpoints.
Norms, activations, rope, softmax and the optimizer step are elementwise and not counted. One small
overcount, kept for simplicity: the first layer's q/k/v input gradient (nothing trainable lies below it)
is counted like every other; that is 3 of 7 linears in 1 of N layers. The counts come
from the model's own modules, so any family (and a 4-bit base) is counted the same way.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from typing import Any

PEAK_ENV = "MEDKIT_PEAK_FLOPS"  # FLOP/s to use instead of measuring (e.g. the bench's measurement)


@dataclass(frozen=True)
class ModelFlops:
    """The sizes that the FLOP count of a LoRA training step needs, read once from a model."""

    frozen: int  # sum of in*out over the body's frozen linears
    trainable: int  # sum of in*out over the body's trainable linears (LoRA A and B)
    head: int  # in*out of the output head
    head_trainable: bool  # the head's own weight is trained (then it also gets a weight gradient)
    attn: int  # layers * attention heads * head_dim: the width of the score/value matmuls, all layers
    window: int | None  # sliding-window attention span, None for full causal attention
    hidden: int
    intermediate: (
        int  # the MLP's width: the peak is measured in a (tokens, hidden) x (hidden, intermediate) matmul
    )

    @classmethod
    def from_model(cls, model: Any) -> ModelFlops:
        """Read a (PEFT-wrapped) causal LM: its linears, its head and its attention shape."""
        from medkit.train.loss import body_and_head

        body, head, _ = body_and_head(model)
        head_ids = {id(m) for m in head.modules()}
        frozen = trainable = 0
        for mod in body.modules():
            if id(mod) in head_ids or not _is_linear(mod):
                continue
            if mod.weight.requires_grad:
                trainable += _size(mod)
            else:
                frozen += _size(mod)
        head_frozen = sum(_size(m) for m in head.modules() if _is_linear(m) and not m.weight.requires_grad)
        head_train = sum(_size(m) for m in head.modules() if _is_linear(m) and m.weight.requires_grad)
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        hidden = _first(cfg, "hidden_size", "n_embd", "d_model")
        heads = _first(cfg, "num_attention_heads", "n_head")
        layers = _first(cfg, "num_hidden_layers", "n_layer")
        head_dim = _head_dim(cfg, hidden, heads)
        inter = _first(cfg, "intermediate_size", "n_inner", "ffn_dim", default=0) or 4 * hidden
        window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
        return cls(
            frozen=frozen, trainable=trainable, head=head_frozen + head_train, head_trainable=head_train > 0,
            attn=layers * heads * head_dim, window=window or None, hidden=hidden, intermediate=inter,
        )  # fmt: skip

    def forward(self, tokens: int, pairs: int) -> int:
        """FLOPs of one forward pass of the body (no head, no backward) over ``tokens`` tokens whose
        attention computes ``pairs`` (query, key) pairs in all: what a calibration pass runs."""
        return 2 * (self.frozen + self.trainable) * tokens + 4 * self.attn * pairs

    def step(
        self,
        seq_lens: list[int],
        head_tokens: int,
        *,
        grad_checkpointing: bool,
        head_recompute_tokens: int = 0,
    ) -> Flops:
        """FLOPs of forward + backward over examples of these lengths (one micro-batch or many)."""
        tokens = sum(seq_lens)
        pairs = sum(causal_pairs(n, self.window) for n in seq_lens)
        head = (4 + (2 if self.head_trainable else 0)) * self.head * head_tokens
        recompute = 0
        if grad_checkpointing:
            recompute = 2 * (self.frozen + self.trainable) * tokens + 4 * self.attn * pairs
        recompute += 2 * self.head * head_recompute_tokens
        return Flops(
            frozen=4 * self.frozen * tokens,
            lora=6 * self.trainable * tokens,
            attention=12 * self.attn * pairs,
            head=head,
            recompute=recompute,
        )


@dataclass(frozen=True)
class Flops:
    frozen: int = 0  # frozen linears: forward + input gradient
    lora: int = 0  # LoRA A and B: forward, input and weight gradients
    attention: int = 0  # score and value matmuls, forward + backward
    head: int = 0  # output head on the tokens it is computed for
    recompute: int = 0  # forwards run again by activation checkpointing

    @property
    def total(self) -> int:
        return self.frozen + self.lora + self.attention + self.head + self.recompute

    def __add__(self, other: Flops) -> Flops:
        return Flops(*(a + b for a, b in zip(asdict(self).values(), asdict(other).values(), strict=True)))

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "total": self.total}


def causal_pairs(n: int, window: int | None = None) -> int:
    """(query, key) pairs that causal attention over n tokens computes (each query sees at most `window`)."""
    if window is None or n <= window:
        return n * (n + 1) // 2
    return window * (window + 1) // 2 + (n - window) * window


@dataclass(frozen=True)
class Peak:
    """A dense matmul peak: FLOP/s, where it came from, and the matmul it was measured on."""

    flops_per_s: float
    source: str  # "measured" | "MEDKIT_PEAK_FLOPS" | "bench"
    dtype: str = ""
    device: str = ""
    shape: tuple[int, int, int] = (0, 0, 0)  # (tokens, in, out) of the fastest matmul measured
    seconds: float = 0.0  # time the measurement took

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["tflops"] = round(self.flops_per_s / 1e12, 4)
        out["shape"] = list(self.shape)
        return out


def measure_peak(
    tokens: int, hidden: int, intermediate: int, *, dtype: Any, device: Any, budget_s: float = 0.3
) -> Peak:
    """Best FLOP/s of the MLP's two matmuls, x (tokens, hidden) @ (hidden, intermediate) and x (tokens,
    intermediate) @ (intermediate, hidden), after two warm-ups each, timed for about `budget_s` in all (3
    runs each at least, unless one run alone takes half its share); the best run is the machine's peak.
    Both directions: on 2 CPU cores TinyLlama's down projection ran at 249 GFLOP/s and its gate at 224, and
    a peak of the gate's shape alone let the achieved FLOP/s of a whole step read above it."""
    import torch

    t_start = time.perf_counter()
    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    work = 2.0 * tokens * hidden * intermediate
    best, best_shape = 0.0, (tokens, hidden, intermediate)
    with torch.no_grad():
        for k, n in ((hidden, intermediate), (intermediate, hidden)):
            x = torch.randn(tokens, k, generator=gen).to(dev, dtype)
            w = torch.randn(n, k, generator=gen).to(dev, dtype)
            for _ in range(2):
                torch.nn.functional.linear(x, w)
            sync()
            runs, started = 0, time.perf_counter()
            while runs < 3 or time.perf_counter() - started < budget_s / 2:
                t0 = time.perf_counter()
                torch.nn.functional.linear(x, w)
                sync()
                took = time.perf_counter() - t0
                if work / max(took, 1e-9) > best:
                    best, best_shape = work / max(took, 1e-9), (tokens, k, n)
                runs += 1
                if runs >= 1000 or took > budget_s / 4:
                    break
            del x, w
    return Peak(
        best, "measured", str(dtype).replace("torch.", ""), str(dev.type), best_shape,
        round(time.perf_counter() - t_start, 3),
    )  # fmt: skip


def mlp_tokens(tokens: int, hidden: int, intermediate: int, device: Any) -> int:
    """Rows of the peak's matmul: the micro-batch's tokens, kept within [256, 8192] and, off CUDA, to about
    4 GFLOP a run so the whole measurement stays within a second or two on a laptop's cores, but never
    under CPU_MIN_ROWS: at 256 rows TinyLlama's MLP ran at 259 GFLOP/s on 2 cores, at 1024 at 297, so a
    256-row peak let a wide model's MFU read above 100%."""
    rows = max(256, min(int(tokens), 8192))
    if str(device).split(":")[0] != "cuda":
        rows = min(rows, max(CPU_MIN_ROWS, int(4e9 / (2 * hidden * intermediate))))
    return rows


CPU_MIN_ROWS = 1024


def peak_for(mf: ModelFlops, tokens: int, *, dtype: Any, device: Any) -> Peak:
    """MEDKIT_PEAK_FLOPS when set (FLOP/s, e.g. from `make bench`), else measured now on the MLP shape."""
    pinned = os.environ.get(PEAK_ENV, "").strip()
    if pinned:
        try:
            value = float(pinned)
        except ValueError:
            value = 0.0
        if value > 0:
            return Peak(value, PEAK_ENV, str(dtype).replace("torch.", ""), str(device))
    rows = mlp_tokens(tokens, mf.hidden, mf.intermediate, device)
    return measure_peak(rows, mf.hidden, mf.intermediate, dtype=dtype, device=device)


def mfu_line(flops: float, seconds: float, mf: ModelFlops, tokens: int, *, dtype: Any, device: Any) -> str:
    """'N TFLOP in S s: G GFLOP/s, MFU P% of the D matmul peak' for a pass of ``flops`` (peak_for's peak)."""
    peak = peak_for(mf, tokens, dtype=dtype, device=device)
    use = mfu(flops, seconds, peak)
    rate = flops / max(seconds, 1e-9)
    where = f"{peak.dtype} matmul peak {peak.flops_per_s / 1e9:,.0f} GFLOP/s ({peak.source})"
    return f"{flops / 1e12:.2f} TFLOP in {seconds:.1f}s: {rate / 1e9:,.1f} GFLOP/s, MFU " + (
        f"{use:.1%} of the {where}" if use is not None else "unknown"
    )


def faster(first: Peak | None, again: Peak | None) -> Peak | None:
    """The peak run.json's MFU is divided by: the faster of the one measured when training started and the one
    measured when it ended (a VM's speed moves; MFU is against the machine's limit in this run, as the bench
    takes it). A pinned peak (MEDKIT_PEAK_FLOPS) stays."""
    if first is None or first.source != "measured" or again is None:
        return first or again
    return again if again.flops_per_s > first.flops_per_s else first


def mfu(flops: float, seconds: float, peak: Peak | None) -> float | None:
    """Achieved FLOP/s over the peak, or None when either is unknown."""
    if peak is None or peak.flops_per_s <= 0 or seconds <= 0:
        return None
    return flops / seconds / peak.flops_per_s


def _is_linear(mod: Any) -> bool:
    import torch

    kind = type(mod).__name__
    weight = getattr(mod, "weight", None)
    return weight is not None and (isinstance(mod, torch.nn.Linear) or kind in ("Conv1D", "Linear8bitLt"))


def _size(mod: Any) -> int:
    """in*out of a linear; 4-bit weights are packed, so the declared features are used where present."""
    if hasattr(mod, "in_features") and hasattr(mod, "out_features"):
        return int(mod.in_features) * int(mod.out_features)
    return int(mod.weight.shape[0]) * int(mod.weight.shape[1])  # GPT-2's Conv1D: (in, out)


def _first(cfg: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(cfg, name, None)
        if value is not None:
            return value
    if default is not None:
        return default
    raise AttributeError(f"{type(cfg).__name__} has none of {', '.join(names)}")


def _head_dim(cfg: Any, hidden: int, heads: int) -> int:
    """Attention head size; a per-layer one (Gemma 4: sliding and full layers differ) as its mean over layers."""
    try:
        return getattr(cfg, "head_dim", None) or hidden // heads
    except RuntimeError:  # transformers refuses the global read of a per-layer attribute
        sizes = [layer.head_dim for layer in cfg.per_layer_config]
        return round(sum(sizes) / len(sizes))
