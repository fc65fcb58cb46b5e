"""Segmentation sub-network: DRAEM's discriminative U-Net with a 1-channel head (logits; sigmoid in the model).

Structure of ``DiscriminativeSubNetwork`` (Zehnder et al., DRAEM, ICCV 2021) as used by
DiffusionAD (``models/Seg_subnetwork.py``): six [Conv-BN-ReLU]x2 encoder blocks of widths
b, 2b, 4b, 8b, 8b, 8b with max-pooling between them, five bilinear-upsampling decoder stages.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(*conv_bn_relu(cin, cout), *conv_bn_relu(cout, cout))


DOWNSAMPLING = 32  # five 2x poolings: the deepest feature map is (H / 32) x (W / 32)


class SegmentationUNet(nn.Module):
    """(x [N, C, H, W], x0_hat [N, C, H, W]) -> anomaly logits [N, 1, H, W].

    The official network ends in a sigmoid; here it is left to the consumer (the probability map of
    :class:`core.model.network.DiffusionAD`), so that training computes the loss from logits, which is stable.
    H and W must be divisible by 32 (five 2x poolings).
    """

    def __init__(self, base_width: int = 64, channels: int = 3):
        super().__init__()
        b = base_width
        widths = [b, 2 * b, 4 * b, 8 * b, 8 * b, 8 * b]
        self.encoder = nn.ModuleList()
        cin = 2 * channels
        for w in widths:
            self.encoder.append(double_conv(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
        # decoder stage i: up-conv widths[-1-i] -> widths[-2-i]... following DRAEM
        ups = [(8 * b, 8 * b), (8 * b, 4 * b), (4 * b, 2 * b), (2 * b, b), (b, b)]
        self.up_convs = nn.ModuleList(nn.Sequential(*conv_bn_relu(i, o)) for i, o in ups)
        skips = [8 * b, 8 * b, 4 * b, 2 * b, b]
        self.dec_convs = nn.ModuleList(double_conv(o + s, o) for (_, o), s in zip(ups, skips))
        self.head = nn.Conv2d(b, 1, 3, padding=1)

    def forward(self, x: Tensor, x0_hat: Tensor) -> Tensor:
        h = torch.cat([x, x0_hat], dim=1)
        feats = []
        for i, block in enumerate(self.encoder):
            h = block(h if i == 0 else self.pool(h))
            feats.append(h)
        h = feats.pop()
        for up_conv, dec_conv in zip(self.up_convs, self.dec_convs):
            h = dec_conv(torch.cat([up_conv(self.up(h)), feats.pop()], dim=1))
        return self.head(h)
