"""DiffusionAD: the denoiser, the segmenter and the diffusion process in one module."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .denoiser import DenoiserUNet
from .diffusion import GaussianDiffusion
from .segmenter import SegmentationUNet


class Prediction(NamedTuple):
    """Batch output at model resolution: reconstruction [N, C, H, W] in [0, 1], map [N, 1, H, W]."""

    reconstruction: Tensor
    anomaly_map: Tensor
    score: Tensor  # [N]


def top_k_for(cfg: ModelConfig, h: int, w: int) -> int:
    """k of the top-k mean score, scaled from k at 256 x 256 to the map size (at least 1)."""
    return max(1, round(cfg.score_top_k * h * w / 256**2))


def image_score(anomaly_map: Tensor, k: int) -> Tensor:
    """Mean of the k highest pixels of each map: [N, 1, H, W] -> [N]."""
    return anomaly_map.flatten(1).topk(k, dim=1).values.mean(1)


class DiffusionAD(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.denoiser = DenoiserUNet(config.denoiser, config.image_size, config.channels)
        self.segmenter = SegmentationUNet(config.segmenter.base_width, config.channels)
        self.diffusion = GaussianDiffusion(config.diffusion)

    def forward(self, x: Tensor, noise_s: Tensor, noise_b: Tensor) -> Prediction:
        """Inspect images x [N, C, H, W] in [0, 1] with the given noises (model range)."""
        x0 = self.diffusion.to_model_range(x)
        x0_hat = self.diffusion.reconstruct(self.denoiser, x0, noise_s, noise_b)
        amap = self.anomaly_map(x, x0_hat)
        recon = self.diffusion.from_model_range(x0_hat)
        k = top_k_for(self.config, amap.shape[-2], amap.shape[-1])
        return Prediction(recon.float(), amap, image_score(amap, k))

    def anomaly_map(self, x: Tensor, x0_hat: Tensor) -> Tensor:
        """The anomaly probability map [N, 1, H, W] of images x given their reconstruction (model range)."""
        return torch.sigmoid(self.segmenter(x, self.segmenter_input(x0_hat).to(x.dtype)).float())

    def segmenter_input(self, x0_hat: Tensor) -> Tensor:
        """The reconstruction as the segmenter sees it: [0, 1] scale, clamped only to [-1, 1].

        The official code feeds the [-1, 1]-clamped estimate unchanged; we keep that.
        """
        if self.config.diffusion.data_range == "symmetric":
            return (x0_hat + 1.0) / 2.0
        return x0_hat


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_on_meta(config: ModelConfig) -> DiffusionAD:
    """The model without allocating weights (for parameter counts of large presets)."""
    with torch.device("meta"):
        return DiffusionAD(config)


MAX_PARAMETERS = 2_000_000_000  # 8 GB of float32 weights: far above any preset (paper: 160 M)


def check_model_size(config: ModelConfig) -> int:
    """The parameter count of ``config``, counted without allocating; ``ValueError`` above MAX_PARAMETERS."""
    n = count_parameters(build_on_meta(config))
    if n > MAX_PARAMETERS:
        raise ValueError(
            f"ModelConfig: {n:,} parameters (denoiser.base_channels {config.denoiser.base_channels}, "
            f"channel_mults {list(config.denoiser.channel_mults)}, segmenter.base_width "
            f"{config.segmenter.base_width}), more than the {MAX_PARAMETERS:,} this program builds")
    return n
