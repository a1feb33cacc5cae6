"""How an over-long (prompt, completion) pair is cut to its token budget: the `truncation` policy a bundle records.

Both policies share one rule for *how much* of each side survives: the completion (where the quality is) keeps all
its tokens unless it alone would leave the prompt less than a quarter of the budget, and then it loses tokens from
its right. They differ in *which* prompt tokens survive:

- ``left``: the prompt's last tokens (its tail: the latest turns of a dialogue). Every bundle before schema 3.
- ``head-tail``: the prompt's first half-budget (instruction and question, which sit at the top of a long
  retrieval-augmented prompt) and its last, joined by the bundle's marker text (``[…]``) so the model sees that
  something was cut. The marker's tokens count against the budget; a prompt budget too small to hold the marker
  and a token on each side of it falls back to ``left``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, get_args

Truncation = Literal["left", "head-tail"]
TRUNCATIONS: tuple[str, ...] = get_args(Truncation)
DEFAULT_MARKER = "[…]"


def cut_pair(
    prompt: Sequence[int], completion: Sequence[int], budget: int, policy: str, marker: Sequence[int] = ()
) -> tuple[list[int], list[int], bool]:
    """(prompt ids, completion ids, truncated) with len(prompt) + len(completion) <= budget (marker included)."""
    p, c = list(prompt), list(completion)
    if len(p) + len(c) <= budget:
        return p, c, False
    keep_c = min(len(c), budget - min(len(p), budget // 4))
    keep_p = budget - keep_c
    c = c[:keep_c]
    if len(p) <= keep_p:  # only the completion was too long
        return p, c, True
    room = keep_p - len(marker)
    if policy == "head-tail" and room >= 2:
        head = (room + 1) // 2
        tail = room - head
        return p[:head] + list(marker) + p[len(p) - tail :], c, True
    return (p[len(p) - keep_p :] if keep_p else []), c, True
