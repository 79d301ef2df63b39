"""`train.fuse`: one matmul for the LoRA projections that read the same input tensor (q/k/v, gate/up).

Why: a CPU LoRA step is mostly aten::mm, and many of its matmuls are smaller than they need to be. q_proj,
k_proj and v_proj read the same hidden state, as do gate_proj and up_proj, yet PEFT runs each one's frozen
base matmul and its rank-r LoRA-A matmul on its own (and in backward its own grad-input matmul plus an add).
A [N, in] @ [in, 3r] matmul, or one over the concatenated base weights, runs nearer the cores' peak than three
thin ones, and the backward then has one grad-input matmul per group instead of one per projection.

How: the group's frozen base weights are concatenated once into a [sum(out), in] tensor and each module's
weight becomes a view into it (no extra memory, the same state dict). The first module of a group that the
model calls computes the group's base output and x @ cat(A)^T, and leaves them, with the input tensor itself,
for its siblings; each module then adds its own B on its slice, scaled as PEFT scales it (alpha/r or rslora),
so every module returns what PEFT would. Where x, base and adapters share one float dtype (the fp32 CPU path)
the group runs as one autograd function instead (`train.lora_fn`: the scaling and the adds folded into the
matmuls, forward and backward), and so does a safe projection that shares its input with nobody (o_proj,
down_proj: a group of one). A sibling whose input is not that very tensor object (another code path, a
different call order) takes PEFT's plain path. The trained parameters stay PEFT's own: adapter
files, optimizer state, checkpoints, resume, merge and export do not change, nor do the FLOPs of a step.

Groups are found, not listed per model family: one tiny no-grad forward records the order in which the LoRA
linear modules are called and with which input tensor; modules under one parent called one after another
with the same tensor form a group. Gradient checkpointing recomputes a layer by calling it again in the same
order, and torch.compile traces the same Python code, so both work unchanged.

Only where safe (anything else trains unfused and run.json says why): a plain float nn.Linear base (not
bitsandbytes 4-bit), LoRA dropout 0 (with dropout each module draws its own mask), one active adapter, no
DoRA or other LoRA variant, no FSDP (it flattens the weights that the views share).

    auto   on where safe
    on     the same (an unsafe model still trains unfused, with the reason in run.json)
    off    PEFT's own forward
"""

from __future__ import annotations

import os
import types
from typing import Any

ATTR = "_medkit_fuse"  # (group, index in group) on each fused module


class Group:
    """Modules under one parent that the model calls in sequence with the same input tensor."""

    def __init__(self, names: list[str], members: list[Any]):
        import torch

        self.names, self.members = names, members
        self.adapter = members[0].active_adapters[0]
        bases = [m.base_layer for m in members]
        self.weight = torch.cat([b.weight.detach() for b in bases])
        has_bias = bases[0].bias is not None
        self.bias = torch.cat([b.bias.detach() for b in bases]) if has_bias else None
        self.out_sizes = [b.weight.shape[0] for b in bases]
        self.ranks = [m.lora_A[self.adapter].weight.shape[0] for m in members]
        start = 0
        for b, size in zip(bases, self.out_sizes, strict=True):
            b.weight.data = self.weight[start : start + size]  # a view: the original weight's memory is freed
            if self.bias is not None:
                b.bias.data = self.bias[start : start + size]
            start += size
        # (the input, the base output's splits, x @ cat(A)^T's splits): what the siblings take
        self.pending: tuple[Any, Any, Any] | None = None

    def usable(self, x: Any) -> bool:
        """PEFT's vanilla path would run for every member (not merged, adapters on, the same one adapter)."""
        ad = self.adapter
        return x.device == self.weight.device and all(
            not m.merged and not m.disable_adapters and m.active_adapters == [ad] for m in self.members
        )

    def lead(self, module: Any, x: Any) -> Any:
        import torch
        import torch.nn.functional as F

        from medkit.train import lora_fn

        ad = self.adapter
        if lora_fn.fits(x, self.weight, self.members, ad):  # one autograd function, no elementwise passes
            outs = lora_fn.run(x, self.weight, self.bias, self.members, ad, self.out_sizes)
            self.pending = (x, outs, None) if len(outs) > 1 else None
            return outs[0]
        a = torch.cat([m.lora_A[ad].weight for m in self.members])  # [sum(r), in]: one thin matmul
        h = F.linear(module._cast_input_dtype(x, a.dtype), a)
        # split (one autograd node: its backward is one cat), not slicing (a zero-filled full-size grad each)
        base = F.linear(x, self.weight, self.bias).split(self.out_sizes, dim=-1)
        self.pending = (x, base, h.split(self.ranks, dim=-1))
        return self.finish(0, base, self.pending[2])

    def finish(self, i: int, base: Any, h: Any) -> Any:
        """Module i's output: its base slice + B(its slice of x @ cat(A)^T) * scaling, as PEFT computes it;
        or, after lora_fn (h is None), its column of the function's output."""
        m, ad = self.members[i], self.adapter
        last = i == len(self.members) - 1
        if h is None:
            if last:
                self.pending = None
            return base[i]
        out = base[i] + m.lora_B[ad](h[i]) * m.scaling[ad]
        if last:
            self.pending = None  # the group is done: nothing is kept alive past it
        return out.to(base[i].dtype)


def _forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    """The fused module's forward: the group's first module leads, the others take their slices."""
    group, i = getattr(self, ATTR)
    if not args and not kwargs:
        if i == 0:
            if group.usable(x):
                return group.lead(self, x)
        else:
            p = group.pending
            if p is not None and p[0] is x:
                return group.finish(i, p[1], p[2])
    return type(self).forward(self, x, *args, **kwargs)  # PEFT's own path


