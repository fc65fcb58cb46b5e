"""ADM-style denoising UNet epsilon_theta(x_t, t) of DiffusionAD.

Ports the layout of guided-diffusion's UNet as configured by the official DiffusionAD code
(``models/Recon_subnetwork.py``): BigGAN-style resampling ResBlocks with an additive time
embedding, multi-head self-attention at chosen feature sizes, zero-initialised output convs.
"""

from __future__ import annotations

import math
from math import gcd

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from core.common.config import DenoiserConfig


def normalization(channels: int) -> nn.GroupNorm:
    """GroupNorm(32), or the largest group count that divides small channel counts."""
    return nn.GroupNorm(gcd(32, channels), channels)


def zero_module(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding of integer timesteps, [sin, cos] order: [N] -> [N, dim]."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ResBlock(nn.Module):
    """GN-SiLU-Conv, + Linear(SiLU(emb)), GN-SiLU-Dropout-zero Conv, plus skip; optional up/down."""

    def __init__(self, ch: int, emb_ch: int, out_ch: int, dropout: float, up: bool = False, down: bool = False):
        super().__init__()
        self.in_norm = normalization(ch)
        self.in_conv = nn.Conv2d(ch, out_ch, 3, padding=1)
        self.up, self.down = up, down
        self.emb = nn.Linear(emb_ch, out_ch)
        self.out_norm = normalization(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Identity() if ch == out_ch else nn.Conv2d(ch, out_ch, 1)

    def _resample(self, x: Tensor) -> Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = F.silu(self.in_norm(x))
        h = self.in_conv(self._resample(h))
        x = self._resample(x)
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.out_conv(self.dropout(F.silu(self.out_norm(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """GN, qkv 1x1, multi-head softmax attention over pixels, zero-initialised projection."""

    def __init__(self, ch: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads if ch % num_heads == 0 else 1
        self.norm = normalization(ch)
        self.qkv = nn.Conv1d(ch, 3 * ch, 1)
        self.proj = zero_module(nn.Conv1d(ch, ch, 1))

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x).reshape(n, c, h * w))  # [N, 3C, L]
        # [N, heads, L, C_head] for each of q, k, v
        q, k, v = qkv.reshape(n, 3, self.num_heads, c // self.num_heads, h * w).permute(1, 0, 2, 4, 3)
        out = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(C_head), same as q,k * C^-1/4
        out = out.permute(0, 1, 3, 2).reshape(n, c, h * w)
        return x + self.proj(out).reshape(n, c, h, w)


class _Level(nn.Module):
    """A ResBlock optionally followed by attention (one encoder or decoder entry)."""

    def __init__(self, res: ResBlock, attn: AttentionBlock | None, up: ResBlock | None = None):
        super().__init__()
        self.res, self.attn, self.up = res, attn, up

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        x = self.res(x, emb)
        if self.attn is not None:
            x = self.attn(x)
        if self.up is not None:
            x = self.up(x, emb)
        return x


class DenoiserUNet(nn.Module):
    """epsilon_theta: ([N, C, H, W] noisy image, [N] integer t) -> [N, C, H, W] predicted noise."""

    def __init__(self, config: DenoiserConfig, image_size: int, channels: int = 3):
        super().__init__()
        self.config = config
        base, emb_ch = config.base_channels, 4 * config.base_channels
        self.time_embed = nn.Sequential(nn.Linear(base, emb_ch), nn.SiLU(), nn.Linear(emb_ch, emb_ch))
        self.conv_in = nn.Conv2d(channels, base, 3, padding=1)

        def attn(ch: int, size: int) -> AttentionBlock | None:
            return AttentionBlock(ch, config.num_heads) if size in config.attention_resolutions else None

        self.down = nn.ModuleList()
        skips, ch, size = [base], base, image_size
        for level, mult in enumerate(config.channel_mults):
            for _ in range(config.num_res_blocks):
                out = mult * base
                self.down.append(_Level(ResBlock(ch, emb_ch, out, config.dropout), attn(out, size)))
                ch = out
                skips.append(ch)
            if level != len(config.channel_mults) - 1:
                self.down.append(_Level(ResBlock(ch, emb_ch, ch, config.dropout, down=True), None))
                skips.append(ch)
                size //= 2
        self.mid = nn.ModuleList([
            ResBlock(ch, emb_ch, ch, config.dropout), AttentionBlock(ch, config.num_heads),
            ResBlock(ch, emb_ch, ch, config.dropout),
        ])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mults))):
            for i in range(config.num_res_blocks + 1):
                out = mult * base
                res = ResBlock(ch + skips.pop(), emb_ch, out, config.dropout)
                ch = out
                upsample = None
                if level and i == config.num_res_blocks:
                    upsample = ResBlock(ch, emb_ch, ch, config.dropout, up=True)
                self.up.append(_Level(res, attn(ch, size), upsample))
                if upsample is not None:
                    size *= 2
        self.out = nn.Sequential(normalization(ch), nn.SiLU(), zero_module(nn.Conv2d(ch, channels, 3, padding=1)))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        emb = self.time_embed(timestep_embedding(t, self.config.base_channels))
        h = self.conv_in(x)
        hs = [h]
        for block in self.down:
            h = block(h, emb)
            hs.append(h)
        h = self.mid[0](h, emb)
        h = self.mid[1](h)
        h = self.mid[2](h, emb)
        for block in self.up:
            h = block(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)
