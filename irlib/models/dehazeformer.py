"""DehazeFormer (Song et al., TIP 2023) — the T/S/B dehazing transformers SPN retrains (Table 3).

Building blocks as the paper describes them: RescaleNorm (RLN: a layer norm over C,H,W whose mean/std are fed
back through 1x1 convs), window attention with a relative-position MLP on log-spaced offsets, shifted windows
by reflect padding (no attention mask), a depth-wise 5x5 conv branch on V, selective-kernel fusion of skips,
and the soft reconstruction ``K * I - B + I``.

Module names, persistent buffers (``relative_positions``) and initialisation follow the authors' release
(``IDKiro/DehazeFormer``, ``models/dehazeformer.py``): ``patch_embed.proj``, ``layer1..layer5.blocks.i``
(``norm1``, ``attn.{conv,V,proj,QK,attn.meta}``, ``mlp.mlp``), ``patch_merge1/2``, ``skip1/2``,
``patch_split1/2``, ``fusion1/2``, ``patch_unembed``. The released ``saved_models/<exp>/dehazeformer-*.pth``
hold a DataParallel state dict under ``state_dict``; :func:`irlib.models.release.load_release` unwraps it.

Value range: the release trains and tests on images mapped to [-1, 1] (``img * 2 - 1``). With
``signed_io=True`` the network maps a [0, 1] input to [-1, 1] and its output back, so released weights work
on irlib's [0, 1] data; the default (``False``) runs the network on [0, 1] directly, for training from scratch.

Parameter counts of :meth:`t`/:meth:`s`/:meth:`b`, equal to the release definition's: 687,404 / 1,284,884 /
2,517,612. The paper prints 0.686M / 1.283M / 2.514M: those leave out the RLN affine ``weight`` and ``bias``
(2 x dim per RLN: 960 / 1,632 / 3,264 parameters). Without them the counts are 686,444 / 1,283,252 /
2,514,348, which round to the printed figures exactly (verified by counting in the release definition; see
:func:`rln_affine_params`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .swinir import window_partition, window_reverse


def _trunc_normal_conv(m: nn.Conv2d, gain: float) -> None:
    fan_in = m.weight.shape[1] * m.weight[0, 0].numel()
    fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
    nn.init.trunc_normal_(m.weight, std=gain * math.sqrt(2.0 / (fan_in + fan_out)))
    if m.bias is not None:
        nn.init.zeros_(m.bias)


class RLN(nn.Module):
    """Rescale-norm: normalise over (C,H,W); returns (y, rescale, rebias) to re-apply the statistics."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(1, dim, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1, 1))
        self.meta1, self.meta2 = nn.Conv2d(1, dim, 1), nn.Conv2d(1, dim, 1)
        for meta, b in ((self.meta1, 1.0), (self.meta2, 0.0)):
            nn.init.trunc_normal_(meta.weight, std=0.02)
            nn.init.constant_(meta.bias, b)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = torch.sqrt((x - mean).pow(2).mean(dim=(1, 2, 3), keepdim=True) + self.eps)
        y = (x - mean) / std * self.weight + self.bias
        return y, self.meta1(std), self.meta2(mean)


def log_relative_positions(window: int) -> torch.Tensor:
    """(w*w, w*w, 2) signed log(1 + |offset|) between every pair of positions in a window."""
    c = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (c[:, :, None] - c[:, None, :]).permute(1, 2, 0).float()
    return torch.sign(rel) * torch.log1p(rel.abs())


