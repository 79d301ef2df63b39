"""Selective cross-entropy equals the model's own full-vocabulary loss; packing changes nothing."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from medkit.data import batching
from medkit.train.loss import full_ce, make_loss_module, selective_ce


@dataclass
class Ex:
    input_ids: list[int]
    labels: list[int]


def examples(vocab: int, seed: int = 0) -> list[Ex]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n, prompt in [(9, 4), (14, 6), (5, 2), (11, 3), (7, 7)]:
        ids = torch.randint(3, vocab, (n,), generator=g).tolist()
        out.append(Ex(ids, [-100] * prompt + ids[prompt:]))
    return out


def lora_model(path, attn: str = "sdpa"):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn)
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False
    )
    return get_peft_model(model, cfg).eval()


@pytest.mark.parametrize(
    "arch,attn", [("llama", "sdpa"), ("llama", "eager"), ("gpt2", "sdpa"), ("qwen2", "sdpa")]
)
def test_selective_and_packed_losses_match_full_loss(tiny_model_dir, arch, attn):
    model = lora_model(tiny_model_dir(arch), attn)
    exs = examples(model.config.vocab_size)
    lm = make_loss_module(model)
    one_per_row = batching.Batch(tuple((i,) for i in range(len(exs))))
    packed = batching.Batch(((0, 1), (2, 3, 4)))
    with torch.no_grad():
        ref, n_ref = full_ce(model, batching.collate(one_per_row, exs, pad_id=0))
        sel, n_sel = lm(**batching.collate(one_per_row, exs, pad_id=0))
        pk, n_pk = lm(**batching.collate(packed, exs, pad_id=0))
    assert int(n_ref) == int(n_sel) == int(n_pk) == batching.batch_label_tokens(packed, exs)
    assert float(sel) == pytest.approx(float(ref), rel=1e-5)
    assert float(pk) == pytest.approx(float(ref), rel=1e-5)


def test_selective_gradients_match_full_and_chunking(tiny_model_dir):
    model = lora_model(tiny_model_dir("llama")).train()
    exs = examples(model.config.vocab_size, seed=1)
    batch = batching.collate(batching.Batch(tuple((i,) for i in range(len(exs)))), exs, pad_id=0)

    def grads(fn):
        model.zero_grad()
        loss, _ = fn()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    ref = grads(lambda: full_ce(model, batch))
    lm = make_loss_module(model)
    sel = grads(lambda: lm(**batch))
    from medkit.train.loss import body_and_head

    body, head, _ = body_and_head(model)

    def chunked():
        hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)[
            0
        ]
        return selective_ce(hidden, batch["labels"], head, chunk=7)  # several checkpointed chunks

    chk = grads(chunked)
    for name in ref:
        torch.testing.assert_close(sel[name], ref[name], rtol=1e-4, atol=2e-5)
        torch.testing.assert_close(chk[name], ref[name], rtol=1e-4, atol=2e-5)


def test_no_trained_token_gives_zero_loss_with_a_graph():
    hidden = torch.randn(2, 5, 8, requires_grad=True)
    head = torch.nn.Linear(8, 11)
    total, n = selective_ce(hidden, torch.full((2, 5), -100), head)
    assert float(total) == 0.0 and int(n) == 0
    total.backward()  # still differentiable: an all-masked micro-batch does not break accumulation


def test_label_nll_is_the_one_label_loss_of_eval_and_merge(tiny_model_dir, monkeypatch):
    """label_nll (eval's scores, merge's --report) equals training's reference loss whatever the batching."""
    from medkit.convert.adapter import merge_report
    from medkit.eval import score as eval_score
    from medkit.train import loss

    model = lora_model(tiny_model_dir("llama"))
    exs = examples(model.config.vocab_size)
    with torch.no_grad():
        ref, n_ref = full_ce(
            model, batching.collate(batching.Batch(((0,), (1,), (2,), (3,), (4,))), exs, pad_id=0)
        )
    for batch_size in (1, 2, 5):
        total, count = loss.label_nll(model, exs, batch_size=batch_size)
        assert count == int(n_ref) and total == pytest.approx(float(ref), rel=1e-5), batch_size
    assert merge_report.perplexity(model, exs) == pytest.approx(float(torch.exp(ref / n_ref)), rel=1e-5)
    # per example, in the examples' order (eval's intervals resample them): each as scored alone
    rows = loss.label_nll_rows(model, exs, batch_size=2)
    alone = [loss.label_nll(model, [e]) for e in exs]
    assert [c for _, c in rows] == [c for _, c in alone]
    assert [v for v, _ in rows] == pytest.approx([v for v, _ in alone], rel=1e-5)

    calls = []
    monkeypatch.setattr(loss, "label_nll", lambda *a, **k: calls.append(k) or (0.0, 0))
    with pytest.raises(merge_report.ConvertError, match="no answer tokens"):
        merge_report.perplexity(model, exs)
    assert calls and not hasattr(eval_score, "_hf_nll")


