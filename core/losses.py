"""Training losses of DiffusionAD (official ``train.py``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FocalLoss(nn.Module):
    """Binary focal loss on probabilities: mean of alpha * (1 - p_t)^gamma * BCE, p_t = exp(-BCE).

    alpha is applied uniformly (not class-balanced), as in the official code.
    """

    def __init__(self, alpha: float = 0.5, gamma: float = 4.0):
        super().__init__()
        self.alpha, self.gamma = alpha, gamma

    def forward(self, prob: Tensor, target: Tensor) -> Tensor:
        # BCE written out (not F.binary_cross_entropy, which raises on NaN inputs instead of
        # letting the trainer see a non-finite loss and stop cleanly)
        p, y = prob.float().clamp(1e-6, 1 - 1e-6), target.float()
        bce = -(y * torch.log(p) + (1 - y) * torch.log(1 - p))
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
    """L = L_noise + focal_weight * Focal(M_hat, M) + SmoothL1(M_hat, M)."""

    def __init__(self, focal_weight: float = 5.0):
        super().__init__()
        self.focal_weight = focal_weight
        self.focal = FocalLoss()

    def forward(
        self, eps_s_hat: Tensor, eps_s: Tensor, eps_b_hat: Tensor, eps_b: Tensor,
        mask_hat: Tensor, mask: Tensor, normal: Tensor,
    ) -> dict[str, Tensor]:
        l_noise = noise_loss(eps_s_hat, eps_s, eps_b_hat, eps_b, normal)
        l_focal = self.focal(mask_hat, mask)
        l_smooth = F.smooth_l1_loss(mask_hat.float(), mask.float())
        return {"loss": self.total(l_noise, l_focal, l_smooth), "noise": l_noise, "focal": l_focal,
                "smooth_l1": l_smooth}

    def total(self, noise: Tensor, focal: Tensor, smooth_l1: Tensor) -> Tensor:
        """L from its terms (also for terms weighted per micro-batch)."""
        return noise + self.focal_weight * focal + smooth_l1
