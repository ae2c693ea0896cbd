"""IDT, the Image Deraining Transformer (Xiao et al., TPAMI 2022): the deraining backbone SPN retrains
(SPN Table 2, Fig. 5).

A 5-level U-Net of transformer layers on token sequences. Each encoder/decoder layer stacks several
*window-based* transformer blocks (WTM: self-attention among the pixels of each 8x8 window) and one
*spatial-based* block (STM: for every channel separately, self-attention among the windows, each window's
64 pixel values being one token). Both attentions add a relative-position bias whose offsets are clipped
to +-(k-1) and a positional term computed by a depthwise conv from an extra value projection. The
feed-forward part is LeFF (linear, depthwise 3x3 conv with a skip, linear). Output = input + residual.

Parameter names follow the authors' release, so its checkpoints load with ``load_state_dict``.
Paper vs code: the released STM writes its result back in window-major token order and adds it to the
raster-ordered skip path, which scrambles pixel positions. We fold the windows back to their places
(``code_token_order=False``, default); ``code_token_order=True`` reproduces the release, which is what its
trained checkpoints expect. Each side must be a multiple of ``IDT.multiple``: every level's windows must tile
its feature map (128 for the release config, whose bottleneck has 8x8 windows at 1/16 scale; 64 when trained
on 64x64 crops); use ``pad_to`` in evaluation for other sizes. ``win_size`` sets the STM window too (the release
keeps its STM windows at 8 whatever ``win_size`` is; the two agree at the release's 8).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath


def _clipped_index(gh: int, gw: int, k: int, device=None) -> torch.Tensor:
    """(gh*gw, gh*gw) index into a (2k-1)^2 bias table, offsets clipped to +-(k-1)."""
    ys, xs = torch.meshgrid(torch.arange(gh, device=device), torch.arange(gw, device=device), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = (ys[:, None] - ys[None, :]).clamp(-(k - 1), k - 1) + (k - 1)
    dx = (xs[:, None] - xs[None, :]).clamp(-(k - 1), k - 1) + (k - 1)
    return dy * (2 * k - 1) + dx


class _QKV(nn.Module):
    """q from one linear map; k, v and the positional value v_r from another (the release's layout)."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, 3 * dim)


class IDTAttention(nn.Module):
    """Self-attention over a ``grid`` x ``grid`` token layout with clipped relative bias and a conv positional
    term. ``grid`` sets the positional conv's size (5x5 when the grid is at least 3 wide)."""

    def __init__(self, dim: int, heads: int, grid: int, k_bound: int = 8):
        super().__init__()
        self.heads, self.k = heads, k_bound
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * k_bound - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        reach = min(grid - 1, 2)
        self.Position_Extract = nn.Sequential(nn.Conv2d(dim, dim, 2 * reach + 1, padding=reach, groups=dim),
                                              nn.Conv2d(dim, dim, 1, groups=heads))
        self.qkv = _QKV(dim)
        self.proj = nn.Linear(dim, dim)
        self._index: dict[tuple, torch.Tensor] = {}

    def bias(self, gh: int, gw: int, device) -> torch.Tensor:
        key = (gh, gw, str(device))
        if key not in self._index:
            self._index[key] = _clipped_index(gh, gw, self.k, device)
        n = gh * gw
        return self.relative_position_bias_table[self._index[key].view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, gh: int, gw: int) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.heads
        q = self.qkv.to_q(x).view(b, n, self.heads, d).transpose(1, 2)
        k, v, v_pos = self.qkv.to_kv(x).view(b, n, 3, c).unbind(2)
        k, v = (t.view(b, n, self.heads, d).transpose(1, 2) for t in (k, v))
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias(gh, gw, x.device).unsqueeze(0).to(q.dtype))
        pos = self.Position_Extract(v_pos.transpose(1, 2).reshape(b, c, gh, gw)).flatten(2).transpose(1, 2)
        return self.proj(o.transpose(1, 2).reshape(b, n, c) + pos)


