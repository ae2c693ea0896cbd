"""Restormer (Zamir et al., CVPR 2022), written so TextPromptIR and DINO-IR can extend it.

The module and parameter names follow the authors' release (swz30/Restormer,
``basicsr/models/archs/restormer_arch.py``): ``patch_embed.proj``, ``encoder_level1..3``, ``latent``,
``down1_2``/``up4_3``-style resizers with a ``body``, ``reduce_chan_level3/2``, ``decoder_level3..1``,
``refinement``, ``output``; inside a block ``norm1.body``, ``attn.{temperature,qkv,qkv_dwconv,project_out}``,
``ffn.{project_in,dwconv,project_out}``. A released checkpoint therefore loads with ``strict=True``
(``tests/test_release_restormer_nafnet.py`` checks the keys, shapes and outputs against facts taken from the
release). With the defaults (the deraining / motion-deblurring config, ``LayerNorm_type='WithBias'``) the
parameter count is the original's 26,126,644; ``ln_bias=False`` is the release's ``BiasFree`` norm (its
Gaussian/real denoising configs) and ``dual_pixel=True`` its dual-pixel defocus-deblurring head.

Extension points: every transformer block is called as ``block(x, ctx)``: the plain block ignores ``ctx``,
TextPromptIR's block reads ``ctx['text']``. After each encoder level and the latent level the network calls
``self.fuse[name](h, ctx)`` for ``name`` in ``enc1, enc2, enc3, latent`` when such a module exists (DINO-IR's
D-R fusion lives there); ``context(x, **kw)`` builds ``ctx`` once per forward.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

FUSE_POINTS = ("enc1", "enc2", "enc3", "latent")


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


class ChannelNorm(nn.Module):
    """Restormer's block norm: a :class:`LayerNorm2d` kept under ``body`` (the release's key layout)."""

    def __init__(self, dim: int, bias: bool = True):
        super().__init__()
        self.body = LayerNorm2d(dim, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention: attention across channels, per head, with a learned temperature."""

    def __init__(self, dim: int, heads: int, bias: bool = False):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, 1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, 3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project_out((attn @ v).reshape(b, c, h, w))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network: GELU(dw(W1 x)) * dw(W2 x), projected back."""

    def __init__(self, dim: int, factor: float = 2.66, bias: bool = False):
        super().__init__()
        hidden = int(dim * factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, 1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, g = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(a) * g)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, ffn_factor: float = 2.66, bias: bool = False, ln_bias: bool = True):
        super().__init__()
        self.norm1, self.attn = ChannelNorm(dim, ln_bias), MDTA(dim, heads, bias)
        self.norm2, self.ffn = ChannelNorm(dim, ln_bias), GDFN(dim, ffn_factor, bias)

    def forward(self, x: torch.Tensor, ctx: dict | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Stage(nn.ModuleList):
    """A list of blocks called in order with the shared context."""

    def forward(self, x: torch.Tensor, ctx: dict) -> torch.Tensor:  # type: ignore[override]
        for blk in self:
            x = blk(x, ctx)
        return x


class PatchEmbed(nn.Module):
    """3x3 convolution to ``dim`` channels (the release's ``OverlapPatchEmbed``, weights under ``proj``)."""

    def __init__(self, in_ch: int, dim: int, bias: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_ch, dim, 3, padding=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


class Down(nn.Module):
    """Halve the resolution, double the channels: conv to C/2 then pixel-unshuffle."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class Up(nn.Module):
    """Double the resolution, halve the channels: conv to 2C then pixel-shuffle."""

    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(c, c * 2, 3, padding=1, bias=False), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


BlockFactory = Callable[[int, int], nn.Module]


class Restormer(nn.Module):
    """Four-level Restormer U-Net. ``block`` builds one block: ``block(dim, heads) -> nn.Module``.

    ``decoder_heads`` gives the heads of (decoder_level3, decoder_level2, decoder_level1, refinement); by
    default ``(heads[2], heads[1], heads[0], heads[0])`` as in the Restormer release.
    ``residual=False`` drops the global input skip; ``dual_pixel=True`` is the release's dual-pixel defocus
    deblurring variant (a ``skip_conv`` from the embedding and no input skip; use ``in_ch=6``).
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 3, dim: int = 48, blocks: Sequence[int] = (4, 6, 6, 8),
                 refine: int = 4, heads: Sequence[int] = (1, 2, 4, 8), ffn_factor: float = 2.66, bias: bool = False,
                 ln_bias: bool = True, block: BlockFactory | None = None, residual: bool = True,
                 decoder_heads: Sequence[int] | None = None, dual_pixel: bool = False):
        super().__init__()
        if len(blocks) != 4 or len(heads) != 4:
            raise ValueError(f"Restormer needs 4 block counts and 4 head counts, got {tuple(blocks)} and "
                             f"{tuple(heads)}")
        block = block or (lambda d, h: TransformerBlock(d, h, ffn_factor, bias, ln_bias))
        dh = tuple(decoder_heads) if decoder_heads is not None else (heads[2], heads[1], heads[0], heads[0])
        if len(dh) != 4:
            raise ValueError(f"decoder_heads needs 4 entries (dec3, dec2, dec1, refinement), got {dh}")
        d1, d2, d3, d4 = dim, dim * 2, dim * 4, dim * 8
        self.dims = (d1, d2, d3, d4)
        self.residual, self.dual_pixel = residual, dual_pixel

        def stage(d: int, h: int, n: int) -> Stage:
            return Stage(block(d, h) for _ in range(n))

        self.patch_embed = PatchEmbed(in_ch, d1)
        self.encoder_level1 = stage(d1, heads[0], blocks[0])
        self.down1_2 = Down(d1)
        self.encoder_level2 = stage(d2, heads[1], blocks[1])
        self.down2_3 = Down(d2)
        self.encoder_level3 = stage(d3, heads[2], blocks[2])
        self.down3_4 = Down(d3)
        self.latent = stage(d4, heads[3], blocks[3])
        self.up4_3 = Up(d4)
        self.reduce_chan_level3 = nn.Conv2d(d4, d3, 1, bias=bias)
        self.decoder_level3 = stage(d3, dh[0], blocks[2])
        self.up3_2 = Up(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, 1, bias=bias)
        self.decoder_level2 = stage(d2, dh[1], blocks[1])
        self.up2_1 = Up(d2)
        self.decoder_level1 = stage(d2, dh[2], blocks[0])
        self.refinement = stage(d2, dh[3], refine)
        if dual_pixel:
            self.skip_conv = nn.Conv2d(d1, d2, 1, bias=bias)
        self.output = nn.Conv2d(d2, out_ch, 3, padding=1, bias=bias)
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
        emb = self.patch_embed(x)
        e1 = self._fuse("enc1", self.encoder_level1(emb, ctx), ctx)
        e2 = self._fuse("enc2", self.encoder_level2(self.down1_2(e1), ctx), ctx)
        e3 = self._fuse("enc3", self.encoder_level3(self.down2_3(e2), ctx), ctx)
        lat = self._fuse("latent", self.latent(self.down3_4(e3), ctx), ctx)
        d3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(lat), e3], 1)), ctx)
        d2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], 1)), ctx)
        d1 = self.refinement(self.decoder_level1(torch.cat([self.up2_1(d2), e1], 1), ctx), ctx)
        if self.dual_pixel:
            return self.output(d1 + self.skip_conv(emb))
        y = self.output(d1)
        return y + x if self.residual else y


TINY = dict(dim=8, blocks=(1, 1, 1, 1), refine=1, heads=(1, 1, 2, 2))
"""A Restormer small enough for CPU smoke runs (same code path)."""
