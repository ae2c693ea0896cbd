"""Restormer (Zamir et al., CVPR 2022), written so TextPromptIR and DINO-IR can extend it.

Every transformer block is called as ``block(x, ctx)``: the plain block ignores ``ctx``, TextPromptIR's
block reads ``ctx['text']``. After each encoder level and the latent level the network calls
``self.fuse[level](h, ctx)`` when such a module exists (DINO-IR's D-R fusion lives there).
With the defaults the parameter count is the original's 26,126,644.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of (B,C,H,W); ``bias=False`` is Restormer's BiasFree variant
    (which scales x without centring it)."""

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(dim=1, keepdim=True, unbiased=False)
        if self.bias is None:
            return x / torch.sqrt(var + self.eps) * self.weight[:, None, None]
        mu = x.mean(dim=1, keepdim=True)
        return (x - mu) / torch.sqrt(var + self.eps) * self.weight[:, None, None] + self.bias[:, None, None]


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention: attention across channels, per head, with a learned temperature."""

    def __init__(self, dim: int, heads: int, bias: bool = False):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dw = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.proj = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.proj((attn @ v).reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network: GELU(dw(W1 x)) * dw(W2 x), projected back."""

    def __init__(self, dim: int, factor: float = 2.66, bias: bool = False):
        super().__init__()
        hidden = int(dim * factor)
        self.proj_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dw = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.proj_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.dw(self.proj_in(x)).chunk(2, dim=1)
        return self.proj_out(F.gelu(a) * g)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_factor: float = 2.66, bias: bool = False, ln_bias: bool = True):
        super().__init__()
        self.norm1, self.attn = LayerNorm2d(dim, ln_bias), MDTA(dim, heads, bias)
        self.norm2, self.ffn = LayerNorm2d(dim, ln_bias), GDFN(dim, ffn_factor, bias)

    def forward(self, x: torch.Tensor, ctx: dict | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Stage(nn.ModuleList):
    """A list of blocks called in order with the shared context."""

    def forward(self, x: torch.Tensor, ctx: dict) -> torch.Tensor:  # type: ignore[override]
        for blk in self:
            x = blk(x, ctx)
        return x


class Down(nn.Sequential):
    def __init__(self, c: int):
        super().__init__(nn.Conv2d(c, c // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


class Up(nn.Sequential):
    def __init__(self, c: int):
        super().__init__(nn.Conv2d(c, c * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))


class Restormer(nn.Module):
    """Four-level Restormer U-Net. ``block`` builds one block: ``block(dim, heads) -> nn.Module``."""

    def __init__(self, in_ch: int = 3, out_ch: int = 3, dim: int = 48, blocks: Sequence[int] = (4, 6, 6, 8),
                 refine: int = 4, heads: Sequence[int] = (1, 2, 4, 8), ffn_factor: float = 2.66, bias: bool = False,
                 ln_bias: bool = True, block=None, residual: bool = True):
        super().__init__()
        block = block or (lambda d, h: TransformerBlock(d, h, ffn_factor, bias, ln_bias))
        d1, d2, d3, d4 = dim, dim * 2, dim * 4, dim * 8
        self.dims = (d1, d2, d3, d4)
        self.residual = residual
        self.embed = nn.Conv2d(in_ch, d1, 3, padding=1, bias=bias)
        self.enc1 = Stage(block(d1, heads[0]) for _ in range(blocks[0]))
        self.down12 = Down(d1)
        self.enc2 = Stage(block(d2, heads[1]) for _ in range(blocks[1]))
        self.down23 = Down(d2)
        self.enc3 = Stage(block(d3, heads[2]) for _ in range(blocks[2]))
        self.down34 = Down(d3)
        self.latent = Stage(block(d4, heads[3]) for _ in range(blocks[3]))
        self.up43 = Up(d4)
        self.reduce3 = nn.Conv2d(d4, d3, 1, bias=bias)
        self.dec3 = Stage(block(d3, heads[2]) for _ in range(blocks[2]))
        self.up32 = Up(d3)
        self.reduce2 = nn.Conv2d(d3, d2, 1, bias=bias)
        self.dec2 = Stage(block(d2, heads[1]) for _ in range(blocks[1]))
        self.up21 = Up(d2)
        self.dec1 = Stage(block(d2, heads[0]) for _ in range(blocks[0]))
        self.refine = Stage(block(d2, heads[0]) for _ in range(refine))
        self.out = nn.Conv2d(d2, out_ch, 3, padding=1, bias=bias)
        self.fuse = nn.ModuleDict()

    def _fuse(self, name: str, h: torch.Tensor, ctx: dict) -> torch.Tensor:
        return self.fuse[name](h, ctx) if name in self.fuse else h

    def context(self, x: torch.Tensor, **kw) -> dict:
        """Build the per-forward context (subclasses add text or DINO features)."""
        return dict(kw)

    def forward(self, x: torch.Tensor, **kw) -> torch.Tensor:
        if x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"Restormer needs H and W divisible by 8, got {tuple(x.shape[-2:])}; pad the input")
        ctx = self.context(x, **kw)
        e1 = self._fuse("enc1", self.enc1(self.embed(x), ctx), ctx)
        e2 = self._fuse("enc2", self.enc2(self.down12(e1), ctx), ctx)
        e3 = self._fuse("enc3", self.enc3(self.down23(e2), ctx), ctx)
        lat = self._fuse("latent", self.latent(self.down34(e3), ctx), ctx)
        d3 = self.dec3(self.reduce3(torch.cat([self.up43(lat), e3], 1)), ctx)
        d2 = self.dec2(self.reduce2(torch.cat([self.up32(d3), e2], 1)), ctx)
        d1 = self.dec1(torch.cat([self.up21(d2), e1], 1), ctx)
        y = self.out(self.refine(d1, ctx))
        return y + x if self.residual else y


TINY = dict(dim=8, blocks=(1, 1, 1, 1), refine=1, heads=(1, 1, 2, 2))
"""A Restormer small enough for CPU smoke runs (same code path)."""
