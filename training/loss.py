"""The Bradley–Terry reward loss (with TRL's optional margin and reward-centering term) and the length penalty."""

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


def length_penalty(quality: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Mean over the served heads of cov(r_h, z)², z the batch's standardised log(1 + L), L the completion length:
    the reward a head gives per standard deviation of log-length, squared (ODIN's decorrelation term, as a
    covariance: a correlation's gradient grows as 1/std(r), which overwhelms the ranking loss while the rewards are
    still nearly constant at the start of a fit — measured: the served head then learned the ranking backwards)."""
    heads = quality if quality.dim() == 2 else quality[:, None]
    log_length = torch.log1p(lengths)
    z = (log_length - log_length.mean()) / log_length.std(unbiased=False).clamp(min=1e-6)
    return (((heads - heads.mean(dim=0)) * z[:, None]).mean(dim=0) ** 2).mean()