class LeFF(nn.Module):
    """Locally-enhanced feed-forward: linear+GELU, depthwise 3x3 conv+GELU with a skip, linear."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.linear1 = nn.Sequential(nn.Linear(dim, hidden), nn.GELU())
        self.dwconv = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden), nn.GELU())
        self.linear2 = nn.Sequential(nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, _ = x.shape
        y = self.linear1(x)
        img = y.transpose(1, 2).reshape(b, -1, h, w)
        y = (self.dwconv(img) + img).flatten(2).transpose(1, 2)
        return self.linear2(y)


class WTMBlock(nn.Module):
    """Window-based transformer block: LN, attention inside each window, LN, LeFF (pre-norm residuals)."""

    def __init__(self, dim: int, heads: int, window: int, mlp_ratio: float = 4.0, drop_path: float = 0.0):
        super().__init__()
        self.window = window
        self.norm1 = nn.LayerNorm(dim)
        self.attn = IDTAttention(dim, heads, window, k_bound=8)  # the release builds every WTM with k=8
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = LeFF(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        s = self.window
        win = self.norm1(x).view(b, h // s, s, w // s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, s * s, c)
        y = self.attn(win, s, s).view(b, h // s, w // s, s, s, c).permute(0, 1, 3, 2, 4, 5).reshape(b, n, c)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class STMBlock(nn.Module):
    """Spatial-based transformer block: per channel, attention among the windows (token = a window's
    pixels), then LN + LeFF. No norm before the attention, as in the release."""

    def __init__(self, channels: int, heads: int, grid: int, k_bound: int, window: int = 8, mlp_ratio: float = 4.0,
                 drop_path: float = 0.0, code_token_order: bool = False):
        super().__init__()
        self.window, self.code_token_order = window, code_token_order
        self.attn = IDTAttention(window * window, heads, grid, k_bound)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = LeFF(channels, int(window * window * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, n, c = x.shape
        s = self.window
        gh, gw = h // s, w // s
        cols = F.unfold(x.transpose(1, 2).reshape(b, c, h, w), s, stride=s)          # (B, C*s*s, gh*gw)
        tokens = cols.view(b * c, s * s, gh * gw).transpose(1, 2)                    # (B*C, windows, s*s)
        y = self.attn(tokens, gh, gw).view(b, c, gh * gw, s * s)
        if self.code_token_order:
            y = y.permute(0, 2, 3, 1).reshape(b, n, c)
        else:
            y = F.fold(y.transpose(2, 3).reshape(b, c * s * s, gh * gw), (h, w), s, stride=s).flatten(2).transpose(1, 2)
        x = x + self.drop_path(y)
        return x + self.drop_path(self.mlp(self.norm2(x), h, w))


class IDTLayer(nn.Module):
    def __init__(self, dim: int, heads: int, res: int, n_wtm: int, k_bound: int | None, window: int,
                 mlp_ratio: float, drop_path: Sequence[float], code_token_order: bool):
        super().__init__()
        win = min(window, res)
        blocks: list[nn.Module] = [WTMBlock(dim, heads, win, mlp_ratio, drop_path[0]) for _ in range(n_wtm)]
        if k_bound is not None:
            blocks.append(STMBlock(dim, heads, res // window, k_bound, window, mlp_ratio, drop_path[-1], code_token_order))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, h, w)
        return x


class _Proj(nn.Module):
    def __init__(self, cin: int, cout: int, act: bool):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), *([nn.LeakyReLU(inplace=True)] if act else []))


class _Resample(nn.Module):
    def __init__(self, cin: int, cout: int, up: bool):
        super().__init__()
        if up:
            self.deconv = nn.Sequential(nn.ConvTranspose2d(cin, cout, 2, stride=2))
        else:
            self.conv = nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1))

    def forward(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        b, _, c = x.shape
        f = self.deconv if hasattr(self, "deconv") else self.conv
        return f(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)


class IDT(nn.Module):
    """IDT with the release's defaults: embed 32, heads (1,2,4,8,16,16,8,4,2), window 8, MLP ratio 4,
    WTM blocks per layer (3,3,2,2,1,1,2,2,3), STM clipping bounds (16,8,4,2,-,2,4,8,16), trained on
    128x128 crops (``img_size``, which fixes the window and positional-conv sizes per level)."""

    ENC_WTM = (3, 3, 2, 2)
    DEC_WTM = (1, 2, 2, 3)

    def __init__(self, img_size: int = 128, in_chans: int = 3, embed_dim: int = 32,
                 num_heads: Sequence[int] = (1, 2, 4, 8, 16, 16, 8, 4, 2), win_size: int = 8, mlp_ratio: float = 4.0,
                 drop_path_rate: float = 0.1, k_bounds: Sequence[int] = (16, 8, 4, 2),
                 wtm: Sequence[int] | None = None, code_token_order: bool = False):
        super().__init__()
        enc_n, dec_n = (tuple(wtm[:4]), tuple(wtm[5:])) if wtm else (self.ENC_WTM, self.DEC_WTM)
        mid_n = wtm[4] if wtm else 1
        self.win, self.img_size = win_size, img_size
        # the release: 2 per encoder layer, reversed in the decoder (on the CPU, so the net also builds on "meta")
        dpr = torch.linspace(0, drop_path_rate, 8, device="cpu").tolist()
        kw = dict(window=win_size, mlp_ratio=mlp_ratio, code_token_order=code_token_order)
        d = embed_dim
        self.input_proj = _Proj(in_chans, d, act=True)
        self.output_proj = _Proj(2 * d, in_chans, act=False)
        for i in range(4):
            setattr(self, f"encoderlayer_{i}", IDTLayer(d * 2 ** i, num_heads[i], img_size // 2 ** i, enc_n[i], k_bounds[i],
                                                        drop_path=dpr[2 * i:2 * i + 2], **kw))
            setattr(self, f"dowsample_{i}", _Resample(d * 2 ** i, d * 2 ** (i + 1), up=False))
        self.bottle = IDTLayer(d * 16, num_heads[4], img_size // 16, mid_n, None, drop_path=[drop_path_rate], **kw)
        rdpr = dpr[::-1]
        for i in range(4):
            lvl = 3 - i                                    # decoder i works at encoder level 3-i
            setattr(self, f"upsample_{i}", _Resample(d * 2 ** (lvl + 1) * (1 if i == 0 else 2), d * 2 ** lvl, up=True))
            setattr(self, f"decoderlayer_{i}", IDTLayer(d * 2 ** (lvl + 1), num_heads[5 + i], img_size // 2 ** lvl, dec_n[i],
                                                        k_bounds[lvl], drop_path=rdpr[2 * i:2 * i + 2], **kw))
        levels = [(i, getattr(self, f"encoderlayer_{i}")) for i in range(4)] + [(4, self.bottle)]
        levels += [(3 - i, getattr(self, f"decoderlayer_{i}")) for i in range(4)]
        self.multiple = math.lcm(16, *(2 ** lvl * blk.window for lvl, layer in levels for blk in layer.blocks))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        m = self.multiple
        if h % m or w % m:
            raise ValueError(f"IDT needs height and width divisible by {m}, got {h}x{w}; pad the input (pad_to={m})")
        y = self.input_proj.proj(x).flatten(2).transpose(1, 2)
        skips = []
        for i in range(4):
            y = getattr(self, f"encoderlayer_{i}")(y, h >> i, w >> i)
            skips.append(y)
            y = getattr(self, f"dowsample_{i}")(y, h >> i, w >> i)
        y = self.bottle(y, h >> 4, w >> 4)
        for i in range(4):
            lvl = 3 - i
            y = getattr(self, f"upsample_{i}")(y, h >> (lvl + 1), w >> (lvl + 1))
            y = getattr(self, f"decoderlayer_{i}")(torch.cat([y, skips[lvl]], -1), h >> lvl, w >> lvl)
        out = self.output_proj.proj(y.transpose(1, 2).reshape(b, -1, h, w))
        return x + out
