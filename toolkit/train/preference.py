"""Preference tuning from pairs: DPO (Rafailov et al. 2023) and ORPO (Hong et al. 2024), train.method.

Each micro-batch is `batch_size` pairs laid out as one padded batch: the chosen sequences, then the
rejected ones. The policy's log-probability of an answer is the sum of its tokens' log-probs (prompt
masked), with the head run only at the answer's positions (as SFT's selective loss).

DPO's reference is the policy as it starts: the `train.init_from` adapter, or the base when the adapter is
fresh (LoRA's B = 0 makes them equal). Being frozen, its log-probs are computed once, without gradients,
for the train pairs the run's steps will see (inside step 1's time, so tokens/s pays for them) and the
val pairs, and kept in the run directory (reference/) for `--resume`: no second copy of the model in
memory and no adapter switching at each step.

    DPO   loss = -log sigmoid(beta * ((pc - rc) - (pr - rr)))             mean over pairs
                 + sft_weight * NLL(chosen answers, mean over their tokens)   (RPO; 0 by default)
    ORPO  loss = NLL(chosen answers, mean over their tokens)
                 - lambda * log sigmoid(log odds(mean pc) - log odds(mean pr))   mean over pairs
          with log odds(l) = l - log(1 - exp(l)) on the mean token log-prob l of an answer.

Losses are sums over pairs (and answer tokens) divided by the counts of the whole accumulated step on all
processes, so a step's loss does not depend on how it is cut into micro-batches (as SFT's).
"""

from __future__ import annotations

import json
import math
from typing import Any

from medkit.data import batching
from medkit.errors import TrainError
from medkit.train.loop import Trainer
from medkit.train.loss import CHUNK, IGNORE, body_and_head

REFERENCE = "reference"  # run_dir/reference/rank<N>.json: each process's reference log-probs
METHODS = ("dpo", "orpo")


def token_logps(hidden: Any, labels: Any, head: Any, *, softcap: float | None = None) -> tuple[Any, Any]:
    """(log-probs of the labelled tokens [N], their row [N]), row-major, from hidden states (B, T, H) and
    unshifted labels (B, T); the head runs only where a label is (in chunks under checkpointing)."""
    import torch
    from torch.utils.checkpoint import checkpoint

    targets = labels[:, 1:]
    keep = targets != IGNORE
    rows = keep.nonzero()[:, 0]
    h = hidden[:, :-1][keep]
    y = targets[keep]

    def part(hs: Any, ys: Any) -> Any:
        logits = head(hs).float()
        if softcap:
            logits = torch.tanh(logits / softcap) * softcap
        return torch.log_softmax(logits, dim=-1).gather(1, ys[:, None])[:, 0]

    n = y.numel()
    if n <= CHUNK or not torch.is_grad_enabled():
        token_lp = torch.cat([part(h[i : i + CHUNK], y[i : i + CHUNK]) for i in range(0, max(n, 1), CHUNK)])
    else:
        token_lp = torch.cat(
            [
                checkpoint(part, h[i : i + CHUNK], y[i : i + CHUNK], use_reentrant=False)
                for i in range(0, n, CHUNK)
            ]
        )
    return token_lp[:n], rows


def answer_logps(hidden: Any, labels: Any, head: Any, *, softcap: float | None = None) -> tuple[Any, Any]:
    """([B] summed log-probs of the labelled tokens, [B] their counts): token_logps summed per row."""
    import torch

    token_lp, rows = token_logps(hidden, labels, head, softcap=softcap)
    sums = torch.zeros(labels.shape[0], dtype=torch.float32, device=hidden.device).index_add(
        0, rows, token_lp
    )
    return sums, (labels[:, 1:] != IGNORE).sum(1)


def make_logps_module(model: Any, per_token: bool = False) -> Any:
    """An nn.Module whose forward returns answer_logps (or token_logps) of a batch; wrap THIS in DDP."""
    import torch

    class AnswerLogps(torch.nn.Module):
        def __init__(self, lm: Any):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids: Any, labels: Any, attention_mask: Any = None, position_ids: Any = None):
            body, head, softcap = body_and_head(self.lm)
            out = body(
                input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False
            )
            fn = token_logps if per_token else answer_logps
            return fn(out[0], labels, head, softcap=softcap)

    return AnswerLogps(model)


def log1mexp(x: Any) -> Any:
    """log(1 - exp(x)) for x < 0, stable at both ends."""
    import torch

    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def dpo_terms(pc: Any, pr: Any, rc: Any, rr: Any, beta: float) -> tuple[Any, Any, Any]:
    """Per pair: (DPO loss, chosen reward, rejected reward), rewards = beta * (policy - reference)."""
    import torch.nn.functional as F

    chosen, rejected = beta * (pc - rc), beta * (pr - rr)
    return -F.logsigmoid(chosen - rejected), chosen.detach(), rejected.detach()


