"""Selective cross-entropy: logits only where a label is trained, in chunks, never the full vocab tensor.

A causal LM's head turns every position's hidden state into a vocabulary-wide row of logits; for a 32k-150k
vocabulary that tensor (and its fp32 copy for the loss) dominates memory and a good share of compute,
although only the answer tokens carry a label. Here the hidden states are gathered at the positions whose
next token is trained, the head runs on those alone, and for many of them it runs chunk by chunk under
activation checkpointing so only one chunk of logits is alive at a time. A frozen float32 head (tied
embeddings, the CPU demo) runs with its loss as one function (HeadCE) that computes the hidden states'
gradient while the chunk's logits exist: nothing checkpointed or recomputed, no zero-filled logits gradient.
"""

from __future__ import annotations

import functools
from typing import Any

IGNORE = -100
CHUNK = 2048  # label tokens per head call


def selective_ce(
    hidden: Any,
    labels: Any,
    head: Any,
    *,
    chunk: int = CHUNK,
    softcap: float | None = None,
) -> tuple[Any, Any]:
    """(sum of token losses, number of trained tokens) for hidden states (B, T, H) and unshifted labels (B, T).

    `head` maps (N, H) -> (N, V) (an nn.Linear, a LoRA-wrapped one or a 4-bit one). Losses are summed in
    fp32 so callers can normalise by the tokens of a whole accumulated step.
    """
    import torch
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    targets = labels[:, 1:]
    keep = targets != IGNORE
    h = hidden[:, :-1][keep]  # (N, H): only the positions whose next token is trained
    y = targets[keep]
    n = y.numel()
    if n == 0:
        return hidden.sum() * 0.0, torch.zeros((), dtype=torch.long, device=hidden.device)

    def part(hs: Any, ys: Any) -> Any:
        logits = head(hs).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return F.cross_entropy(logits, ys, reduction="sum")

    if _plain_head(head, h, softcap):  # the head and the loss in one function, nothing checkpointed
        need = torch.is_grad_enabled() and h.requires_grad
        fn = _head_ce()
        total = sum(
            fn.apply(h[i : i + chunk], head.weight, y[i : i + chunk], need) for i in range(0, n, chunk)
        )
    elif n <= chunk or not torch.is_grad_enabled():
        total = sum(part(h[i : i + chunk], y[i : i + chunk]) for i in range(0, n, chunk))
    else:
        total = sum(
            checkpoint(part, h[i : i + chunk], y[i : i + chunk], use_reentrant=False)
            for i in range(0, n, chunk)
        )
    return total, torch.tensor(n, device=hidden.device)


def head_recomputed(model: Any, tokens: int, *, autocast: bool) -> int:
    """Head tokens whose logits the backward pass computes again (the FLOP count asks): none under HeadCE,
    those of the checkpointed chunks otherwise."""
    _, head, softcap = body_and_head(model)
    w = getattr(head, "weight", None)  # the hidden states share its dtype and device when HeadCE can run
    if not autocast and w is not None and _plain_head(head, w, softcap):
        return 0
    return tokens if tokens > CHUNK else 0


def _plain_head(head: Any, h: Any, softcap: float | None = None) -> bool:
    """A frozen float32 nn.Linear head without bias or soft-cap, under no autocast: HeadCE computes exactly
    what it would. The one test of selective_ce and of the FLOP count."""
    import torch

    w = getattr(head, "weight", None)
    return (
        type(head) is torch.nn.Linear
        and head.bias is None
        and w is not None
        and not w.requires_grad
        and w.dtype == h.dtype == torch.float32
        and not softcap
        and not torch.is_autocast_enabled(h.device.type)
    )


@functools.cache
def _head_ce() -> Any:
    import torch

    class HeadCE(torch.autograd.Function):
        """Summed cross-entropy of logits = h @ W^T against y; the gradient with respect to h is computed in
        the forward pass, where the logits already are: softmax - onehot, then one matmul with W. No
        [n, vocab] tensor outlives the call (no logits saved, none recomputed, no zero-filled gradient) and the
        loss is read off the log-softmax, so a vanishing probability gives a finite loss."""

        @staticmethod
        def forward(ctx: Any, h: Any, w: Any, y: Any, need_grad: bool) -> Any:  # type: ignore[override]
            logp = torch.log_softmax(torch.mm(h, w.t()), dim=1)  # the raw logits are freed here
            rows = torch.arange(y.shape[0], device=y.device)
            loss = -logp[rows, y].sum()
            if need_grad:
                p = logp.exp_()
                p[rows, y] -= 1.0
                ctx.save_for_backward(torch.mm(p, w))
            return loss

        @staticmethod
        def backward(ctx: Any, grad: Any) -> tuple[Any, ...]:  # type: ignore[override]
            (gh,) = ctx.saved_tensors
            return gh * grad, None, None, None

    return HeadCE


