"""GRPO (Shao et al. 2024, DeepSeekMath): rewards on sampled answers instead of written ones.

Each step takes `batch_size` prompts of the SFT rows (x grad_accum), samples `group_size` completions of
each with the policy (HF generate, KV cache on, `sample_temperature`, at most `max_new_tokens`, stopped
at the end-of-turn token), scores them with the recipe's rewards (medkit.train.rewards) and normalizes
each completion's weighted reward within its group: A = (r - mean) / (std + 1e-4). The loss is PPO's
clipped objective on the completion tokens,

    per token  -min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A) + kl_coef * ratio * KL
    ratio = exp(logp - logp_sampled)   KL = exp(ref - logp) - (ref - logp) - 1  (k3, non-negative)

(the KL estimate weighted by the ratio, so that its gradient is the reverse KL's also off-policy, as in
DeepSeek-V3.2 and TRL's default; on-policy its value is the plain k3)

summed over the completion tokens of the whole step and divided by their number. With one update per
sampled batch (as here) the ratio is 1 in value and the clip never acts; its gradient is the policy
gradient. The reference (only when kl_coef > 0) is the starting adapter (`train.init_from`, held as a
second, frozen PEFT adapter) or the base (the adapter disabled): no second copy of the model.
GRPO runs on one process; the val "loss" is minus the mean weighted reward of greedy answers.

A group whose rewards are all equal (every sample right, or every one wrong) has zero advantage: it only
adds tokens to the step. With `resample_flat = n` such a group is replaced by another train prompt's (drawn
from the seed and the step, so a resumed run draws the same), up to n times a slot (DAPO's dynamic
sampling, Yu et al. 2025); the share of flat groups sampled is logged as `flat_groups`.
"""

from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Any

from medkit.data import batching
from medkit.data.tokens import IGNORE, Example
from medkit.errors import TrainError
from medkit.train import rewards as rw
from medkit.train.loop import Trainer

REFERENCE_ADAPTER = "reference"


def group_advantages(rewards: Any, group_size: int) -> Any:
    """(r - group mean) / (group std + 1e-4) for rewards laid out group after group."""
    g = rewards.view(-1, group_size)
    return ((g - g.mean(1, keepdim=True)) / (g.std(1, keepdim=True) + 1e-4)).view(-1)


def grpo_token_loss(
    logps: Any, old: Any, ref: Any | None, adv: Any, eps: float, kl_coef: float
) -> tuple[Any, Any, Any]:
    """Per completion token (flat, [N]) with each token's advantage `adv` [N]: (loss, KL, clipped?)."""
    import torch

    ratio = torch.exp(logps - old)
    clipped = torch.clamp(ratio, 1 - eps, 1 + eps)
    loss = -torch.min(ratio * adv, clipped * adv)
    is_clipped = (ratio * adv) > (clipped * adv)
    kl = torch.zeros_like(logps)
    if ref is not None:
        kl = torch.exp(ref - logps) - (ref - logps) - 1
        loss = loss + kl_coef * ratio * kl  # ratio-weighted: the unbiased reverse-KL gradient off-policy
    return loss, kl.detach(), is_clipped