class WindowAttention(nn.Module):
    """Attention within a window; the bias comes from an MLP (``meta``) on the log relative positions."""

    def __init__(self, dim: int, window: int, heads: int):
        super().__init__()
        self.dim, self.heads, self.scale = dim, heads, (dim // heads) ** -0.5
        self.register_buffer("relative_positions", log_relative_positions(window))
        self.meta = nn.Sequential(nn.Linear(2, 256), nn.ReLU(inplace=True), nn.Linear(256, heads))

    def forward(self, qkv: torch.Tensor) -> torch.Tensor:
        b, n, _ = qkv.shape
        q, k, v = qkv.view(b, n, 3, self.heads, self.dim // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1) + self.meta(self.relative_positions).permute(2, 0, 1).unsqueeze(0)
        return (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, self.dim)


class Attention(nn.Module):
    """Token mixer: window attention on (Q, K, V) plus a conv branch on V (``conv_type='DWConv'``: 5x5
    depth-wise; ``'Conv'``: two 3x3 convs on the input, as in DehazeFormer-M/L)."""

    def __init__(self, depth_total: int, dim: int, heads: int, window: int, shift: int, use_attn: bool,
                 conv_type: str = "DWConv"):
        super().__init__()
        if conv_type not in ("DWConv", "Conv"):
            raise ValueError(f"conv_type must be 'DWConv' or 'Conv', got {conv_type!r}")
        self.dim, self.window, self.shift, self.use_attn, self.conv_type = dim, window, shift, use_attn, conv_type
        if conv_type == "Conv":
            self.conv = nn.Sequential(nn.Conv2d(dim, dim, 3, padding=1, padding_mode="reflect"), nn.ReLU(inplace=True),
                                      nn.Conv2d(dim, dim, 3, padding=1, padding_mode="reflect"))
        else:
            self.conv = nn.Conv2d(dim, dim, 5, padding=2, groups=dim, padding_mode="reflect")
        if conv_type == "DWConv" or use_attn:
            self.V, self.proj = nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1)
        if use_attn:
            self.QK = nn.Conv2d(dim, dim * 2, 1)
            self.attn = WindowAttention(dim, window, heads)
        gain = (8 * depth_total) ** -0.25
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _trunc_normal_conv(m, 1.0 if m is getattr(self, "QK", None) else gain)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ws, s = self.window, self.shift
        ph, pw = (ws - h % ws) % ws, (ws - w % ws) % ws
        if s:
            return F.pad(x, (s, (ws - s + pw) % ws, s, (ws - s + ph) % ws), mode="reflect")
        return F.pad(x, (0, pw, 0, ph), mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.use_attn:
            return self.conv(x) if self.conv_type == "Conv" else self.proj(self.conv(self.V(x)))
        _, _, h, w = x.shape
        v = self.V(x)
        qkv = self._pad(torch.cat([self.QK(x), v], 1))
        ht, wt = qkv.shape[-2:]
        win = self.attn(window_partition(qkv.permute(0, 2, 3, 1), self.window))
        out = window_reverse(win, self.window, ht, wt)[:, self.shift:self.shift + h, self.shift:self.shift + w]
        return self.proj(self.conv(v) + out.permute(0, 3, 1, 2))


class Mlp(nn.Module):
    def __init__(self, depth_total: int, dim: int, hidden: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(dim, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, dim, 1))
        for m in self.mlp:
            if isinstance(m, nn.Conv2d):
                _trunc_normal_conv(m, (8 * depth_total) ** -0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(x)


class TransformerBlock(nn.Module):
    """RLN -> token mixer -> re-apply statistics, + x; then MLP, + x. Blocks without attention skip the RLN."""

    def __init__(self, depth_total: int, dim: int, heads: int, mlp_ratio: float, window: int, shift: int,
                 use_attn: bool, conv_type: str = "DWConv"):
        super().__init__()
        self.use_attn = use_attn
        self.norm1 = RLN(dim) if use_attn else nn.Identity()
        self.attn = Attention(depth_total, dim, heads, window, shift, use_attn, conv_type)
        self.mlp = Mlp(depth_total, dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.use_attn:
            y, rescale, rebias = self.norm1(x)
            x = x + self.attn(y) * rescale + rebias
        else:
            x = x + self.attn(x)
        return x + self.mlp(x)


class BasicLayer(nn.Module):
    """``depth`` blocks; the last ``attn_ratio * depth`` use attention; odd blocks shift by half a window."""

    def __init__(self, depth_total: int, dim: int, depth: int, heads: int, mlp_ratio: float, window: int,
                 attn_ratio: float, conv_type: str = "DWConv"):
        super().__init__()
        n_attn = attn_ratio * depth
        self.blocks = nn.ModuleList(
            TransformerBlock(depth_total, dim, heads, mlp_ratio, window, 0 if i % 2 == 0 else window // 2,
                             i >= depth - n_attn, conv_type) for i in range(depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return x


class PatchEmbed(nn.Module):
    """Strided conv (``patch`` = stride, ``kernel`` defaults to the stride), reflect padding."""

    def __init__(self, patch: int, cin: int, cout: int, kernel: int | None = None):
        super().__init__()
        kernel = kernel or patch
        self.proj = nn.Conv2d(cin, cout, kernel, stride=patch, padding=(kernel - patch + 1) // 2, padding_mode="reflect")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class PatchUnEmbed(nn.Module):
    """Conv to ``cout * patch^2`` channels, then pixel shuffle by ``patch``."""

    def __init__(self, patch: int, cout: int, cin: int, kernel: int = 1):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cin, cout * patch ** 2, kernel, padding=kernel // 2, padding_mode="reflect"),
                                  nn.PixelShuffle(patch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class SKFusion(nn.Module):
    """Selective-kernel fusion: softmax weights over ``height`` inputs from their pooled sum."""

    def __init__(self, dim: int, height: int = 2, reduction: int = 8):
        super().__init__()
        d = max(int(dim / reduction), 4)
        self.height = height
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.mlp = nn.Sequential(nn.Conv2d(dim, d, 1, bias=False), nn.ReLU(), nn.Conv2d(d, dim * height, 1, bias=False))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        x = torch.stack(feats, 1)                                  # (B, height, C, H, W)
        a = self.mlp(self.avg_pool(x.sum(1))).view(x.shape[0], self.height, -1, 1, 1).softmax(1)
        return (x * a).sum(1)


class DehazeFormer(nn.Module):
    """Five-stage U-shaped DehazeFormer; use :meth:`t`, :meth:`s`, :meth:`b` for the published sizes and
    :meth:`tiny` for CPU smoke runs. ``dims[1] == dims[3]`` and ``dims[0] == dims[4]`` (the skip fusions)."""

    def __init__(self, dims: Sequence[int] = (24, 48, 96, 48, 24), depths: Sequence[int] = (4, 4, 4, 2, 2),
                 heads: Sequence[int] = (2, 4, 6, 1, 1), mlp_ratios: Sequence[float] = (2, 4, 4, 2, 2),
                 attn_ratio: Sequence[float] = (0, 0.5, 1, 0, 0), window: int = 8,
                 conv_type: str = "DWConv", signed_io: bool = False):
        super().__init__()
        d = list(dims)
        if d[1] != d[3] or d[0] != d[4]:
            raise ValueError(f"dims must satisfy dims[1] == dims[3] and dims[0] == dims[4], got {tuple(d)}")
        total = sum(depths)
        self.patch_size, self.signed_io = 4, signed_io

        def layer(i: int) -> BasicLayer:
            return BasicLayer(total, d[i], depths[i], heads[i], mlp_ratios[i], window, attn_ratio[i], conv_type)

        self.patch_embed = PatchEmbed(1, 3, d[0], kernel=3)
        self.layer1 = layer(0)
        self.patch_merge1 = PatchEmbed(2, d[0], d[1])
        self.skip1 = nn.Conv2d(d[0], d[0], 1)
        self.layer2 = layer(1)
        self.patch_merge2 = PatchEmbed(2, d[1], d[2])
        self.skip2 = nn.Conv2d(d[1], d[1], 1)
        self.layer3 = layer(2)
        self.patch_split1 = PatchUnEmbed(2, d[3], d[2])
        self.fusion1 = SKFusion(d[3])
        self.layer4 = layer(3)
        self.patch_split2 = PatchUnEmbed(2, d[4], d[3])
        self.fusion2 = SKFusion(d[4])
        self.layer5 = layer(4)
        self.patch_unembed = PatchUnEmbed(1, 4, d[4], kernel=3)

    @classmethod
    def t(cls, **kw) -> "DehazeFormer":
        """DehazeFormer-T (depths 4,4,4,2,2)."""
        return cls(**kw)

    @classmethod
    def s(cls, **kw) -> "DehazeFormer":
        """DehazeFormer-S (depths 8,8,8,4,4)."""
        return cls(depths=(8, 8, 8, 4, 4), attn_ratio=(0.25, 0.5, 0.75, 0, 0), **kw)

    @classmethod
    def b(cls, **kw) -> "DehazeFormer":
        """DehazeFormer-B (depths 16,16,16,8,8)."""
        return cls(depths=(16, 16, 16, 8, 8), attn_ratio=(0.25, 0.5, 0.75, 0, 0), **kw)

    @classmethod
    def m(cls, **kw) -> "DehazeFormer":
        """DehazeFormer-M (depths 12,12,12,6,6; plain 3x3 conv branch instead of the depth-wise one)."""
        return cls(depths=(12, 12, 12, 6, 6), attn_ratio=(0.25, 0.5, 0.75, 0, 0), conv_type="Conv", **kw)

    @classmethod
    def tiny(cls, **kw) -> "DehazeFormer":
        """A 28,314-parameter model of the same code path (dims 8,16,24,16,8, window 4) for CPU smoke runs."""
        return cls((8, 16, 24, 16, 8), (1, 2, 2, 1, 1), (1, 2, 2, 1, 1), (2, 2, 2, 2, 2), (0, 0.5, 1, 0, 0), window=4, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        if self.signed_io:
            x = x * 2 - 1
        p = self.patch_size
        xp = F.pad(x, (0, (p - w0 % p) % p, 0, (p - h0 % p) % p), mode="reflect")
        f = self.layer1(self.patch_embed(xp))
        s1 = f
        f = self.layer2(self.patch_merge1(f))
        s2 = f
        f = self.patch_split1(self.layer3(self.patch_merge2(f)))
        f = self.fusion1([f, self.skip2(s2)]) + f
        f = self.patch_split2(self.layer4(f))
        f = self.fusion2([f, self.skip1(s1)]) + f
        k, bias = self.patch_unembed(self.layer5(f)).split((1, 3), dim=1)
        y = (k * xp - bias + xp)[..., :h0, :w0]
        return (y + 1) / 2 if self.signed_io else y


def rln_affine_params(model: nn.Module) -> int:
    """Parameters in the RLN affine ``weight``/``bias`` (left out of the DehazeFormer paper's counts)."""
    return sum(m.weight.numel() + m.bias.numel() for m in model.modules() if isinstance(m, RLN))
