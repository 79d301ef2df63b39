"""`train.compile`: the decoder layers through torch.compile (inductor), with the losses of eager mode.

On CPU a LoRA step of a small model spends a large share of its time outside the matmuls: RMSNorm, rope,
SiLU x gate, residual adds, casts and their backward, each a separate pass over memory. Inductor fuses them
into a few vectorized C++ loops per layer. Every decoder layer of a model runs the same code, so one graph
(compiled with dynamic sequence lengths) serves all of them and every batch shape.

Random ops keep eager's generator (``fallback_random``): a dropout mask is drawn from the same stream as
without compile, so the losses, and a resumed run's losses, are the same as eager's.

    auto   on for CPU runs of at least AUTO_MIN_STEPS optimizer steps of a model at least AUTO_MIN_HIDDEN wide
           when a C++ compiler is installed
           (compiling costs ~40 s on 2 cores the first time, a few seconds once inductor's cache has it);
           off on CUDA and MPS until measured there (`make gpu-check` times "on")
    on     compile (a missing C++ compiler on CPU is one line)
    off    eager
"""

from __future__ import annotations

import os
import shutil
import sys
from typing import Any

from medkit.errors import TrainError

AUTO_MIN_STEPS = 200
AUTO_MIN_HIDDEN = 512  # below, per-call overhead outweighs the fusion (bench, hidden 256: 0.63x; 576: 1.08x)
_COMPILERS = ("c++", "g++", "clang++", "cl")


def has_cxx() -> bool:
    """Whether inductor can build CPU kernels here (a C++ compiler on PATH, or $CXX)."""
    return bool(os.environ.get("CXX")) or any(shutil.which(c) for c in _COMPILERS)


def decide(mode: str, device: str, total_steps: int, hidden: int | None = None) -> tuple[bool, str]:
    """(compile?, why) for recipe key train.compile = auto | on | off (``hidden``: the model's width)."""
    if mode == "off":
        return False, "train.compile = off"
    if mode == "on":
        if device == "cpu" and not has_cxx():
            raise TrainError(
                "train.compile = on needs a C++ compiler for inductor's CPU kernels (none on PATH)",
                hint="install g++ or clang++, or set train.compile = off",
            )
        return True, "train.compile = on"
    if device != "cpu":
        return False, f"auto: not yet measured on {device}"
    if total_steps < AUTO_MIN_STEPS:
        return False, f"auto: {total_steps} steps do not repay compiling (needs >= {AUTO_MIN_STEPS})"
    if hidden is not None and hidden < AUTO_MIN_HIDDEN:
        return False, f"auto: hidden size {hidden} is too small to gain (needs >= {AUTO_MIN_HIDDEN})"
    if not has_cxx():
        return False, "auto: no C++ compiler for inductor"
    if sys.platform == "win32":
        return False, "auto: not measured on Windows"
    return True, f"auto: {total_steps} CPU steps"


def decoder_layers(model: Any) -> list[Any]:
    """The model's repeated blocks: the longest nn.ModuleList whose children are all of one class."""
    import torch

    best: list[Any] = []
    for module in model.modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) > len(best):
            kinds = {type(m) for m in module}
            if len(kinds) == 1:
                best = list(module)
    return best


def compile_layers(model: Any) -> int:
    """Compile every decoder layer in place (state-dict keys unchanged); returns how many."""
    import torch._inductor.config as inductor

    inductor.fallback_random = True  # dropout from eager's generator: the same masks, the same losses
    if hasattr(model, "enable_input_require_grads"):
        model.enable_input_require_grads()  # layer 0 sees a grad-requiring input like the others: one graph
    layers = decoder_layers(model)
    for layer in layers:
        layer.compile(dynamic=True)  # one graph for every sequence length and batch size
    return len(layers)


def eager_stance(compiled: bool) -> Any:
    """A context that runs compiled layers eagerly (evaluation under no_grad would compile a second graph)."""
    from contextlib import nullcontext

    if not compiled:
        return nullcontext()
    import torch

    return torch.compiler.set_stance("force_eager")
