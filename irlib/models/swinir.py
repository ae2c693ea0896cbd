"""SwinIR (Liang et al., ICCVW 2021) for super-resolution: shifted-window transformer blocks grouped in
residual Swin transformer blocks (RSTB).

The module tree and ``state_dict`` match the authors' release (``JingyunLiang/SwinIR``,
``models/network_swinir.py``) key for key, persistent buffers included, so the released ``.pth`` files load
with ``strict=True`` through :func:`irlib.models.release.load_release` (they keep the weights under ``params``):

* ``SwinIR.light(scale)``: the lightweight model (dim 60, 4 RSTBs x 6 blocks, 6 heads, window 8, MLP ratio 2,
  one-step pixel-shuffle upsampler, trained on 64x64 LR patches).
* ``SwinIR.classical(scale)``: the classical model (dim 180, 6 RSTBs x 6 blocks, ``pixelshuffle`` upsampler:
  conv to 64 channels, LeakyReLU, conv+shuffle stages, last conv). ``training_patch=48`` is the DIV2K-trained
  release (``001_classicalSR_DIV2K_s48w8``, the SPN Table 1 baseline), ``64`` the DF2K one.
* ``SwinIR.tiny(scale)``: a 15K-parameter model of the same code path (x4) for CPU smoke runs.

Buffers. Every attention block stores ``relative_position_index`` and every shifted block its ``attn_mask``,
computed for the training resolution ``img_size`` (both persistent, as in the release, so they are part of
the checkpoint). At any other input size the mask is recomputed on the fly, so inference at other sizes is
exact. The RGB mean is a non-persistent buffer (the release keeps it as a plain attribute, outside the
``state_dict``). As in the release, a block whose training resolution is not larger than the window uses one
window of that size and no shift.

Parameter counts (verified by instantiating the release definition): light x2/x3/x4 = 910,152 / 918,267 /
929,628; classical x4 = 11,900,199. The SwinIR paper prints 878K / 886K / 897K for the light models: those
are the counts without the 24 relative-position-bias tables (24 x 225 x 6 = 32,400 parameters), i.e.
877,752 / 885,867 / 897,228, which round to the printed figures exactly. ``count_params(m) -
relative_bias_params(m)`` gives the paper's convention.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .edsr import upsampler as shuffle_upsampler


def window_partition(x: torch.Tensor, w: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w*w, C)."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_reverse(win: torch.Tensor, w: int, h: int, wd: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    b = win.shape[0] // ((h // w) * (wd // w))
    x = win.view(b, h // w, wd // w, w, w, -1).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, -1)


def relative_position_index(window: int) -> torch.Tensor:
    """(w*w, w*w) index into the ((2w-1)^2, heads) bias table for every (query, key) pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shift_mask(h: int, w: int, window: int, shift: int, device=None) -> torch.Tensor:
    """Additive attention mask (-100 across regions) for shifted windows, shape (nW, w*w, w*w)."""
    img = torch.zeros(1, h, w, 1, device=device)
    cnt = 0
    for hs in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for ws in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            img[:, hs, ws, :] = cnt
            cnt += 1
    win = window_partition(img, window).squeeze(-1)
    m = win[:, None, :] - win[:, :, None]
    return m.masked_fill(m != 0, -100.0).masked_fill(m == 0, 0.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative-position bias table."""

    def __init__(self, dim: int, heads: int, window: int):
        super().__init__()
        self.heads, self.window, self.scale = heads, window, (dim // heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.register_buffer("relative_position_index", relative_position_index(window))
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        bw, n, c = x.shape
        q, k, v = self.qkv(x).view(bw, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.heads, n, n) + mask[None, :, None]
            attn = attn.view(bw, self.heads, n, n)
        return self.proj((attn.softmax(-1) @ v).transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """(Shifted-)window attention + MLP, pre-norm. ``resolution`` is the training token grid: the stored
    ``attn_mask`` belongs to it; other sizes get a freshly computed mask."""

    def __init__(self, dim: int, heads: int, window: int, shift: int, mlp_ratio: float, resolution: tuple[int, int]):
        super().__init__()
        if min(resolution) <= window:  # the release's rule: one window covering the (small) training grid
            window, shift = min(resolution), 0
        if not 0 <= shift < window:
            raise ValueError(f"shift {shift} must lie in [0, window={window})")
        self.window, self.shift, self.resolution = window, shift, tuple(resolution)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        if shift:
            self.register_buffer("attn_mask", shift_mask(*self.resolution, window, shift))
        else:
            self.attn_mask = None

    def _mask(self, hw: tuple[int, int], device) -> torch.Tensor | None:
        if not self.shift:
            return None
        if tuple(hw) == self.resolution:
            return self.attn_mask
        return shift_mask(*hw, self.window, self.shift, device)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        h, w = hw
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, (-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), self._mask(hw, x.device))
        y = window_reverse(y, self.window, h, w)
        if self.shift:
            y = torch.roll(y, (self.shift, self.shift), dims=(1, 2))
        x = x + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class BasicLayer(nn.Module):
    """A stack of Swin blocks alternating plain and shifted windows."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, resolution: tuple[int, int]):
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(dim, heads, window, 0 if i % 2 == 0 else window // 2, mlp_ratio, resolution)
                                    for i in range(depth))

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, hw)
        return x


