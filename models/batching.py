"""Length-grouped batch planning under a padded-token budget: pure functions shared by offline and online scoring."""

from __future__ import annotations

from collections.abc import Sequence


def plan_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Split item indices into batches of similar length.

    Items are sorted by length so padding stays small; a batch grows while ``size * longest`` (the padded
    tokens the runtime actually computes) stays within ``max_batch_tokens`` and ``size <= max_batch_size``.
    An item longer than the budget still gets a batch of its own. Every index appears exactly once.
    """
    if max_batch_tokens < 1 or max_batch_size < 1:
        raise ValueError("max_batch_tokens and max_batch_size must be positive")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        # Sorted ascending, so the newcomer is the longest: padded size is (count + 1) * its length.
        if current and ((len(current) + 1) * lengths[i] > max_batch_tokens or len(current) >= max_batch_size):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def padding_fraction(lengths: Sequence[int]) -> float:
    """Fraction of a right-padded batch's tokens that are padding."""
    if not lengths:
        return 0.0
    padded = len(lengths) * max(lengths)
    return 1.0 - sum(lengths) / padded
