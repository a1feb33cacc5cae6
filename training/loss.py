"""The Bradley–Terry reward loss (with TRL's optional margin and reward-centering term): a pure function."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen: torch.Tensor,
    rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_rewards_coefficient: float | None = None,
) -> torch.Tensor:
    """Mean of ``-log σ(r_chosen − r_rejected − margin)`` plus ``coef · mean((r_chosen + r_rejected)²)``.

    The centering term (Eisenstein et al. 2023, as in TRL's RewardConfig) pulls rewards towards zero mean so
    they are comparable across prompts; it does not change which answer wins.
    """
    diff = chosen - rejected
    if margin is not None:
        diff = diff - margin
    loss = -F.logsigmoid(diff).mean()
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * torch.mean((chosen + rejected) ** 2)
    return loss