def unsafe(module: Any) -> str | None:
    """Why this LoRA module cannot join a group (None: it can)."""
    import torch
    from peft.tuners.lora.layer import Linear as LoraLinear

    if not isinstance(module, LoraLinear):
        return f"{type(module).__name__} is not a plain LoRA Linear"
    base = module.base_layer
    if type(base) is not torch.nn.Linear:  # bitsandbytes' Linear4bit/8bit subclass nn.Linear
        return f"base layer is {type(base).__name__} (quantized or not a plain nn.Linear)"
    if not base.weight.dtype.is_floating_point or base.weight.requires_grad:
        return "base weight is not a frozen float tensor"
    if module.fan_in_fan_out:
        return "fan_in_fan_out (Conv1D) layout"
    if len(module.lora_A) != 1 or len(module.active_adapters) != 1:
        return "more than one adapter"
    ad = module.active_adapters[0]
    if ad not in module.lora_A:
        return "the active adapter has no LoRA weights here"
    if ad in getattr(module, "lora_variant", {}) or getattr(module, "use_dora", {}).get(ad):
        return "DoRA or another LoRA variant"
    if not isinstance(module.lora_dropout[ad], torch.nn.Identity):
        return "lora.dropout > 0 (each projection draws its own mask)"
    if module.merged:
        return "adapter merged"
    return None


def find_groups(model: Any) -> tuple[list[list[str]], str | None]:
    """(groups of module names, the first reason a LoRA module was left out) from one tiny probe forward;
    a safe module that shares its input with no sibling is a group of one."""
    import torch
    from peft.tuners.lora.layer import LoraLayer

    names = {id(m): n for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    if not names:
        return [], None
    calls: list[tuple[str, Any]] = []  # (name, input or None when called with more than one argument)

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        plain = len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor)
        calls.append((names[id(module)], args[0] if plain else None))

    mods = dict(model.named_modules())
    handles = [mods[n].register_forward_pre_hook(hook, with_kwargs=True) for n in names.values()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        device = next(model.parameters()).device
        model.eval()  # no dropout: the probe draws no random numbers (losses and resume unchanged)
        with torch.no_grad():
            model(input_ids=torch.zeros((1, 4), dtype=torch.long, device=device))
    finally:
        for m, training in modes:
            m.training = training
        for h in handles:
            h.remove()
    seen: dict[str, int] = {}
    for n, _ in calls:
        seen[n] = seen.get(n, 0) + 1
    reasons = {n: unsafe(mods[n]) for n in seen}
    why = next((r for r in reasons.values() if r is not None), None)
    groups: list[list[str]] = []
    run: list[str] = []
    for k, (n, x) in enumerate(calls):
        prev_n, prev_x = calls[k - 1] if k else (None, None)
        ok = x is not None and seen[n] == 1 and reasons[n] is None
        same_input = x is prev_x and _parent(n) == _parent(prev_n or "")
        if ok and run and same_input and _same_kind(mods[n], mods[run[0]]):
            run.append(n)
        else:
            if run:
                groups.append(run)
            run = [n] if ok else []
    if run:
        groups.append(run)
    return groups, why


def _parent(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def _same_kind(a: Any, b: Any) -> bool:
    wa, wb = a.base_layer.weight, b.base_layer.weight
    ad_a, ad_b = a.active_adapters[0], b.active_adapters[0]
    return (
        wa.dtype == wb.dtype
        and wa.device == wb.device
        and wa.shape[1] == wb.shape[1]
        and (a.base_layer.bias is None) == (b.base_layer.bias is None)
        and ad_a == ad_b
        and a.lora_A[ad_a].weight.dtype == b.lora_A[ad_b].weight.dtype
    )


def fuse(model: Any, mode: str = "auto", *, quantized: bool = False) -> tuple[int, str]:
    """Fuse the model's shared-input groups in place for recipe key train.fuse; (groups fused, why)."""
    if mode == "off":
        return 0, "train.fuse = off"
    key = f"train.fuse = {mode}" if mode == "on" else "auto"
    if quantized:
        return 0, f"{key}: a 4-bit base (bitsandbytes) is not fused"
    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return 0, f"{key}: FSDP flattens the weights the fused views share"
    groups, why = find_groups(model)
    shared = [g for g in groups if len(g) > 1]
    if not groups:
        return 0, f"{key}: " + (why or "no LoRA projections share an input")
    mods = dict(model.named_modules())
    for names in groups:
        members = [mods[n] for n in names]
        group = Group(names, members)
        for i, m in enumerate(members):
            setattr(m, ATTR, (group, i))
            m.forward = types.MethodType(_forward, m)
    kinds = sorted({"+".join(n.rsplit(".", 1)[-1] for n in g) for g in shared})
    singles = sorted({g[0].rsplit(".", 1)[-1] for g in groups if len(g) == 1})
    what = f"{len(shared)} groups ({', '.join(kinds)})" if shared else "no LoRA projections share an input"
    alone = f"; {len(groups) - len(shared)} alone ({', '.join(singles)})" if singles else ""
    left_out = f"; left out: {why}" if why else ""
    return len(shared), f"{key}: {what}{alone}{left_out}"


def unfuse(model: Any) -> int:
    """Undo fuse(): PEFT's forward again and each base weight its own tensor; returns the modules restored."""
    n = 0
    for m in model.modules():
        if ATTR in m.__dict__:
            del m.__dict__[ATTR]
            m.__dict__.pop("forward", None)
            m.base_layer.weight.data = m.base_layer.weight.data.clone()
            if m.base_layer.bias is not None:
                m.base_layer.bias.data = m.base_layer.bias.data.clone()
            n += 1
    return n
