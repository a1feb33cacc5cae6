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


def grow_window(
    keys: Sequence[tuple[int, int]], pos: int, max_batch_tokens: int, max_batch_size: int, max_padding: float
) -> tuple[int, int]:
    """The batch around `keys[pos]` in `keys`, (length, id) pairs sorted ascending: (lo, hi), inclusive.

    Grows a window from `pos`, adding whichever neighbour (next shorter or next longer) pads less, while the
    batch stays within the padded-token budget, the size limit and `max_padding` (the share of computed tokens
    that would be padding). On CPU, where a pair costs about the same alone as in a batch, padding is pure
    waste, so the default bound is tight; on GPU, batch size matters more and the bound can be looser.
    Touches only the window and its two neighbours: O(batch size), whatever the queue's length.
    """
    lo = hi = pos
    total = keys[pos][0]

    def fits(count: int, longest: int, real: int) -> bool:
        padded = count * longest
        return count <= max_batch_size and padded <= max_batch_tokens and 1 - real / padded <= max_padding

    while True:
        best = None
        for new_lo, new_hi, added in ((lo - 1, hi, lo - 1), (lo, hi + 1, hi + 1)):
            if added < 0 or added >= len(keys):
                continue
            count, longest, new_total = new_hi - new_lo + 1, keys[new_hi][0], total + keys[added][0]
            if fits(count, longest, new_total):
                waste = count * longest - new_total
                if best is None or waste < best[0]:
                    best = (waste, new_lo, new_hi, new_total)
        if best is None:
            return lo, hi
        _, lo, hi, total = best
