"""The UMS-Fusion network: a UNet++ whose top output X0_4 is the deep feature map.

As published: 5 levels with 16, 16, 32, 32, 64 filters; every node a VGG-style block of two
7x7 convolutions, each followed by BatchNorm and ReLU6, then channel attention; bilinear
upsampling; a 16-channel top output X0_4. Training adds a head of 7x7 convolutions
16-8-4-1 that reconstructs the input (unsupervised autoencoding).
Tensors are (batch, channels, height, width); inputs are grayscale in [-1, 1].
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

FILTERS = (16, 16, 32, 32, 64)
KERNEL = 7


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: reweights channels by a gate computed from their global mean."""

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(hidden, channels, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class VGGBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        padding = KERNEL // 2
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, KERNEL, padding=padding, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
            nn.Conv2d(out_channels, out_channels, KERNEL, padding=padding, bias=False), nn.BatchNorm2d(out_channels),
            nn.ReLU6(inplace=True),
            ChannelAttention(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class UNetPlusPlus(nn.Module):
    """Nested UNet; ``forward`` returns X0_4, the (B, 16, H, W) feature map."""

    def __init__(self, filters: tuple[int, ...] = FILTERS):
        super().__init__()
        f = filters
        self.pool = nn.MaxPool2d(2)
        self.x0_0, self.x1_0, self.x2_0 = VGGBlock(1, f[0]), VGGBlock(f[0], f[1]), VGGBlock(f[1], f[2])
        self.x3_0, self.x4_0 = VGGBlock(f[2], f[3]), VGGBlock(f[3], f[4])
        self.x0_1, self.x1_1 = VGGBlock(f[0] + f[1], f[0]), VGGBlock(f[1] + f[2], f[1])
        self.x2_1, self.x3_1 = VGGBlock(f[2] + f[3], f[2]), VGGBlock(f[3] + f[4], f[3])
        self.x0_2, self.x1_2 = VGGBlock(f[0] * 2 + f[1], f[0]), VGGBlock(f[1] * 2 + f[2], f[1])
        self.x2_2 = VGGBlock(f[2] * 2 + f[3], f[2])
        self.x0_3, self.x1_3 = VGGBlock(f[0] * 3 + f[1], f[0]), VGGBlock(f[1] * 3 + f[2], f[1])
        self.x0_4 = VGGBlock(f[0] * 4 + f[1], f[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0_0 = self.x0_0(x)
        x1_0 = self.x1_0(self.pool(x0_0))
        x0_1 = self.x0_1(torch.cat([x0_0, _up(x1_0, x0_0)], 1))
        x2_0 = self.x2_0(self.pool(x1_0))
        x1_1 = self.x1_1(torch.cat([x1_0, _up(x2_0, x1_0)], 1))
        x0_2 = self.x0_2(torch.cat([x0_0, x0_1, _up(x1_1, x0_0)], 1))
        x3_0 = self.x3_0(self.pool(x2_0))
        x2_1 = self.x2_1(torch.cat([x2_0, _up(x3_0, x2_0)], 1))
        x1_2 = self.x1_2(torch.cat([x1_0, x1_1, _up(x2_1, x1_0)], 1))
        x0_3 = self.x0_3(torch.cat([x0_0, x0_1, x0_2, _up(x1_2, x0_0)], 1))
        x4_0 = self.x4_0(self.pool(x3_0))
        x3_1 = self.x3_1(torch.cat([x3_0, _up(x4_0, x3_0)], 1))
        x2_2 = self.x2_2(torch.cat([x2_0, x2_1, _up(x3_1, x2_0)], 1))
        x1_3 = self.x1_3(torch.cat([x1_0, x1_1, x1_2, _up(x2_2, x1_0)], 1))
        return self.x0_4(torch.cat([x0_0, x0_1, x0_2, x0_3, _up(x1_3, x0_0)], 1))


class ReconstructionHead(nn.Module):
    """7x7 convolutions 16-8-4-1 back to the image (tanh: inputs live in [-1, 1])."""

    def __init__(self, channels: int = FILTERS[0]):
        super().__init__()
        padding = KERNEL // 2
        self.body = nn.Sequential(nn.Conv2d(channels, 8, KERNEL, padding=padding), nn.ReLU6(inplace=True),
                                  nn.Conv2d(8, 4, KERNEL, padding=padding), nn.ReLU6(inplace=True),
                                  nn.Conv2d(4, 1, KERNEL, padding=padding), nn.Tanh())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.body(features)


class UMSAutoencoder(nn.Module):
    """What training optimises: features (``encoder``) and their reconstruction (``head``)."""

    def __init__(self):
        super().__init__()
        self.encoder = UNetPlusPlus()
        self.head = ReconstructionHead()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.encoder(x)
        return self.head(features), features


def feature_spatial_frequency(features: torch.Tensor, window_px: int = 31) -> torch.Tensor:
    """The published deep-feature SF: per channel sqrt((f(i,j-1)-f)^2 + (f(i-1,j)-f)^2), summed
    over a window_px square and over the channels. (B, C, H, W) -> (B, H, W)."""
    left = F.pad(features, (1, 0, 0, 0), mode="replicate")[..., :, :-1]
    up = F.pad(features, (0, 0, 1, 0), mode="replicate")[..., :-1, :]
    magnitude = torch.sqrt((left - features) ** 2 + (up - features) ** 2 + 1e-12).sum(1, keepdim=True)
    summed = F.avg_pool2d(magnitude, window_px, stride=1, padding=window_px // 2, count_include_pad=False)
    return summed[:, 0] * window_px * window_px
