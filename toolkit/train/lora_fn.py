"""`train.lora_fn`: a LoRA group's forward and backward as one autograd function, no elementwise passes.

PEFT computes a LoRA linear as ``base(x) + B(A(x)) * scaling``. On a CPU step that costs, besides the
matmuls, full-width elementwise passes over memory: the scaling multiply on the [tokens, out] LoRA output
and the add onto the base output (forward), their backward twins, the add of the two input gradients (the
base's and LoRA's) and, for a fused group, the concatenation of the members' output gradients before the
one grad-input matmul. On the SmolLM2 demo these were ~10% of a step (profile, 2 cores).

Here a group of k LoRA linears that read one input x (k = 1 for a lone projection) runs as:

    forward   out = x @ W^T (+ bias)              one matmul over the group's concatenated base weights
              h   = x @ cat(A)^T                  one thin matmul for all members' A
              out[:, member i] += s_i * h_i @ B_i^T   accumulated by the matmul itself (addmm_, beta = 1)
    backward  gh_i = s_i * g_i @ B_i              [tokens, r]: the scaling lands on rank-wide tensors
              dB_i = s_i * g_i^T @ h_i,  dA = gh^T @ x
              dx   = sum_i g_i @ W_i + gh @ cat(A)   accumulated in place, member by member: no concatenated
                                                     gradient and no add pass; skipped when x needs none
                                                     (the first layer, below which nothing is trained)

The members' outputs are column views of one [tokens, sum(out)] tensor. The parameters stay PEFT's own
(lora_A/lora_B weights; the base weights are views of the concatenated tensor), so adapter files, optimizer
state, checkpoints and merge are unchanged; the result equals PEFT's to float rounding (test).

Used where it is exact: x, the base and LoRA weights of one float dtype and no autocast (the fp32 CPU path,
or a 16-bit model with 16-bit adapters); anything else takes the fused-group path of `train.fuse`.
"""

from __future__ import annotations

from typing import Any

import torch


class LoraGroupFn(torch.autograd.Function):
    """apply(x, weight, bias, scalings, out_sizes, *A, *B) -> one output per member (see the module doc)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        scalings: tuple[float, ...],
        out_sizes: tuple[int, ...],
        *ab: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        k = len(out_sizes)
        a_list, b_list = ab[:k], ab[k:]
        lead = x.shape[:-1]
        x2 = x.reshape(-1, x.shape[-1])
        a = torch.cat(a_list) if k > 1 else a_list[0]
        h = torch.mm(x2, a.t())
        out = torch.mm(x2, weight.t()) if bias is None else torch.addmm(bias, x2, weight.t())
        ranks = tuple(t.shape[0] for t in a_list)
        col = row = 0
        for size, r, b, s in zip(out_sizes, ranks, b_list, scalings, strict=True):
            out[:, col : col + size].addmm_(h[:, row : row + r], b.t(), alpha=s)
            col, row = col + size, row + r
        ctx.save_for_backward(x2, weight, a, h, *b_list)
        ctx.meta = (lead, x.shape[-1], out_sizes, ranks, scalings)
        outs, col = [], 0
        for size in out_sizes:
            outs.append(out[:, col : col + size].view(*lead, size))
            col += size
        return tuple(outs)

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor | None) -> tuple[Any, ...]:  # type: ignore[override]
        x2, weight, a, h, *b_list = ctx.saved_tensors
        lead, width, out_sizes, ranks, scalings = ctx.meta
        n = x2.shape[0]
        gs = [None if g is None else g.reshape(n, g.shape[-1]) for g in grads]
        gh_parts: list[torch.Tensor] = []
        db: list[torch.Tensor | None] = []
        row = 0
        for g, r, b, s in zip(gs, ranks, b_list, scalings, strict=True):
            if g is None:
                gh_parts.append(x2.new_zeros(n, r))
                db.append(None)
            else:
                gh_parts.append(torch.mm(g, b).mul_(s))  # [n, r]
                db.append(torch.mm(g.t(), h[:, row : row + r]).mul_(s))  # [out_i, r]
            row += r
        gh = torch.cat(gh_parts, dim=1) if len(gh_parts) > 1 else gh_parts[0]
        da = torch.mm(gh.t(), x2)  # [sum(r), in]
        da_list = list(da.split(list(ranks))) if len(ranks) > 1 else [da]
        dx = None
        if ctx.needs_input_grad[0]:
            dx = torch.mm(gh, a)
            col = 0
            for g, size in zip(gs, out_sizes, strict=True):
                if g is not None:
                    dx.addmm_(g, weight[col : col + size])
                col += size
            dx = dx.view(*lead, width)
        return (dx, None, None, None, None, *da_list, *db)


def fits(x: Any, weight: Any, members: list[Any], adapter: str) -> bool:
    """The function is exact here: one float dtype throughout, no autocast to change it."""
    if torch.is_autocast_enabled(x.device.type):
        return False
    dt = weight.dtype
    return x.dtype == dt and all(
        m.lora_A[adapter].weight.dtype == dt and m.lora_B[adapter].weight.dtype == dt for m in members
    )


def run(
    x: Any, weight: Any, bias: Any, members: list[Any], adapter: str, out_sizes: list[int]
) -> tuple[Any, ...]:
    """The members' outputs for input x through LoraGroupFn."""
    a = [m.lora_A[adapter].weight for m in members]
    b = [m.lora_B[adapter].weight for m in members]
    scalings = tuple(float(m.scaling[adapter]) for m in members)
    return LoraGroupFn.apply(x, weight, bias, scalings, tuple(out_sizes), *a, *b)
