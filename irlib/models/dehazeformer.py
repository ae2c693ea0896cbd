"""DehazeFormer (Song et al., TIP 2023) — the T/S/B dehazing transformers SPN retrains (Table 3).

Building blocks as the DehazeFormer paper describes them: RescaleNorm (RLN: a layer norm over C,H,W whose
mean/std are fed back through 1x1 convs), window attention with a relative-position MLP on log-spaced
offsets, shifted windows by reflect padding (no attention mask), a depth-wise 5x5 conv branch on V,
selective-kernel fusion of skips, and the soft reconstruction ``K * I - B + I``.

Parameter counts of :meth:`t`/:meth:`s`/:meth:`b`: 687,404 / 1,284,884 / 2,517,612 against the published
0.686M / 1.283M / 2.514M — within 0.21 %, but not equal. The gap grows with the number of attention blocks,
so some detail of the attention block (probably the RLN or the relative-position MLP) differs from the
authors' model; we have not found which. Pretrained DehazeFormer checkpoints will therefore not load as
they are.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .swinir import window_partition, window_reverse


class RLN(nn.Module):
    """Rescale-norm: normalise over (C,H,W); returns (y, rescale, rebias) to re-apply the statistics."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.meta1, self.meta2 = nn.Conv2d(1, dim, 1), nn.Conv2d(1, dim, 1)

    def forward(self, x):
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = torch.sqrt((x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True) + self.eps)
        y = (x - mean) / std * self.weight + self.bias
        return y, self.meta1(std), self.meta2(mean)


class _WindowAttention(nn.Module):
    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        c = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0).float()
        self.register_buffer("rel", torch.sign(rel) * torch.log1p(rel.abs()), persistent=False)
        self.meta = nn.Sequential(nn.Linear(2, 256), nn.ReLU(inplace=True), nn.Linear(256, heads))

    def forward(self, qkv):
        b, n, c3 = qkv.shape
        c = c3 // 3
        q, k, v = qkv.view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.meta(self.rel).permute(2, 0, 1).unsqueeze(0)
        return (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, shift: int, use_attn: bool):
        super().__init__()
        self.window, self.shift, self.use_attn = window, shift, use_attn
        self.conv = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, padding_mode="reflect")
        self.V, self.proj = nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1)
        if use_attn:
            self.QK = nn.Conv2d(dim, dim * 2, 1)
            self.attn = _WindowAttention(dim, window, heads)

    def _pad(self, x):
        h, w = x.shape[-2:]
        ws, s = self.window, self.shift
        ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
        if s:
            return F.pad(x, (s, (ws - s + pw) % ws, s, (ws - s + ph) % ws), mode="reflect")
        return F.pad(x, (0, pw, 0, ph), mode="reflect")

    def forward(self, x):
        b, c, h, w = x.shape
        v = self.V(x)
        if not self.use_attn:
            return self.proj(self.conv(v))
        qkv = self._pad(torch.cat([self.QK(x), v], 1))
        ht, wt = qkv.shape[-2:]
        win = self.attn(window_partition(qkv.permute(0, 2, 3, 1), self.window))
        out = window_reverse(win, self.window, ht, wt)[:, self.shift:self.shift + h, self.shift:self.shift + w]
        return self.proj(self.conv(v) + out.permute(0, 3, 1, 2))


class _Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, window, shift, use_attn):
        super().__init__()
        self.use_attn = use_attn
        self.norm1 = RLN(dim) if use_attn else None
        self.attn = _Attention(dim, heads, window, shift, use_attn)
        hid = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Conv2d(dim, hid, 1), nn.ReLU(inplace=True), nn.Conv2d(hid, dim, 1))

    def forward(self, x):
        y = x
        if self.use_attn:
            y, rescale, rebias = self.norm1(y)
        y = self.attn(y)
        if self.use_attn:
            y = y * rescale + rebias
        x = x + y
        return x + self.mlp(x)


def _layer(dim, depth, heads, mlp_ratio, window, attn_ratio):
    n_attn = attn_ratio * depth
    return nn.Sequential(*[_Block(dim, heads, mlp_ratio, window, 0 if i % 2 == 0 else window // 2, i >= depth - n_attn)
                           for i in range(depth)])


class _SKFusion(nn.Module):
    def __init__(self, dim: int, height: int = 2, reduction: int = 8):
        super().__init__()
        d = max(dim // reduction, 4)
        self.height = height
        self.mlp = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim, d, 1, bias=False), nn.ReLU(inplace=True),
                                 nn.Conv2d(d, dim * height, 1, bias=False))

    def forward(self, feats):
        x = torch.stack(feats, 1)                                  # (B, height, C, H, W)
        a = self.mlp(x.sum(1)).view(x.shape[0], self.height, -1, 1, 1).softmax(1)
        return (x * a).sum(1)


class DehazeFormer(nn.Module):
    """Five-stage U-shaped DehazeFormer; use :meth:`t`, :meth:`s`, :meth:`b` for the published sizes."""

    def __init__(self, dims: Sequence[int] = (24, 48, 96, 48, 24), depths: Sequence[int] = (4, 4, 4, 2, 2),
                 heads: Sequence[int] = (2, 4, 6, 1, 1), mlp_ratios: Sequence[float] = (2, 4, 4, 2, 2),
                 attn_ratio: Sequence[float] = (0, 0.5, 1, 0, 0), window: int = 8):
        super().__init__()
        d = dims
        self.embed = nn.Conv2d(3, d[0], 3, padding=1, padding_mode="reflect")
        self.layers = nn.ModuleList(_layer(d[i], depths[i], heads[i], mlp_ratios[i], window, attn_ratio[i]) for i in range(5))
        self.merge1 = nn.Conv2d(d[0], d[1], 2, stride=2)
        self.merge2 = nn.Conv2d(d[1], d[2], 2, stride=2)
        self.skip1, self.skip2 = nn.Conv2d(d[0], d[0], 1), nn.Conv2d(d[1], d[1], 1)
        self.split1 = nn.Sequential(nn.Conv2d(d[2], d[3] * 4, 1), nn.PixelShuffle(2))
        self.split2 = nn.Sequential(nn.Conv2d(d[3], d[4] * 4, 1), nn.PixelShuffle(2))
        self.fuse1, self.fuse2 = _SKFusion(d[3]), _SKFusion(d[4])
        self.unembed = nn.Conv2d(d[4], 4, 3, padding=1, padding_mode="reflect")

    @classmethod
    def t(cls):
        return cls()

    @classmethod
    def s(cls):
        return cls(depths=(8, 8, 8, 4, 4), mlp_ratios=(2, 4, 4, 2, 2), attn_ratio=(0.25, 0.5, 0.75, 0, 0))

    @classmethod
    def b(cls):
        return cls(depths=(16, 16, 16, 8, 8), mlp_ratios=(2, 4, 4, 2, 2), attn_ratio=(0.25, 0.5, 0.75, 0, 0))

    def forward(self, x):
        h0, w0 = x.shape[-2:]
        xp = F.pad(x, (0, (-w0) % 4, 0, (-h0) % 4), mode="reflect")
        f = self.layers[0](self.embed(xp))
        s1 = f
        f = self.layers[1](self.merge1(f))
        s2 = f
        f = self.layers[2](self.merge2(f))
        f = self.split1(f)
        f = self.fuse1([f, self.skip2(s2)]) + f
        f = self.split2(self.layers[3](f))
        f = self.fuse2([f, self.skip1(s1)]) + f
        k, bias = self.unembed(self.layers[4](f)).split((1, 3), dim=1)
        return (k * xp - bias + xp)[..., :h0, :w0]
