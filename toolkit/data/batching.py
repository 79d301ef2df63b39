"""Examples -> micro-batches that spend no compute on padding, in a seeded, resumable order.

Two ways, both deterministic functions of (seed, epoch) so a resumed run sees the same order:

- length grouping (default): a seeded shuffle cut into mega-chunks, each sorted by length and split into
  batches, the batches shuffled again; the longest batch goes first so an out-of-memory shows at once.
- packing (`data.packing`): examples laid end to end into rows of at most `max_len` tokens, position ids
  restarting at 0 for each example and no attention mask, which transformers reads as block-diagonal
  attention (sdpa/eager mask, flash-attention varlen); the first label of each example is masked so no
  example learns to predict the next one's first token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

IGNORE = -100
MEGA = 32  # batches per sorted mega-chunk: wide enough to group lengths, narrow enough to stay random


@dataclass(frozen=True)
class Batch:
    """Indices of the examples in one micro-batch, laid out as rows (several per row when packed)."""

    rows: tuple[tuple[int, ...], ...]

    def indices(self) -> list[int]:
        return [i for row in self.rows for i in row]


def label_count(labels: Sequence[int]) -> int:
    """Tokens a causal LM is trained on in one example: labels after the first that are not masked."""
    return sum(1 for x in labels[1:] if x != IGNORE)


def _perm(n: int, seed: int, epoch: int, salt: int = 0) -> list[int]:
    import torch

    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch) * 7919 + salt)
    return torch.randperm(n, generator=g).tolist()


def length_grouped(lengths: Sequence[int], batch_size: int, seed: int, epoch: int) -> list[Batch]:
    """Batches of similar-length examples in a seeded random order, the longest batch first."""
    if not lengths:
        return []
    order = _perm(len(lengths), seed, epoch)
    span = batch_size * MEGA
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start : start + span], key=lambda i: -lengths[i])
        batches += [chunk[j : j + batch_size] for j in range(0, len(chunk), batch_size)]
    shuffled = [batches[i] for i in _perm(len(batches), seed, epoch, salt=1)]
    longest = max(range(len(shuffled)), key=lambda b: (lengths[shuffled[b][0]], -b))
    shuffled.insert(0, shuffled.pop(longest))
    return [Batch(tuple((i,) for i in b)) for b in shuffled]


def packed(lengths: Sequence[int], batch_size: int, max_len: int, seed: int, epoch: int) -> list[Batch]:
    """Examples packed first-fit-decreasing into rows of at most `max_len` tokens, `batch_size` rows a batch."""
    if not lengths:
        return []
    order = _perm(len(lengths), seed, epoch)
    rows: list[list[int]] = []
    room: list[int] = []
    span = batch_size * MEGA * 4  # bounded look-back keeps packing O(n * span) and the order random
    for start in range(0, len(order), span):
        first = len(rows)
        for i in sorted(order[start : start + span], key=lambda i: -lengths[i]):
            n = min(lengths[i], max_len)
            slot = next((r for r in range(first, len(rows)) if room[r] >= n), None)
            if slot is None:
                rows.append([i])
                room.append(max_len - n)
            else:
                rows[slot].append(i)
                room[slot] -= n
    rows = [rows[i] for i in _perm(len(rows), seed, epoch, salt=2)]
    return [Batch(tuple(tuple(r) for r in rows[j : j + batch_size])) for j in range(0, len(rows), batch_size)]


def eval_batches(lengths: Sequence[int], batch_size: int) -> list[Batch]:
    """Evaluation order: sorted by length (least padding), no shuffling."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [Batch(tuple((i,) for i in order[j : j + batch_size])) for j in range(0, len(order), batch_size)]


def collate(
    batch: Batch, examples: Sequence[Any], pad_id: int, *, pad_to_multiple: int = 1
) -> dict[str, Any]:
    """Tensors for one batch: input_ids, labels and either attention_mask (one example a row) or
    position_ids restarting per example (packed rows; attention_mask is None then)."""
    import torch

    is_packed = any(len(r) > 1 for r in batch.rows)
    seqs: list[tuple[list[int], list[int], list[int]]] = []
    for row in batch.rows:
        ids: list[int] = []
        labels: list[int] = []
        pos: list[int] = []
        for i in row:
            ex = examples[i]
            ids += ex.input_ids
            lab = list(ex.labels)
            if is_packed and lab:
                lab[0] = IGNORE  # the previous example's last token must not learn to predict this one
            labels += lab
            pos += range(len(ex.input_ids))
        seqs.append((ids, labels, pos))
    width = max(len(s[0]) for s in seqs)
    if pad_to_multiple > 1:
        width = -(-width // pad_to_multiple) * pad_to_multiple
    n = len(seqs)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels_t = torch.full((n, width), IGNORE, dtype=torch.long)
    out: dict[str, Any] = {"input_ids": input_ids, "labels": labels_t}
    if is_packed:
        position_ids = torch.zeros((n, width), dtype=torch.long)
        for r, (ids, lab, pos) in enumerate(seqs):
            k = len(ids)
            input_ids[r, :k] = torch.tensor(ids)
            labels_t[r, :k] = torch.tensor(lab)
            position_ids[r, :k] = torch.tensor(pos)
            position_ids[r, k:] = torch.arange(width - k)  # padding is a segment of its own
        out["position_ids"] = position_ids
        out["attention_mask"] = None
    else:
        attention_mask = torch.zeros((n, width), dtype=torch.long)
        for r, (ids, lab, _) in enumerate(seqs):
            k = len(ids)
            input_ids[r, :k] = torch.tensor(ids)
            labels_t[r, :k] = torch.tensor(lab)
            attention_mask[r, :k] = 1
        out["attention_mask"] = attention_mask
        out["position_ids"] = None
    return out


def batch_label_tokens(batch: Batch, examples: Sequence[Any]) -> int:
    """Trained tokens in a batch, the same count the loss divides by (packing masks each first label)."""
    return sum(label_count(examples[i].labels) for i in batch.indices())


def padding_share(batches: Sequence[Batch], lengths: Sequence[int]) -> float:
    """Share of the token slots in these batches that are padding."""
    slots = real = 0
    for b in batches:
        widths = [sum(lengths[i] for i in row) for row in b.rows]
        slots += max(widths) * len(widths)
        real += sum(widths)
    return 1.0 - real / slots if slots else 0.0
