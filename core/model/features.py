"""The segmentation head of the ``pretrained`` preset: it works on frozen ImageNet features.

Per stride-8 patch the head sees three things:

* the input's locally aware patch feature (PatchCore's 3 x 3 neighbourhood average of each encoder block,
  the deeper block upsampled to the stride-8 grid, concatenated), standardised with the training images'
  statistics;
* its distance to the nearest feature in the memory of normal patches (``core.model.memory``), divided by the
  typical distance of a normal patch: it does not depend on the reconstruction;
* when ``recon_features`` is set, the difference between the input's feature and that of its norm-guided
  one-step reconstruction.

A coarse branch turns these into a logit per patch; a fine branch at full resolution refines it from the
input, the reconstruction and their difference, so that thin cracks and small pits keep their shape. A head
built without the reconstruction (``FeatureConfig.head_reconstruction`` false) refines from the input alone: the
reconstruction is then only shown.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def patch_embedding(maps: list[Tensor]) -> Tensor:
    """Locally aware patch features: 3 x 3 average of each map, resized to the first (finest) map's grid,
    concatenated along channels."""
    size = maps[0].shape[-2:]
    out = []
    for m in maps:
        m = F.avg_pool2d(m, 3, 1, 1, count_include_pad=False)
        if m.shape[-2:] != size:
            m = F.interpolate(m, size=size, mode="bilinear", align_corners=False)
        out.append(m)
    return torch.cat(out, 1)


def _conv_bn_relu(cin: int, cout: int, k: int = 3) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class FeatureSegmenter(nn.Module):
    """(x, reconstruction, features, reconstruction features, memory distance) -> anomaly logits [N, 1, H, W]."""

    def __init__(self, channels: int, feature_dim: int, width: int = 64, recon_features: bool = True,
                 fine_width: int = 16, reconstruction: bool = True):
        super().__init__()
        self.recon_features = recon_features
        self.reconstruction = reconstruction  # False: no reconstruction in (the fine branch sees the input alone)
        cin = feature_dim * (2 if recon_features else 1) + 1
        self.coarse = nn.Sequential(
            *_conv_bn_relu(cin, width, 1), *_conv_bn_relu(width, width), *_conv_bn_relu(width, width),
        )
        self.coarse_head = nn.Conv2d(width, 1, 1)
        # fine branch: input, reconstruction, |difference|, the upsampled coarse logit (without the reconstruction:
        # the input and the coarse logit)
        self.fine = nn.Sequential(
            *_conv_bn_relu((3 if reconstruction else 1) * channels + 1, fine_width),
            *_conv_bn_relu(fine_width, fine_width),
            nn.Conv2d(fine_width, 1, 3, padding=1),
        )

    def forward(self, x: Tensor, recon: Tensor | None, feats: Tensor, recon_feats: Tensor | None,
                dist: Tensor) -> Tensor:
        parts = [feats, dist]
        if self.recon_features:
            if recon_feats is None:
                raise ValueError("this head compares with the reconstruction's features; none given")
            parts.insert(1, feats - recon_feats)
        coarse = self.coarse_head(self.coarse(torch.cat(parts, 1)))
        up = F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if not self.reconstruction:
            return up + self.fine(torch.cat([x, up], 1))
        if recon is None:
            raise ValueError("this head compares the input with its reconstruction; none given")
        return up + self.fine(torch.cat([x, recon, (x - recon).abs(), up], 1))


def smooth_distance(dist: Tensor, size: tuple[int, int], sigma: float) -> Tensor:
    """A patch-distance map [N, 1, h, w] as an image map: bilinearly upsampled to ``size``, then smoothed by a
    Gaussian of ``sigma`` pixels (truncated at 4 sigma, mirrored at the border, as OpenCV's GaussianBlur)."""
    up = F.interpolate(dist, size=size, mode="bilinear", align_corners=False)
    radius = min(int(4 * sigma + 0.5), min(size) - 1)
    if sigma <= 0 or radius < 1:
        return up
    t = torch.arange(-radius, radius + 1, dtype=up.dtype, device=up.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    up = F.conv2d(F.pad(up, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(up, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))


def distance_probability(dist: Tensor, distance_high: float | Tensor) -> Tensor:
    """Memory distance (over the median normal distance) -> [0, 1): 0 up to the median normal patch, 0.5 at
    ``distance_high`` (the 99th percentile of normal patches), then towards 1, never saturating."""
    excess = (dist - 1.0).clamp_min(0.0) / (torch.as_tensor(distance_high, dtype=dist.dtype) - 1.0).clamp_min(1e-6)
    return 1.0 - torch.exp(-math.log(2.0) * excess)
