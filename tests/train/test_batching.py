"""Length-grouped and packed batches: complete, deterministic per (seed, epoch), little padding."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from medkit.data import batching


@dataclass
class Ex:
    input_ids: list[int]
    labels: list[int]


def lengths(n: int = 200, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(8, 120) for _ in range(n)]


def test_length_grouped_covers_each_example_once_and_is_seeded():
    lens = lengths()
    a = batching.length_grouped(lens, 8, seed=1, epoch=0)
    assert sorted(i for b in a for i in b.indices()) == list(range(len(lens)))
    assert a == batching.length_grouped(lens, 8, seed=1, epoch=0)
    assert a != batching.length_grouped(lens, 8, seed=1, epoch=1)
    assert a != batching.length_grouped(lens, 8, seed=2, epoch=0)
    assert max(lens[i] for i in a[0].indices()) == max(lens)  # the longest batch first: OOM shows at once


def test_length_grouping_wastes_far_less_than_random_batches():
    lens = lengths(400)
    grouped = batching.length_grouped(lens, 8, seed=0, epoch=0)
    order = list(range(len(lens)))
    random.Random(0).shuffle(order)
    plain = [batching.Batch(tuple((i,) for i in order[j : j + 8])) for j in range(0, len(order), 8)]
    assert batching.padding_share(plain, lens) > 0.3
    assert batching.padding_share(grouped, lens) < 0.1


def test_packing_fills_rows_within_max_len():
    lens = lengths(300)
    packs = batching.packed(lens, 4, max_len=256, seed=3, epoch=0)
    assert sorted(i for b in packs for i in b.indices()) == list(range(len(lens)))
    rows = [row for b in packs for row in b.rows]
    assert all(sum(lens[i] for i in row) <= 256 for row in rows)
    assert len(rows) < len(lens) / 2  # several examples per row
    assert packs == batching.packed(lens, 4, max_len=256, seed=3, epoch=0)


def test_collate_packed_resets_positions_and_masks_first_labels():
    exs = [Ex([5, 6, 7], [-100, 6, 7]), Ex([8, 9], [8, 9]), Ex([3, 4, 5, 6], [3, 4, 5, 6])]
    out = batching.collate(batching.Batch(((0, 1), (2,))), exs, pad_id=0)
    assert out["attention_mask"] is None
    assert out["input_ids"].tolist() == [[5, 6, 7, 8, 9], [3, 4, 5, 6, 0]]
    assert out["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 2, 3, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7, -100, 9], [-100, 4, 5, 6, -100]]
    # the loss counts the same trained tokens packed or not
    n_packed = int((out["labels"][:, 1:] != -100).sum())
    unpacked = batching.collate(batching.Batch(((0,), (1,), (2,))), exs, pad_id=0)
    assert n_packed == int((unpacked["labels"][:, 1:] != -100).sum())
    assert n_packed == batching.batch_label_tokens(batching.Batch(((0, 1), (2,))), exs)


def test_collate_unpacked_pads_right_with_a_mask():
    exs = [Ex([5, 6, 7], [-100, 6, 7]), Ex([8], [8])]
    out = batching.collate(batching.Batch(((0,), (1,))), exs, pad_id=2)
    assert out["input_ids"].tolist() == [[5, 6, 7], [8, 2, 2]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert out["position_ids"] is None


@pytest.mark.parametrize("n", [0, 1, 7])
def test_small_inputs(n):
    lens = [10] * n
    assert len(batching.length_grouped(lens, 4, 0, 0)) == -(-n // 4)
    assert sum(len(b.indices()) for b in batching.packed(lens, 4, 64, 0, 0)) == n
