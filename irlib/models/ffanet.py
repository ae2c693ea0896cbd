"""FFA-Net (Qin et al. 2020), the dehazing backbone of SPN Tables 3, 5 and 7."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .edsr import conv3


class _PixelAttention(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(c, c // 8, 1), nn.ReLU(inplace=True), nn.Conv2d(c // 8, 1, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.net(x)


class _ChannelAttention(nn.Module):
    def __init__(self, c: int, reduction: int = 8, out: int | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c // reduction, 1), nn.ReLU(inplace=True),
                                 nn.Conv2d(c // reduction, out or c, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.net(x)


class _FFABlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = conv3(c, c), conv3(c, c)
        self.ca, self.pa = _ChannelAttention(c), _PixelAttention(c)

    def forward(self, x):
        r = F.relu(self.conv1(x)) + x
        r = self.pa(self.ca(self.conv2(r)))
        return r + x


class _FFAGroup(nn.Module):
    def __init__(self, c: int, n: int):
        super().__init__()
        self.body = nn.Sequential(*[_FFABlock(c) for _ in range(n)], conv3(c, c))

    def forward(self, x):
        return self.body(x) + x


class FFANet(nn.Module):
    """FFA-Net (Qin et al. 2020): 3 groups of 19 blocks, 64 features, 4,455,913 parameters."""

    def __init__(self, groups: int = 3, blocks: int = 19, dim: int = 64):
        super().__init__()
        self.pre = conv3(3, dim)
        self.groups = nn.ModuleList(_FFAGroup(dim, blocks) for _ in range(groups))
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim * groups, dim // 16, 1), nn.ReLU(inplace=True),
                                  nn.Conv2d(dim // 16, dim * groups, 1), nn.Sigmoid())
        self.pa = _PixelAttention(dim)
        self.post = nn.Sequential(conv3(dim, dim), conv3(dim, 3))
        self.n = groups

    def forward(self, x):
        h = self.pre(x)
        outs = []
        for g in self.groups:
            h = g(h)
            outs.append(h)
        w = self.gate(torch.cat(outs, 1)).view(x.shape[0], self.n, -1, 1, 1)
        fused = sum(w[:, i] * outs[i] for i in range(self.n))
        return self.post(self.pa(fused)) + x
