"""TRL as the oracle: on the same model, batch and settings, medkit's DPO and ORPO losses equal TRL's."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.train.test_preference import pair_rows

trl = pytest.importorskip("trl")


def _setup(tiny_model_dir, tmp_path, method: str, **data_keys):
    from medkit.data import batching
    from medkit.data.pairs import prepare_pairs
    from medkit.models import load_tokenizer
    from medkit.recipe import recipe_from_dict
    from medkit.train import plan as lora

    src = tmp_path / "pairs.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in pair_rows(12)))
    raw = {
        "name": "oracle", "model": {"base": str(tiny_model_dir("llama"))},
        "data": {"source": str(src), "max_seq_len": 96, "split_ratios": [1.0, 0.0, 0.0], **data_keys},
        "lora": {"r": 4, "alpha": 8}, "train": {"method": method, "grad_checkpointing": False},
    }  # fmt: skip
    r = recipe_from_dict(raw, source="oracle.toml")
    tok = load_tokenizer(r.model.base)
    pairs = prepare_pairs(r, tok).train[:4]
    model = lora.build_model(r, lora.plan_precision(r))
    torch.manual_seed(0)
    for name, p in model.named_parameters():  # an adapter that is not the base: the policy's start
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    flat = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    rows = batching.Batch(tuple((k,) for k in range(len(flat))))
    return r, tok, model, pairs, batching.collate(rows, flat, tok.pad_token_id or 0)


def _move(model) -> None:
    """Step the trained adapter away from where it started (the reference)."""
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if "lora_B" in name and ".default" in name:
            p.data.add_(torch.randn_like(p) * 0.05)


def test_dpo_loss_equals_trl(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from medkit.train.preference import dpo_terms, make_logps_module

    r, tok, model, pairs, batch = _setup(tiny_model_dir, tmp_path, "dpo")
    module = make_logps_module(model)
    with torch.no_grad():  # medkit's reference: the policy as it starts
        ref, _ = module(**batch)
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.25,
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=4,
    )
    stub = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}] * 4)
    oracle = DPOTrainer(model=model, args=args, train_dataset=stub, processing_class=tok)
    assert "ref" in model.peft_config  # TRL's reference: a frozen copy of the adapter as it started
    _move(model)
    with torch.no_grad():
        sums, _ = module(**batch)
    k = len(pairs)
    loss, cr, rr = dpo_terms(sums[:k], sums[k:], ref[:k], ref[k:], 0.25)
    inputs = {
        "input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
        "completion_mask": (batch["labels"] != -100).long(),
    }  # fmt: skip
    with torch.no_grad():
        want = oracle._compute_loss(oracle.model, inputs, False)
    print(
        f"TRL cross-check: DPO loss medkit {float(loss.mean()):.8f} TRL {float(want):.8f}"
    )  # -s: the README's figures
    assert abs(float(loss.mean()) - float(want)) < 1e-5
    assert abs(float(loss.mean()) - math.log(2)) > 1e-3  # not the trivial start: the policy moved
    logged = {k: v[-1] for k, v in oracle._metrics["train"].items()}
    assert float((cr - rr).mean()) == pytest.approx(logged["rewards/margins"], abs=1e-5)
    assert float((cr > rr).float().mean()) == pytest.approx(logged["rewards/accuracies"], abs=1e-6)
    assert float(sums[:k].mean()) == pytest.approx(logged["logps/chosen"], abs=1e-4)


def test_dpo_with_sft_weight_equals_trl_sigmoid_plus_sft(tiny_model_dir, tmp_path):
    """medkit's train.sft_weight is TRL's loss_type ['sigmoid', 'sft'] with loss_weights [1, w]."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from medkit.train.preference import dpo_terms, make_logps_module

    r, tok, model, pairs, batch = _setup(tiny_model_dir, tmp_path, "dpo")
    module = make_logps_module(model)
    with torch.no_grad():
        ref, _ = module(**batch)
    args = DPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.25,
        loss_type=["sigmoid", "sft"],
        loss_weights=[1.0, 0.7],
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=4,
    )
    stub = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}] * 4)
    oracle = DPOTrainer(model=model, args=args, train_dataset=stub, processing_class=tok)
    _move(model)
    with torch.no_grad():
        sums, counts = module(**batch)
    k = len(pairs)
    terms, _, _ = dpo_terms(sums[:k], sums[k:], ref[:k], ref[k:], 0.25)
    loss = terms.mean() + 0.7 * (-sums[:k].sum() / counts[:k].sum())  # as PreferenceTrainer normalizes it
    inputs = {
        "input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
        "completion_mask": (batch["labels"] != -100).long(),
    }  # fmt: skip
    with torch.no_grad():
        want = oracle._compute_loss(oracle.model, inputs, False)
    print(f"TRL cross-check: DPO+SFT (w 0.7) loss medkit {float(loss):.8f} TRL {float(want):.8f}")
    assert abs(float(loss) - float(want)) < 1e-5
    assert float(loss) - float(terms.mean()) > 0.1  # the NLL term is there and not negligible


def test_orpo_loss_equals_trl(tiny_model_dir, tmp_path):
    orpo = pytest.importorskip("trl.experimental.orpo")
    from datasets import Dataset

    from medkit.train.preference import make_logps_module, orpo_terms

    # TRL's ORPO takes its NLL over the whole chosen sequence: compare with the prompt trained too
    r, tok, model, pairs, batch = _setup(tiny_model_dir, tmp_path, "orpo", train_on_prompt=True)
    _move(model)
    module = make_logps_module(model)
    with torch.no_grad():
        sums, counts = module(**batch)
    k = len(pairs)
    terms, _, _ = orpo_terms(sums[:k], sums[k:], counts[:k], counts[k:], 0.3)
    loss = -sums[:k].sum() / counts[:k].sum() + terms.mean()
    args = orpo.ORPOConfig(
        output_dir=str(tmp_path / "trl"),
        beta=0.3,
        report_to="none",
        use_cpu=True,
        per_device_train_batch_size=4,
    )
    stub = Dataset.from_list([{"prompt": "a", "chosen": "b", "rejected": "c"}] * 4)
    oracle = orpo.ORPOTrainer(model=model, args=args, train_dataset=stub, processing_class=tok)
    width = batch["input_ids"].shape[1]
    sides = {"chosen": slice(0, k), "rejected": slice(k, 2 * k)}
    inputs = {}
    for side, rows in sides.items():
        inputs[f"{side}_input_ids"] = batch["input_ids"][rows]
        inputs[f"{side}_attention_mask"] = batch["attention_mask"][rows]
        inputs[f"{side}_labels"] = batch["labels"][rows]
    assert all(v.shape[1] == width for v in inputs.values())
    with torch.no_grad():
        want, _ = oracle.get_batch_loss_metrics(oracle.model, inputs)
    print(f"TRL cross-check: ORPO loss medkit {float(loss):.8f} TRL {float(want):.8f}")
    assert abs(float(loss) - float(want)) < 1e-5
