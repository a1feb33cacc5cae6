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


def pick_batch(
    lengths: Sequence[int], anchor: int, max_batch_tokens: int, max_batch_size: int, max_padding: float
) -> list[int]:
    """The batch to run next: the `anchor` item (the oldest waiting) and the neighbours in length that fit.

    Grows a window over the items sorted by length, starting at the anchor and adding whichever neighbour
    (next shorter or next longer) pads less, while the batch stays within the padded-token budget, the size
    limit and `max_padding` (the share of computed tokens that would be padding). On CPU, where a pair costs
    about the same alone as in a batch, padding is pure waste, so the default bound is tight; on GPU, batch
    size matters more and the bound can be looser. Returns indices into `lengths`, anchor included.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    pos = order.index(anchor)
    lo = hi = pos
    total = lengths[anchor]

    def fits(count: int, longest: int, real: int) -> bool:
        padded = count * longest
        return count <= max_batch_size and padded <= max_batch_tokens and 1 - real / padded <= max_padding

    while True:
        options = []
        if lo > 0:
            shorter = lengths[order[lo - 1]]
            options.append((lo - 1, hi, total + shorter))
        if hi < len(order) - 1:
            longer = lengths[order[hi + 1]]
            options.append((lo, hi + 1, total + longer))
        best = None
        for new_lo, new_hi, new_total in options:
            count, longest = new_hi - new_lo + 1, lengths[order[new_hi]]
            if fits(count, longest, new_total):
                waste = count * longest - new_total
                if best is None or waste < best[0]:
                    best = (waste, new_lo, new_hi, new_total)
        if best is None:
            return [order[i] for i in range(lo, hi + 1)]
        _, lo, hi, total = best