def body_and_head(model: Any) -> tuple[Any, Any, float | None]:
    """The transformer body, the output head and any logit soft-cap of a (PEFT-wrapped) causal LM."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = hf.base_model if getattr(hf, "base_model", None) is not None else hf.model
    head = hf.get_output_embeddings()
    if body is hf or head is None:
        raise TypeError(f"{type(hf).__name__} has no separate body and output head")
    softcap = getattr(hf.config, "final_logit_softcapping", None)
    return body, head, softcap


def make_loss_module(model: Any):
    """An nn.Module whose forward returns (loss sum, trained tokens); wrap THIS in DDP, not the LM."""
    import torch

    class SelectiveLossLM(torch.nn.Module):
        def __init__(self, lm: Any):
            super().__init__()
            self.lm = lm

        def forward(
            self, input_ids: Any, labels: Any, attention_mask: Any = None, position_ids: Any = None
        ) -> tuple[Any, Any]:
            body, head, softcap = body_and_head(self.lm)
            out = body(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            )
            return selective_ce(out[0], labels, head, softcap=softcap)

    return SelectiveLossLM(model)


def label_ce(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(summed cross-entropy, trained tokens) of full logits (B, T, V) against unshifted labels (B, T):
    position t predicts label t+1, IGNORE (-100) positions are skipped. The one label-NLL of medkit:
    training's reference loss, eval's perplexity and merge's report all come here."""
    rows, counts = label_ce_rows(logits, labels)
    return rows.sum(), counts.sum()


def label_ce_rows(logits: Any, labels: Any) -> tuple[Any, Any]:
    """label_ce per sequence: ([B] summed cross-entropy, [B] trained tokens)."""
    import torch.nn.functional as F

    logits = logits[:, :-1].float()
    targets = labels[:, 1:].to(logits.device)
    loss = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=IGNORE, reduction="none"
    )
    return loss.view(targets.shape).sum(1), (targets != IGNORE).sum(1)


def full_ce(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Reference: the model's own full-vocabulary logits, summed CE over trained tokens (tests, benchmark)."""
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch.get("attention_mask"),
        position_ids=batch.get("position_ids"),
        use_cache=False,
    )
    return label_ce(out.logits, batch["labels"])


def label_nll(
    model: Any, examples: list[Any], *, batch_size: int = 1, pad_id: int = 0, device: Any = None
) -> tuple[float, int]:
    """Summed NLL over the label positions of tokenized examples (``.input_ids``, ``.labels``) and their
    count, without gradients; similar lengths are batched together (right padding, masked)."""
    rows = label_nll_rows(model, examples, batch_size=batch_size, pad_id=pad_id, device=device)
    return sum(r[0] for r in rows), sum(r[1] for r in rows)


def label_nll_rows(
    model: Any, examples: list[Any], *, batch_size: int = 1, pad_id: int = 0, device: Any = None
) -> list[tuple[float, int]]:
    """label_nll per example, in the examples' order: [(summed NLL, label positions)] (eval's intervals
    resample these)."""
    import torch

    device = device if device is not None else next(model.parameters()).device
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].input_ids))  # less padding per batch
    out: list[tuple[float, int]] = [(0.0, 0)] * len(examples)
    step = max(1, batch_size)
    with torch.inference_mode():
        for i in range(0, len(order), step):
            at = order[i : i + step]
            batch = [examples[k] for k in at]
            width = max(len(e.input_ids) for e in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, e in enumerate(batch):
                k = len(e.input_ids)
                ids[row, :k] = torch.tensor(e.input_ids)
                labels[row, :k] = torch.tensor(e.labels)
                mask[row, :k] = 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            nll, n = label_ce_rows(logits, labels)
            for k, v, c in zip(at, nll.tolist(), n.tolist(), strict=True):
                out[k] = (float(v), int(c))
    return out
