"""Torch-side padding: models.inputs.pad as tensors, the very arrays the ONNX graphs are fed (training batches, the
graph trace and the parity checks all pad through it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from models.formatting import Encoded
from models.inputs import pad


def pad_batch(seqs: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """models.inputs.pad as torch tensors."""
    return {name: torch.from_numpy(array) for name, array in pad(seqs, pad_id).items()}
