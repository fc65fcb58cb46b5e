"""Training losses of DiffusionAD (official ``train.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FocalLoss(nn.Module):
    """Binary focal loss from logits: mean of alpha * (1 - p_t)^gamma * BCE, p_t = exp(-BCE).

    alpha is applied uniformly (not class-balanced), as in the official code, which computes the same
    formula on probabilities. From logits, BCE is exact for any logit: a confidently wrong pixel keeps its
    gradient, where clamping probabilities to [1e-6, 1 - 1e-6] would give it none (|logit| > 13.8).
    """

    def __init__(self, alpha: float = 0.5, gamma: float = 4.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        # a NaN logit gives a NaN loss (no exception), so the trainer sees it and stops cleanly
        bce = F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
        pt = torch.exp(-bce)
        return (self.alpha * (1 - pt) ** self.gamma * bce).mean()


def noise_loss(eps_s_hat: Tensor, eps_s: Tensor, eps_b_hat: Tensor, eps_b: Tensor, normal: Tensor) -> Tensor:
    """L_noise = mean over normal samples of MSE(eps_s) + MSE(eps_b); exactly 0 without normal samples.

    ``normal`` is a bool [N] vector; anomalous samples train the denoiser only through the mask loss.
    """
    per_sample = (
        (eps_s_hat.float() - eps_s).pow(2).flatten(1).mean(1)
        + (eps_b_hat.float() - eps_b).pow(2).flatten(1).mean(1)
    )
    weight = normal.float()
    return (per_sample * weight).sum() / weight.sum().clamp(min=1.0)


class DiffusionADLoss(nn.Module):
    """L = L_noise + focal_weight * Focal(M_hat, M) + SmoothL1(M_hat, M), M_hat = sigmoid(mask_logits)."""

    def __init__(self, focal_weight: float = 5.0):
        super().__init__()
        self.focal_weight = focal_weight
        self.focal = FocalLoss()

    def forward(
        self, eps_s_hat: Tensor, eps_s: Tensor, eps_b_hat: Tensor, eps_b: Tensor,
        mask_logits: Tensor, mask: Tensor, normal: Tensor,
    ) -> dict[str, Tensor]:
        l_noise = noise_loss(eps_s_hat, eps_s, eps_b_hat, eps_b, normal)
        l_focal = self.focal(mask_logits, mask)
        l_smooth = F.smooth_l1_loss(torch.sigmoid(mask_logits.float()), mask.float())
        return {"loss": self.total(l_noise, l_focal, l_smooth), "noise": l_noise, "focal": l_focal,
                "smooth_l1": l_smooth}

    def total(self, noise: Tensor, focal: Tensor, smooth_l1: Tensor) -> Tensor:
        """L from its terms (also for terms weighted per micro-batch)."""
        return noise + self.focal_weight * focal + smooth_l1
