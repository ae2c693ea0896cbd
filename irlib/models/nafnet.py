"""NAFNet (Chen et al. 2022), the deblurring backbone of SPN Table 4."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .edsr import conv3
from .restormer import LayerNorm2d


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