class RSTB(nn.Module):
    """Residual Swin transformer block: Swin blocks, a 3x3 conv on the token image, a skip."""

    def __init__(self, dim: int, depth: int, heads: int, window: int, mlp_ratio: float, resolution: tuple[int, int]):
        super().__init__()
        self.residual_group = BasicLayer(dim, depth, heads, window, mlp_ratio, resolution)
        self.conv = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        y = self.residual_group(x, hw)
        b, _, c = y.shape
        y = self.conv(y.transpose(1, 2).reshape(b, c, *hw)).flatten(2).transpose(1, 2)
        return x + y


class PatchEmbed(nn.Module):
    """Feature map -> token sequence, then layer norm (patch size 1: no parameters besides the norm)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


class SwinIR(nn.Module):
    """SwinIR for SR. Input and output are RGB in [0, 1] (``img_range`` scales the mean-shifted input, 1 in
    every SR release). ``img_size`` is the training LR patch size: it fixes the stored shift masks."""

    def __init__(self, scale: int = 4, dim: int = 60, depths: Sequence[int] = (6, 6, 6, 6),
                 heads: Sequence[int] = (6, 6, 6, 6), window: int = 8, mlp_ratio: float = 2.0,
                 upsampler: str = "pixelshuffledirect", rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040),
                 img_size: int | tuple[int, int] = 64, img_range: float = 1.0, num_feat: int = 64):
        super().__init__()
        if upsampler not in ("pixelshuffledirect", "pixelshuffle"):
            raise ValueError(f"upsampler must be 'pixelshuffledirect' or 'pixelshuffle', got {upsampler!r}")
        if len(depths) != len(heads):
            raise ValueError(f"depths {tuple(depths)} and heads {tuple(heads)} differ in length")
        res = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.scale, self.window, self.img_range, self.upsampler = scale, window, img_range, upsampler
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, dim, 3, padding=1)
        self.patch_embed = PatchEmbed(dim)
        self.layers = nn.ModuleList(RSTB(dim, d, h, window, mlp_ratio, res) for d, h in zip(depths, heads))
        self.norm = nn.LayerNorm(dim)
        self.conv_after_body = nn.Conv2d(dim, dim, 3, padding=1)
        if upsampler == "pixelshuffledirect":
            self.upsample = nn.Sequential(nn.Conv2d(dim, 3 * scale ** 2, 3, padding=1), nn.PixelShuffle(scale))
        else:
            self.conv_before_upsample = nn.Sequential(nn.Conv2d(dim, num_feat, 3, padding=1), nn.LeakyReLU(inplace=True))
            self.upsample = shuffle_upsampler(num_feat, scale)
            self.conv_last = nn.Conv2d(num_feat, 3, 3, padding=1)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    @classmethod
    def light(cls, scale: int = 4) -> "SwinIR":
        """Lightweight SwinIR (``002_lightweightSR_DIV2K_s64w8_SwinIR-S_x{scale}``)."""
        return cls(scale)

    @classmethod
    def classical(cls, scale: int = 4, training_patch: int = 48) -> "SwinIR":
        """Classical SwinIR-M (``001_classicalSR_DIV2K_s48w8`` by default, ``training_patch=64`` for DF2K)."""
        return cls(scale, dim=180, depths=(6,) * 6, heads=(6,) * 6, upsampler="pixelshuffle", img_size=training_patch)

    @classmethod
    def tiny(cls, scale: int = 4, upsampler: str = "pixelshuffledirect") -> "SwinIR":
        """A small model of the same code path for CPU smoke runs (dim 12, 2 RSTBs of 2 blocks, window 4)."""
        return cls(scale, dim=12, depths=(2, 2), heads=(2, 2), window=4, upsampler=upsampler, img_size=16, num_feat=16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        x = F.pad(x, (0, (-w0) % self.window, 0, (-h0) % self.window), mode="reflect")
        x = (x - self.mean) * self.img_range
        f = self.conv_first(x)
        hw = tuple(f.shape[-2:])
        t = self.patch_embed(f)
        for layer in self.layers:
            t = layer(t, hw)
        t = self.norm(t).transpose(1, 2).reshape(f.shape)
        y = self.conv_after_body(t) + f
        if self.upsampler == "pixelshuffle":
            y = self.conv_last(self.upsample(self.conv_before_upsample(y)))
        else:
            y = self.upsample(y)
        y = y / self.img_range + self.mean
        return y[..., : h0 * self.scale, : w0 * self.scale]


def relative_bias_params(model: nn.Module) -> int:
    """Parameters in relative-position-bias tables (left out of the SwinIR paper's printed counts)."""
    return sum(p.numel() for k, p in model.named_parameters() if k.endswith("relative_position_bias_table"))
