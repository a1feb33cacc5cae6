"""Model inputs from encoded texts: the one right-padding rule that the torch model, every ONNX graph and every
benchmark peer are fed with.

Right padding with the bundle's pad id, a 0/1 attention mask and segment ids (0 where a text has none): the
reward is read through the mask (or, for imported decoders, at the rightmost non-pad token), so a text scores
the same alone and in a padded batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .formatting import Encoded

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


def pad(batch: Sequence[Encoded], pad_id: int, names: Sequence[str] = INPUT_NAMES) -> dict[str, np.ndarray]:
    """`names` of the right-padded int64 arrays, each (len(batch), longest text)."""
    width = max(len(e) for e in batch)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    types = np.zeros((len(batch), width), dtype=np.int64)
    for row, e in enumerate(batch):
        n = len(e.ids)
        ids[row, :n] = e.ids
        mask[row, :n] = 1
        if e.type_ids is not None:
            types[row, :n] = e.type_ids
    arrays = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
    return {name: arrays[name] for name in names}