def orpo_terms(pc: Any, pr: Any, nc: Any, nr: Any, lam: float) -> tuple[Any, Any, Any]:
    """Per pair: (odds-ratio loss -lambda * log sigmoid(log odds ratio), chosen reward, rejected reward) on
    the mean token log-probs; the rewards (for the log) are lambda * those means. The NLL is added by the caller."""
    import torch.nn.functional as F

    mc, mr = pc / nc.clamp(min=1), pr / nr.clamp(min=1)
    log_odds = (mc - mr) - (log1mexp(mc) - log1mexp(mr))
    return -lam * F.logsigmoid(log_odds), lam * mc.detach(), lam * mr.detach()


class PreferenceTrainer(Trainer):
    """medkit.train.loop's Trainer (schedules, eval, early stopping, checkpoints, resume, MFU) on pairs."""

    def __init__(self, **kwargs: Any):
        r = kwargs["recipe"]
        if r.train.method not in METHODS:
            raise TrainError(f"{r.train.method!r} is not a preference method", where="train.method")
        if r.data.packing:
            raise TrainError(
                f"packing does not apply to {r.train.method} (pairs are batched whole)", where="data.packing"
            )
        super().__init__(**kwargs)
        self.method = r.train.method
        self.reference: dict[str, dict[int, list[float]]] = {}
        self.ref_path = self.ckpt_root.parent / REFERENCE / f"rank{self.rank}.json"
        self._window = [0.0] * 5  # pairs, margin, correct, chosen logps, rejected logps

    # ---- hooks of the SFT trainer -------------------------------------------------------------------
    def example_lengths(self, examples: list[Any]) -> list[int]:
        return [p.length for p in examples]

    def loss_module(self, model: Any) -> Any:
        return make_logps_module(model)

    def log_extras(self) -> dict[str, float]:
        n, margin, correct, lc, lr = self._window
        self._window = [0.0] * 5
        if not n:
            return {}
        return {
            "reward_margin": round(margin / n, 6), "reward_accuracy": round(correct / n, 4),
            "logps_chosen": round(lc / n, 4), "logps_rejected": round(lr / n, 4),
        }  # fmt: skip

    # ---- tensors ------------------------------------------------------------------------------------
    def _pair_tensors(self, batch: batching.Batch, pairs: list[Any]) -> dict[str, Any]:
        """One padded batch: the chosen sequences of the batch's pairs, then their rejected ones."""
        idx = batch.indices()
        flat = [pairs[i].chosen for i in idx] + [pairs[i].rejected for i in idx]
        rows = batching.Batch(tuple((k,) for k in range(len(flat))))
        return self._tensors(rows, flat)

    def _terms(self, batch: batching.Batch, pairs: list[Any], ref: dict[int, list[float]], module: Any):
        """(per-pair preference loss, chosen answers' NLL sum, their tokens, chosen/rejected rewards, logps)."""
        torch = self._torch
        sums, counts = module(**self._pair_tensors(batch, pairs))
        k = len(batch.indices())
        pc, pr, nc, nr = sums[:k], sums[k:], counts[:k], counts[k:]
        if self.method == "dpo":
            r = torch.tensor([ref[i] for i in batch.indices()], dtype=torch.float32, device=sums.device)
            loss, cr, rr = dpo_terms(pc, pr, r[:, 0], r[:, 1], self.t.beta)
            if not self.t.sft_weight:
                return loss, None, None, cr, rr, pc, pr
            return loss, -pc.sum() * self.t.sft_weight, nc.sum(), cr, rr, pc, pr
        loss, cr, rr = orpo_terms(pc, pr, nc, nr, self.t.orpo_lambda)
        return loss, -pc.sum(), nc.sum(), cr, rr, pc, pr

    # ---- reference log-probs -----------------------------------------------------------------------
    def _needed(self, split: str) -> list[int]:
        """The pairs of `split` this process will score: its micro-batches of every step of the run (train),
        its share of the eval batches (val)."""
        if split == "val":
            lengths = [p.length for p in self.data.val]
            shard = batching.eval_batches(lengths, max(1, self.t.batch_size))[self.rank :: self.world]
            return sorted({i for b in shard for i in b.indices()})
        wanted, epoch = self.total_steps * self.t.grad_accum, 0
        seen: set[int] = set()
        while wanted > 0:
            batches = self.epoch_batches(epoch)[:wanted]
            seen.update(i for b in batches for i in b.indices())
            wanted, epoch = wanted - len(batches), epoch + 1
            if len(seen) == len(self.data.train):
                break
        return sorted(seen)

    def _references(self, split: str) -> dict[int, list[float]]:
        """{pair index: [chosen, rejected] log-probs} under the policy as it starts (DPO), for the pairs of
        `split` this process will score; computed once, kept in the run directory for --resume."""
        if self.method != "dpo":
            return {}
        if split in self.reference:
            return self.reference[split]
        if self.state.step > 0:  # resumed: the model has moved on, only the file has the reference
            try:
                saved = json.loads(self.ref_path.read_text())
                self.reference = {
                    s: {int(i): v for i, v in saved.get(s, {}).items()} for s in ("train", "val")
                }
            except (OSError, ValueError, KeyError, AttributeError):
                raise TrainError(
                    f"{self.ref_path} (the reference log-probs of this run) is missing or unreadable",
                    hint="--force without --resume to start over",
                ) from None
            if set(self.reference["train"]) != set(self._needed("train")):
                raise TrainError(
                    f"{self.ref_path} does not match the training pairs", hint="--force to start over"
                )
            return self.reference[split]
        torch = self._torch
        pairs = self.data.split(split)
        need = self._needed(split)
        inner = self.acc.unwrap_model(self.module)
        out: dict[int, list[float]] = {}
        inner.eval()
        from medkit.train.compile import eager_stance

        with torch.no_grad(), self.acc.autocast(), eager_stance(self.compiled):
            order = sorted(need, key=lambda i: -pairs[i].length)  # similar lengths together: little padding
            step = max(1, self.t.batch_size)
            for at in range(0, len(order), step):
                b = batching.Batch(tuple((i,) for i in order[at : at + step]))
                sums, _ = inner(**self._pair_tensors(b, pairs))
                k = len(b.indices())
                for j, i in enumerate(b.indices()):
                    out[i] = [float(sums[j]), float(sums[k + j])]
        inner.train()
        self.reference[split] = out
        if split == "train":
            from medkit.formats.files import atomic_write_text

            self.ref_path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.ref_path, json.dumps(self.reference))
        return out

    # ---- one optimizer step -------------------------------------------------------------------------
    def train_step(self) -> tuple[float, int, int]:
        pairs = self.data.train
        ref = self._references("train")
        batches = self.next_step_batches()
        self.last_batches, self.last_flops = batches, self.count_flops(batches)
        chosen_tok = sum(batching.label_count(pairs[i].chosen.labels) for b in batches for i in b.indices())
        both_tok = chosen_tok + sum(
            batching.label_count(pairs[i].rejected.labels) for b in batches for i in b.indices()
        )
        n_pairs = sum(len(b.indices()) for b in batches)
        n_in = sum(self.lengths[i] for b in batches for i in b.indices())
        g_pairs, g_tok, g_both, g_in = self._sum(
            float(n_pairs), float(chosen_tok), float(both_tok), float(n_in)
        )
        loss_sum = 0.0
        for i, b in enumerate(batches):
            last = i == len(batches) - 1
            with self.acc.no_sync(self.module) if not last else _null():
                pref, nll, _, cr, rr, pc, pr = self._terms(b, pairs, ref, self.module)
                total = pref.sum() * (self.world / max(g_pairs, 1.0))
                if nll is not None:
                    total = total + nll * (self.world / max(g_tok, 1.0))
                self.acc.backward(total)
            loss_sum += float(total.detach()) / self.world
            w = self._window
            w[0] += len(cr)
            w[1] += float((cr - rr).sum())
            w[2] += float((cr > rr).sum())
            w[3] += float(pc.detach().sum())
            w[4] += float(pr.detach().sum())
        self.optimizer_step()
        (loss_all,) = self._sum(loss_sum)
        # (step loss, trained tokens of both answers, input tokens): what the SFT loop counts and logs
        return loss_all, int(g_both), int(g_in)

    def evaluate(self, examples: list[Any]) -> float | None:
        """Mean preference loss (ORPO, DPO with sft_weight: with its NLL) over the val pairs; None if none."""
        if not examples:
            return None
        torch = self._torch
        ref = self._references("val")
        inner = self.acc.unwrap_model(self.module)
        inner.eval()
        pref = nll = tok = 0.0
        lengths = [p.length for p in examples]
        batches = batching.eval_batches(lengths, max(1, self.t.batch_size))[self.rank :: self.world]
        from medkit.train.compile import eager_stance

        with torch.no_grad(), self.acc.autocast(), eager_stance(self.compiled):
            for b in batches:
                loss, n_sum, n_tok, *_ = self._terms(b, examples, ref, inner)
                pref += float(loss.sum())
                if n_sum is not None:
                    nll, tok = nll + float(n_sum), tok + float(n_tok)
        inner.train()
        pref, nll, tok = self._sum(pref, nll, tok)
        return pref / len(examples) + (nll / tok if tok else 0.0)

    def count_flops(self, batches: list[batching.Batch], of: Any = None) -> int:
        """Policy forward + backward over both sides of the pairs (the one reference pass is not counted)."""
        mf = of or self.flop_model
        if mf is None:
            return 0
        total = 0
        for b in batches:
            seqs = [e for i in b.indices() for e in (self.data.train[i].chosen, self.data.train[i].rejected)]
            head = sum(batching.label_count(e.labels) for e in seqs)
            total += mf.step(
                [len(e.input_ids) for e in seqs], head, grad_checkpointing=self.t.grad_checkpointing,
                head_recompute_tokens=head if head > CHUNK else 0,
            ).total  # fmt: skip
        return total


def _null() -> Any:
    from contextlib import nullcontext

    return nullcontext()
