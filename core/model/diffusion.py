"""Gaussian diffusion process of DiffusionAD (no weights).

Follows the DDPM formulation of Ho et al. (2020) as used by the official DiffusionAD code:
a linear beta schedule computed once in float64 (then kept as float32 tensors, once per device),
epsilon prediction, the one-step x0 estimate
clamped to [-1, 1], and the norm-guided one-step reconstruction of Zhang et al. (TPAMI 2025).
The iterative DDPM sampler exists only to measure the one-step speed-up.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from core.common.config import DiffusionConfig

EpsModel = Callable[[Tensor, Tensor], Tensor]


def linear_beta_schedule(num_timesteps: int, beta_start: float, beta_end: float) -> np.ndarray:
    """Linear betas in float64, scaled by 1000 / T like the original DDPM code."""
    scale = 1000.0 / num_timesteps
    return np.linspace(scale * beta_start, scale * beta_end, num_timesteps, dtype=np.float64)


def extract(coeffs: Tensor, t: Tensor, shape: torch.Size) -> Tensor:
    """Pick ``coeffs[t]`` per sample (``coeffs`` on t's device) and broadcast to ``shape`` ([N, 1, 1, 1])."""
    return coeffs[t].view(-1, *([1] * (len(shape) - 1)))


# the schedule tables the diffusion reads per timestep (float64 numpy attributes of GaussianDiffusion)
COEFFICIENTS = (
    "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod", "posterior_mean_coef1", "posterior_mean_coef2", "model_variance",
)


@dataclass(frozen=True)
class StepOutput:
    """One reverse step: the sample at t-1 and the x0 estimate it came from."""

    prev_sample: Tensor
    pred_x0: Tensor


class GaussianDiffusion:
    """q(x_t | x_0), x0 estimates and the norm-guided one-step reconstruction."""

    def __init__(self, config: DiffusionConfig) -> None:
        self.config = config
        self.num_timesteps = config.num_timesteps
        betas = linear_beta_schedule(config.num_timesteps, config.beta_start, config.beta_end)
        self.betas = betas
        # forward process q(x_t | x_0)
        self.alphas_cumprod = np.cumprod(1.0 - betas)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1.0)
        # posterior q(x_{t-1} | x_t, x_0)
        acp, acp_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        self.posterior_variance = betas * (1.0 - acp_prev) / (1.0 - acp)
        self.posterior_mean_coef1 = betas * np.sqrt(acp_prev) / (1.0 - acp)
        self.posterior_mean_coef2 = (1.0 - acp_prev) * np.sqrt(1.0 - betas) / (1.0 - acp)
        # "large" fixed model variance: beta_t, with the posterior variance at t = 0
        self.model_variance = np.append(self.posterior_variance[1], betas[1:])
        self._tables: dict[torch.device, dict[str, Tensor]] = {}

    def coefficients(self, device: torch.device) -> dict[str, Tensor]:
        """The schedule tables as float32 tensors on ``device``, made once per device (no float64 there:
        MPS has none, and a per-call host-to-device copy would cost every step)."""
        table = self._tables.get(device)
        if table is None:
            cpu = {name: torch.tensor(getattr(self, name), dtype=torch.float32) for name in COEFFICIENTS}
            table = self._tables[device] = {name: v.to(device) for name, v in cpu.items()}
        return table

    def _at(self, name: str, t: Tensor, shape: torch.Size) -> Tensor:
        """Table ``name`` at timesteps ``t``, shaped to broadcast against ``shape``."""
        return extract(self.coefficients(t.device)[name], t, shape)

    # ---- data range -------------------------------------------------------------------------
    def to_model_range(self, x: Tensor) -> Tensor:
        """Images in [0, 1] -> the range the diffusion works in."""
        return x * 2.0 - 1.0 if self.config.data_range == "symmetric" else x

    def from_model_range(self, x: Tensor) -> Tensor:
        """Diffusion range -> displayable [0, 1] image."""
        x = (x + 1.0) / 2.0 if self.config.data_range == "symmetric" else x
        return x.clamp(0.0, 1.0)

    # ---- forward process --------------------------------------------------------------------
    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Sample q(x_t | x_0) = N(sqrt(acp_t) x0, (1 - acp_t) I)."""
        return (
            self._at("sqrt_alphas_cumprod", t, x0.shape) * x0
            + self._at("sqrt_one_minus_alphas_cumprod", t, x0.shape) * noise
        )

    def predict_x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor, clamp: bool = True) -> Tensor:
        """x0 estimate (x_t - sqrt(1 - acp_t) eps) / sqrt(acp_t), clamped to [-1, 1]."""
        x0 = (
            self._at("sqrt_recip_alphas_cumprod", t, x_t.shape) * x_t
            - self._at("sqrt_recipm1_alphas_cumprod", t, x_t.shape) * eps
        )
        return x0.clamp(-1.0, 1.0) if clamp else x0

    # ---- norm guidance ----------------------------------------------------------------------
    def norm_guided_x0(
        self, x_ts: Tensor, t_s: Tensor, eps_s: Tensor, x_tb: Tensor, t_b: Tensor, eps_b: Tensor,
        w: float | None = None,
    ) -> Tensor:
        """Norm-guided one-step x0 (the official code's steps, §3 of the spec).

        The large-scale estimate (the "norm") is re-noised to t_s with the small-scale
        predicted noise and pulls the small-scale noise estimate towards it.
        """
        w = self.config.guidance_w if w is None else w
        norm = self.predict_x0_from_eps(x_tb, t_b, eps_b)
        sqrt_acp_s = self._at("sqrt_alphas_cumprod", t_s, x_ts.shape)
        sqrt_1m_acp_s = self._at("sqrt_one_minus_alphas_cumprod", t_s, x_ts.shape)
        norm_ts = sqrt_acp_s * norm + sqrt_1m_acp_s * eps_s
        eps_guided = eps_s - sqrt_1m_acp_s * w * (norm_ts - x_ts)
        return self.predict_x0_from_eps(x_ts, t_s, eps_guided)

    def reconstruct(
        self, model: EpsModel, x0: Tensor, noise_s: Tensor, noise_b: Tensor,
        t_small: int | None = None, t_big: int | None = None,
    ) -> Tensor:
        """Norm-guided one-step reconstruction of x0 ([N, C, H, W], model range).

        Both scales go through the network as one batch of 2N images.
        """
        n = x0.shape[0]
        t_s = torch.full((n,), self.config.t_small if t_small is None else t_small, device=x0.device)
        t_b = torch.full((n,), self.config.t_big if t_big is None else t_big, device=x0.device)
        return self.guided_from_noise(model, x0, t_s, t_b, noise_s, noise_b)[0]

    def guided_from_noise(
        self, model: EpsModel, x0: Tensor, t_s: Tensor, t_b: Tensor, noise_s: Tensor, noise_b: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Noise x0 at both scales, run one 2N forward; returns (x0_guided, eps_s_hat, eps_b_hat)."""
        x_ts = self.q_sample(x0, t_s, noise_s)
        x_tb = self.q_sample(x0, t_b, noise_b)
        eps = model(torch.cat([x_ts, x_tb]), torch.cat([t_s, t_b]))
        eps_s, eps_b = eps.float().chunk(2)
        return self.norm_guided_x0(x_ts, t_s, eps_s, x_tb, t_b, eps_b), eps_s, eps_b

    # ---- iterative DDPM (baseline for the speed-up benchmark) -------------------------------
    def q_posterior_mean(self, x0: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """Mean of the posterior q(x_{t-1} | x_t, x_0)."""
        return (
            self._at("posterior_mean_coef1", t, x_t.shape) * x0
            + self._at("posterior_mean_coef2", t, x_t.shape) * x_t
        )

    def p_sample(self, model: EpsModel, x_t: Tensor, t: Tensor, generator: torch.Generator | None = None) -> StepOutput:
        """One ancestral step from p(x_{t-1} | x_t) with the clamped x0 and fixed large variance."""
        pred_x0 = self.predict_x0_from_eps(x_t, t, model(x_t, t).float())
        mean = self.q_posterior_mean(pred_x0, x_t, t)
        noise = torch.randn(x_t.shape, generator=generator, device=x_t.device)
        nonzero = (t > 0).float().view(-1, *([1] * (x_t.dim() - 1)))
        std = self._at("model_variance", t, x_t.shape).sqrt()
        return StepOutput(mean + nonzero * std * noise, pred_x0)

    def reconstruct_iterative_progressive(
        self, model: EpsModel, x0: Tensor, t_start: int, generator: torch.Generator | None = None,
    ) -> Iterator[StepOutput]:
        """Noise x0 to t_start - 1, then ancestral-sample down to 0, yielding every step."""
        n = x0.shape[0]
        t = torch.full((n,), t_start - 1, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        x = self.q_sample(x0, t, noise)
        for step in range(t_start - 1, -1, -1):
            out = self.p_sample(model, x, torch.full((n,), step, device=x0.device), generator)
            x = out.prev_sample
            yield out

    def reconstruct_iterative(
        self, model: EpsModel, x0: Tensor, t_start: int | None = None, generator: torch.Generator | None = None,
    ) -> Tensor:
        """Multi-step DDPM reconstruction from t_start (default t_s; 0: no noise, x0 itself); returns x_0."""
        t_start = self.config.t_small if t_start is None else t_start
        if not 0 <= t_start <= self.num_timesteps:
            raise ValueError(f"t_start must be within 0..{self.num_timesteps}, not {t_start}")
        if t_start == 0:
            return x0.clamp(-1.0, 1.0)
        last = deque(self.reconstruct_iterative_progressive(model, x0, t_start, generator), maxlen=1)[0]
        return last.prev_sample.clamp(-1.0, 1.0)
