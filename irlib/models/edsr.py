"""EDSR (Lim et al. 2017), the SR backbone SPN retrains (EDSR-light = the baseline model)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

def conv3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


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