class GRPOTrainer(Trainer):
    def __init__(self, *, tokenizer: Any, eot_id: int, init: Any = None, **kwargs: Any):
        r = kwargs["recipe"]
        if kwargs["accelerator"].num_processes > 1:
            raise TrainError("GRPO runs on one process (sampling is not sharded)", where="train.method")
        self.rewards = rw.resolve(dict(r.train.rewards), trust=r.train.trust_reward_code)
        self.tok, self.eot_id = tokenizer, eot_id
        self.has_reference = r.train.kl_coef > 0
        if (
            self.has_reference and init is not None
        ):  # before the optimizer and the fuse decision see the model
            kwargs["model"].load_adapter(str(init), adapter_name=REFERENCE_ADAPTER, is_trainable=False)
            kwargs["model"].set_adapter("default")
        super().__init__(**kwargs)
        self.lm = self.model
        self._window: dict[str, float] = {}

    # ---- hooks of the SFT trainer -------------------------------------------------------------------
    def example_lengths(self, examples: list[Any]) -> list[int]:
        return [_prompt_len(e) for e in examples]

    def loss_module(self, model: Any) -> Any:
        from medkit.train.preference import make_logps_module

        return make_logps_module(model, per_token=True)

    def log_extras(self) -> dict[str, float]:
        w, self._window = self._window, {}
        n = w.pop("_n", 0.0)
        if not n:
            return {}
        tok = max(w.pop("_tokens", 0.0), 1.0)
        out = {k: round(v / n, 4) for k, v in w.items() if not k.startswith(("kl", "clip", "_"))}
        for name in ["total", *self.rewards]:  # std from the sums of squares
            mean, sq = w.get(f"reward_{name}", 0.0) / n, w.get(f"_sq_{name}", 0.0) / n
            out[f"reward_{name}_std"] = round(max(sq - mean * mean, 0.0) ** 0.5, 4)
        out["kl"] = round(w.get("kl", 0.0) / tok, 6)
        out["flat_groups"] = round(w.get("_flat", 0.0) / max(w.get("_groups", 0.0), 1.0), 4)
        out["clip_fraction"] = round(w.get("clip", 0.0) / tok, 4)
        return out

    # ---- sampling ----------------------------------------------------------------------------------
    @contextmanager
    def _reference(self):
        """The model as the reference: the frozen start adapter, or the base (adapter disabled)."""
        if REFERENCE_ADAPTER in getattr(self.lm, "peft_config", {}):
            self.lm.set_adapter(REFERENCE_ADAPTER)
            try:
                yield
            finally:
                self.lm.set_adapter("default")  # also makes the trained adapter trainable again
        else:
            with self.lm.disable_adapter():
                yield

    def sample(self, prompt: list[int], n: int, *, greedy: bool = False) -> list[list[int]]:
        """`n` completions of one prompt (token ids, cut after the end-of-turn token when it came)."""
        torch = self._torch
        t = self.t
        ids = torch.tensor([prompt] * n, device=self.device)
        self.lm.eval()
        try:
            with torch.no_grad():
                out = self.lm.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), do_sample=not greedy,
                    temperature=t.sample_temperature if not greedy else None, top_p=None, top_k=None,
                    max_new_tokens=t.max_new_tokens, eos_token_id=self.eot_id, use_cache=True,
                    pad_token_id=self.pad_id,
                )  # fmt: skip
        finally:
            self.lm.train()
        completions = []
        for row in out[:, len(prompt) :].tolist():
            cut = row.index(self.eot_id) + 1 if self.eot_id in row else len(row)
            completions.append(row[:cut])
        return completions

    def _score(self, index: int, split: str, completions: list[list[int]]) -> Any:
        """[n, 1 + rewards] tensor: the weighted total, then each reward's value."""
        torch = self._torch
        conv = self.data.rows[split][index]
        rows = []
        for c in completions:
            stopped = bool(c) and c[-1] == self.eot_id
            text = self.tok.decode(c[:-1] if stopped else c, skip_special_tokens=True)
            sample = rw.Sample(
                text, conv.answer, stopped, len(c), self.t.max_new_tokens, self.t.reward_tolerance
            )
            values = rw.score(self.rewards, sample, where=f"{split} row {conv.row}")
            total = sum(w * values[name] for name, (_, w) in self.rewards.items())
            rows.append([total, *values.values()])
        return torch.tensor(rows, dtype=torch.float32, device=self.device)

    def _sequences(self, prompts: list[list[int]], completions: list[list[int]]) -> dict[str, Any]:
        seqs = [Example(p + c, [IGNORE] * len(p) + c) for p, c in zip(prompts, completions, strict=True)]
        return self._tensors(batching.Batch(tuple((k,) for k in range(len(seqs)))), seqs)

    # ---- one optimizer step -------------------------------------------------------------------------
    def train_step(self) -> tuple[float, int, int]:
        torch, t, g = self._torch, self.t, self.t.group_size
        batches = self.next_step_batches()
        self.last_batches, self.last_flops = batches, 0
        plan = []  # per micro-batch: prompts, completions, scores
        draw = random.Random(f"{t.seed}:{self.state.step}")  # replacement prompts, the same on resume
        for b in batches:
            prompts, comps, scores = [], [], []
            for i in b.indices():
                prompt, group, score = self._group(i, draw)
                prompts += [prompt] * g
                comps += group
                scores.append(score)
            plan.append((prompts, comps, torch.cat(scores)))
        n_tok = sum(max(len(c), 1) for _, comps, _ in plan for c in comps)
        n_in = sum(len(p) + len(c) for prompts, comps, _ in plan for p, c in zip(prompts, comps, strict=True))
        loss_sum = 0.0
        for prompts, comps, scores in plan:
            comps = [c or [self.eot_id] for c in comps]  # an empty completion still gets its token
            batch = self._sequences(prompts, comps)
            adv_seq = group_advantages(scores[:, 0], g)
            logps, rows = self.module(**batch)
            ref = None
            if self.has_reference:
                with torch.no_grad(), self._reference():
                    ref, _ = self.module(**batch)
            loss, kl, clipped = grpo_token_loss(
                logps, logps.detach(), ref, adv_seq[rows], t.clip_epsilon, t.kl_coef
            )
            total = loss.sum() / n_tok
            self.acc.backward(total)
            loss_sum += float(total.detach())
            self._note(scores, comps, float(kl.sum()), float(clipped.sum()), logps.numel())
            self.last_flops += self._flops(prompts, comps)
        self.optimizer_step()
        return loss_sum, int(n_tok), int(n_in)

    def _group(self, i: int, draw: random.Random) -> tuple[list[int], list[list[int]], Any]:
        """Train prompt ``i``'s sampled group and its scores, or, where its rewards are all equal, another
        prompt's (up to ``resample_flat`` others)."""
        w, train = self._window, self.data.train
        for attempt in range(self.t.resample_flat + 1):
            if attempt:
                i = draw.randrange(len(train))
            prompt = train[i].input_ids[: _prompt_len(train[i])]
            group = self.sample(prompt, self.t.group_size)
            score = self._score(i, "train", group)
            flat = bool((score[:, 0] == score[0, 0]).all())
            w["_groups"], w["_flat"] = w.get("_groups", 0.0) + 1, w.get("_flat", 0.0) + flat
            if not flat:
                break
        return prompt, group, score

    def _note(self, scores: Any, comps: list[list[int]], kl: float, clipped: float, tokens: int) -> None:
        w = self._window
        names = ["total", *self.rewards]
        for j, name in enumerate(names):
            w[f"reward_{name}"] = w.get(f"reward_{name}", 0.0) + float(scores[:, j].sum())
            w[f"_sq_{name}"] = w.get(f"_sq_{name}", 0.0) + float((scores[:, j] ** 2).sum())
        w["completion_length"] = w.get("completion_length", 0.0) + sum(len(c) for c in comps)
        w["_n"] = w.get("_n", 0.0) + len(comps)
        w["kl"], w["clip"] = w.get("kl", 0.0) + kl, w.get("clip", 0.0) + clipped
        w["_tokens"] = w.get("_tokens", 0.0) + tokens

    def _flops(self, prompts: list[list[int]], comps: list[list[int]]) -> int:
        """Policy forward + backward over the sampled sequences (sampling itself is not counted)."""
        if self.flop_model is None:
            return 0
        lens = [len(p) + len(c) for p, c in zip(prompts, comps, strict=True)]
        return self.flop_model.step(
            lens, sum(len(c) for c in comps), grad_checkpointing=self.t.grad_checkpointing
        ).total

    def count_flops(self, batches: list[batching.Batch], of: Any = None) -> int:
        return 0  # counted from the sampled lengths in train_step (self.last_flops)

    # ---- evaluation ---------------------------------------------------------------------------------
    def evaluate(self, examples: list[Any]) -> float | None:
        """Minus the mean weighted reward of greedy answers to the val prompts (lower is better)."""
        if not examples:
            return None
        total = 0.0
        from medkit.train.compile import eager_stance

        with eager_stance(self.compiled):
            for i, e in enumerate(examples):
                (comp,) = self.sample(e.input_ids[: _prompt_len(e)], 1, greedy=True)
                total += float(self._score(i, "val", [comp])[0, 0])
        return -total / len(examples)


def _prompt_len(e: Example) -> int:
    """Tokens before the first trained label: the prompt, ending with the generation prompt."""
    return next((i for i, label in enumerate(e.labels) if label != IGNORE and i > 0), len(e.labels))
