"""MSBDN-DFF (Dong et al., CVPR 2020), the dehazing backbone of DiffLoss Table 3 (loss comparison).

A 5-level U-Net of residual blocks (reflection-padded 3x3 convs, PReLU, 0.1 residual scaling). Two ideas:

* *Dense feature fusion* (DFF): after each encoder downsampling, the new feature is corrected by back-
  projection against every earlier (higher-resolution) encoder feature: project up to that resolution
  with strided transposed convs, take the difference, project it back down, add it (the release's
  ``iter2`` mode); the decoder does the mirror image against the earlier, lower-resolution decoder features.
* *Strengthen-operate-subtract boosting*: each decoder level adds the upsampled coarser estimate to the
  skip feature, refines the sum, and subtracts the estimate again.

Defaults (16 base channels, 18 bottleneck residual blocks) give 31,353,061 parameters, the paper's 31.35M
and the release definition's count. Module names and the ``state_dict`` equal the authors' release
(``BookerDeWitt/MSBDN-DFF``, ``networks/MSBDN-DFF-v1-1.py`` with ``networks/base_networks.py``), every
module registered once, so a release state dict loads with ``strict=True``
(:func:`irlib.models.release.load_release`). The released ``model.pkl`` is a pickled whole model (the training
script saves ``torch.save(model)``): unpickle it where the release code is importable and save its
``state_dict()`` first. Inputs must be multiples of 16.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1):
        super().__init__()
        self.pad = k // 2
        self.conv2d = nn.Conv2d(cin, cout, k, stride)

    def forward(self, x):
        return self.conv2d(F.pad(x, (self.pad,) * 4, mode="reflect"))


class UpsampleConvLayer(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv2d = nn.ConvTranspose2d(cin, cout, 3, stride=2)

    def forward(self, x, size):
        return F.interpolate(self.conv2d(x), size=size, mode="bilinear", align_corners=False)


class ResidualBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.conv2 = ConvLayer(c, c, 3), ConvLayer(c, c, 3)
        self.relu = nn.PReLU()

    def forward(self, x):
        return x + 0.1 * self.conv2(self.relu(self.conv1(x)))


def _res(c: int, n: int = 3) -> nn.Sequential:
    return nn.Sequential(*[ResidualBlock(c) for _ in range(n)])


class _Conv(nn.Module):
    def __init__(self, cin: int, cout: int, transposed: bool):
        super().__init__()
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        setattr(self, "deconv" if transposed else "conv", conv(cin, cout, 4, 2, 1))
        self.act = nn.PReLU()

    def forward(self, x):
        return self.act((self.deconv if hasattr(self, "deconv") else self.conv)(x))


class DFF(nn.Module):
    """Dense feature fusion by back-projection against ``n_prev`` earlier features. ``encoder=True``: the
    earlier features are finer (x2 per step, half the channels); ``False``: coarser (x1/2, double)."""

    def __init__(self, c: int, n_prev: int, encoder: bool):
        super().__init__()
        self.n, self.encoder = n_prev, encoder
        if encoder:   # up_convs[i]: c/2^i -> c/2^(i+1) (finer); down_convs[i] back
            self.up_convs = nn.ModuleList([_Conv(c >> i, c >> (i + 1), True) for i in range(n_prev)])
            self.down_convs = nn.ModuleList([_Conv(c >> (i + 1), c >> i, False) for i in range(n_prev)])
        else:         # down_convs[i]: c*2^i -> c*2^(i+1) (coarser); up_convs[i] back
            self.down_convs = nn.ModuleList([_Conv(c << i, c << (i + 1), False) for i in range(n_prev)])
            self.up_convs = nn.ModuleList([_Conv(c << (i + 1), c << i, True) for i in range(n_prev)])

    def forward(self, x: torch.Tensor, prev: list[torch.Tensor]) -> torch.Tensor:
        # towards the earlier features and back again: the lists are looked up here, never stored twice
        to_prev, back = (self.up_convs, self.down_convs) if self.encoder else (self.down_convs, self.up_convs)
        fused = x
        for i, p in enumerate(prev):           # prev[0] is the farthest level, n steps away
            steps = self.n - i
            d = fused
            for j in range(steps):
                d = to_prev[j](d)
            d = d - p
            for j in reversed(range(steps)):
                d = back[j](d)
            fused = fused + d
        return fused


class MSBDN(nn.Module):
    """MSBDN-DFF; :meth:`tiny` (4 base channels, 1 bottleneck block) is for CPU smoke runs."""

    def __init__(self, base: int = 16, res_blocks: int = 18):
        super().__init__()
        c = [base << i for i in range(5)]          # 16, 32, 64, 128, 256
        self.conv_input = ConvLayer(3, c[0], 11)
        self.dense0 = _res(c[0])
        for i in range(1, 5):
            setattr(self, f"conv{2 ** i}x", ConvLayer(c[i - 1], c[i], 3, stride=2))
            setattr(self, f"fusion{i}", DFF(c[i], i, encoder=True))
            if i < 4:
                setattr(self, f"dense{i}", _res(c[i]))
        self.dehaze = nn.Sequential()
        for k in range(res_blocks):
            self.dehaze.add_module(f"res{k}", ResidualBlock(c[4]))
        for i in range(4, 0, -1):                   # decoder level i works at c[i-1]
            setattr(self, f"convd{2 ** i}x", UpsampleConvLayer(c[i], c[i - 1]))
            setattr(self, f"dense_{i}", _res(c[i - 1]))
            setattr(self, f"fusion_{i}", DFF(c[i - 1], 5 - i, encoder=False))
        self.conv_output = ConvLayer(c[0], 3, 3)

    @classmethod
    def tiny(cls) -> "MSBDN":
        return cls(base=4, res_blocks=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"MSBDN needs height and width divisible by 16, got {tuple(x.shape[-2:])} (pad_to=16)")
        f = self.conv_input(x)
        mem = [f]
        skips = [self.dense0(f) + f]
        h = skips[0]
        for i in range(1, 5):
            h = getattr(self, f"fusion{i}")(getattr(self, f"conv{2 ** i}x")(h), mem)
            mem.append(h)
            if i < 4:
                h = getattr(self, f"dense{i}")(h) + h
                skips.append(h)
        h = self.dehaze(2 * h) + h                  # strengthen-operate-subtract at the bottleneck: (2h -> op) + 2h - h
        mem_up = [h]
        for i in range(4, 0, -1):
            skip = skips[i - 1]
            up = getattr(self, f"convd{2 ** i}x")(h, skip.shape[-2:])
            s = skip + up
            h = getattr(self, f"dense_{i}")(s) + s - up
            h = getattr(self, f"fusion_{i}")(h, mem_up)
            mem_up.append(h)
        return self.conv_output(h)
