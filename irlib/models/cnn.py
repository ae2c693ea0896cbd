"""CNN backbones SPN retrains: EDSR-light, FFA-Net and NAFNet (parameter counts match the originals)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .restormer import LayerNorm2d


def conv3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


# ------------------------------------------------------------------------------------------- EDSR
class ResBlock(nn.Module):
    def __init__(self, c: int, res_scale: float = 1.0):
        super().__init__()
        self.body = nn.Sequential(conv3(c, c), nn.ReLU(inplace=True), conv3(c, c))
        self.res_scale = res_scale

    def forward(self, x):
        return x + self.body(x) * self.res_scale


class EDSR(nn.Module):
    """EDSR (Lim et al. 2017). ``EDSR(scale=2)`` is the light/baseline model: 16 blocks, 64 features,
    1,369,859 parameters at x2 and 1,517,571 at x4. The fixed RGB mean shift is a buffer, not a parameter."""

    def __init__(self, scale: int = 4, n_feats: int = 64, n_blocks: int = 16, res_scale: float = 1.0,
                 rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040)):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError("scale must be 2, 3 or 4")
        self.scale = scale
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, 3, 1, 1))
        self.head = conv3(3, n_feats)
        self.body = nn.Sequential(*[ResBlock(n_feats, res_scale) for _ in range(n_blocks)], conv3(n_feats, n_feats))
        ups: list[nn.Module] = []
        if scale == 3:
            ups += [conv3(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        else:
            for _ in range(scale // 2):
                ups += [conv3(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        self.tail = nn.Sequential(*ups, conv3(n_feats, 3))

    def forward(self, x):
        h = self.head(x - self.mean)
        return self.tail(h + self.body(h)) + self.mean


# ---------------------------------------------------------------------------------------- FFA-Net
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


# ------------------------------------------------------------------------------------------ NAFNet
class NAFBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.norm1, self.norm2 = LayerNorm2d(c, eps=1e-6), LayerNorm2d(c, eps=1e-6)
        self.conv1 = nn.Conv2d(c, 2 * c, 1)
        self.conv2 = nn.Conv2d(2 * c, 2 * c, 3, padding=1, groups=2 * c)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c, c, 1))
        self.conv3 = nn.Conv2d(c, c, 1)
        self.conv4 = nn.Conv2d(c, 2 * c, 1)
        self.conv5 = nn.Conv2d(c, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x):
        a, b = self.conv2(self.conv1(self.norm1(x))).chunk(2, 1)
        h = a * b
        h = self.conv3(h * self.sca(h))
        y = x + h * self.beta
        a, b = self.conv4(self.norm2(y)).chunk(2, 1)
        return y + self.conv5(a * b) * self.gamma


class NAFNet(nn.Module):
    """NAFNet (Chen et al. 2022). Defaults are the GoPro width-32 model (enc 1,1,1,28; mid 1; dec 1,1,1,1)."""

    def __init__(self, width: int = 32, enc: Sequence[int] = (1, 1, 1, 28), middle: int = 1,
                 dec: Sequence[int] | None = None):
        super().__init__()
        dec = tuple(dec) if dec is not None else (1,) * len(enc)
        if len(dec) != len(enc):
            raise ValueError(f"NAFNet needs as many decoder levels as encoder levels, got {len(enc)} and {len(dec)}")
        self.intro, self.ending = conv3(3, width), conv3(width, 3)
        self.encoders, self.downs, self.ups, self.decoders = (nn.ModuleList() for _ in range(4))
        c = width
        for n in enc:
            self.encoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = nn.Sequential(*[NAFBlock(c) for _ in range(middle)])
        for n in dec:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(c) for _ in range(n)]))
        self.pad = 2 ** len(enc)

    def forward(self, x):
        h0, w0 = x.shape[-2:]
        xp = F.pad(x, (0, (-w0) % self.pad, 0, (-h0) % self.pad))
        h = self.intro(xp)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            h = enc(h)
            skips.append(h)
            h = down(h)
        h = self.middle(h)
        for dec, up, s in zip(self.decoders, self.ups, reversed(skips)):
            h = dec(up(h) + s)
        return (self.ending(h) + xp)[..., :h0, :w0]


def count_params(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
