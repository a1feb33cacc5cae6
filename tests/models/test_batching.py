"""Batch planning (models.batching): offline length-sorted plans and the window grown around the oldest pair."""

from __future__ import annotations

import random

import pytest
from builders import pick_batch

from models.batching import plan_batches


def test_plan_batches_covers_every_item_once_within_budget() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(1, 256) for _ in range(300)]
    batches = plan_batches(lengths, 2048, 16)
    assert sorted(i for b in batches for i in b) == list(range(300))
    for b in batches:
        assert len(b) <= 16 and (len(b) * max(lengths[i] for i in b) <= 2048 or len(b) == 1)


@pytest.mark.parametrize("max_padding", [0.0, 0.05, 0.3, 1.0])
def test_pick_batch_keeps_the_anchor_and_every_bound(max_padding: float) -> None:
    rng = random.Random(1)
    for _ in range(200):
        lengths = [rng.choice([rng.randint(1, 256), 256]) for _ in range(rng.randint(1, 80))]
        anchor = rng.randrange(len(lengths))
        batch = pick_batch(lengths, anchor, 2048, 16, max_padding)
        assert anchor in batch and len(set(batch)) == len(batch)
        chosen = [lengths[i] for i in batch]
        if len(batch) > 1:
            assert len(batch) <= 16 and len(batch) * max(chosen) <= 2048
            assert 1 - sum(chosen) / (len(chosen) * max(chosen)) <= max_padding + 1e-12  # padding share
        # Nothing left out could have joined for free: no unchosen item has the anchor batch's exact longest
        # length while room remains (equal lengths add no padding).
        room = len(batch) < 16 and (len(batch) + 1) * max(chosen) <= 2048
        if room:
            assert not [i for i, n in enumerate(lengths) if i not in batch and n == max(chosen)]


def test_pick_batch_prefers_equal_lengths_over_a_fixed_size_group() -> None:
    lengths = [10, 150, 256, 256, 256, 30, 256]
    assert sorted(pick_batch(lengths, 2, 2048, 16, 0.05)) == [2, 3, 4, 6]
    assert pick_batch(lengths, 0, 2048, 16, 0.05) == [0]  # nothing within 5% padding of a 10-token pair
    assert sorted(pick_batch(lengths, 0, 2048, 16, 1.0)) == list(range(7))