def test_head_and_loss_in_one_function_equal_autograd():
    """A frozen float32 head: loss and input gradient computed together (HeadCE) equal F.cross_entropy's, in
    chunks or not, also for a token whose probability underflows float32 (a finite loss, not inf)."""
    from medkit.train import loss as loss_mod

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False).requires_grad_(False)
    hidden = torch.randn(2, 9, 16)
    hidden[0, 2] *= 60.0  # logits of several hundred: the label's probability is below float32's range
    labels = torch.randint(0, 50, (2, 9))
    labels[:, :3] = -100
    labels[0, 3] = int(head(hidden[0, 2]).argmin())
    assert loss_mod._plain_head(head, hidden)

    def run(fn):
        h = hidden.clone().requires_grad_(True)
        total, n = fn(h)
        total.backward()
        return total.detach(), h.grad, int(n)

    def reference(h):
        logits = head(h[:, :-1]).reshape(-1, 50)
        return torch.nn.functional.cross_entropy(logits, labels[:, 1:].reshape(-1), reduction="sum"), 0

    ref, g_ref, _ = run(reference)
    assert torch.isfinite(ref) and ref > 100
    for chunk in (2048, 5):
        total, g, n = run(lambda h, c=chunk: selective_ce(h, labels, head, chunk=c))
        assert n == int((labels[:, 1:] != -100).sum())
        torch.testing.assert_close(total, ref, rtol=1e-5, atol=1e-4)
        torch.testing.assert_close(g, g_ref, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert float(selective_ce(hidden, labels, head)[0]) == pytest.approx(float(ref), rel=1e-5)
    # a head with a bias, a trained weight or a soft-cap takes autograd's path (checkpointed chunks)
    assert not loss_mod._plain_head(torch.nn.Linear(16, 50), hidden)
    assert not loss_mod._plain_head(torch.nn.Linear(16, 50, bias=False), hidden)
    capped, _ = selective_ce(hidden, labels, head, softcap=1e9)
    assert float(capped) == pytest.approx(float(ref), rel=1e-4)


def test_flop_count_asks_whether_the_head_is_recomputed(tiny_model_dir):
    """HeadCE recomputes nothing; the checkpointed chunks of autograd's path run the head again."""
    from medkit.train.loss import CHUNK, head_recomputed

    model = lora_model(tiny_model_dir("llama"))
    many = 2 * CHUNK + 3
    assert head_recomputed(model, many, autocast=False) == 0  # a frozen float32 head: HeadCE
    assert head_recomputed(model, many, autocast=True) == many  # under autocast: checkpointed chunks
    assert head_recomputed(model, CHUNK, autocast=True) == 0  # one chunk: not checkpointed
    model.get_output_embeddings().weight.requires_grad_(True)  # a trained head takes autograd's path
    assert head_recomputed(model, many, autocast=False) == many
