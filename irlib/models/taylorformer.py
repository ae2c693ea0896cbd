"""MB-TaylorFormer (Qiu et al., ICCV 2023): the dehazing "TaylorFormer*" baseline DiffLoss retrains (Table 1).

A four-level U-Net of transformer stages. Every stage first embeds its input along ``paths`` branches: a chain
of depthwise *deformable* 3x3 convolutions (offsets from a depthwise 3x3 + 1x1 conv, clamped to
``offset_clamp``), each followed by a 1x1 conv and Hardswish, so branch k sees a (2k+1)-pixel receptive field.
Each branch runs its own stack of transformer blocks and a selective-kernel fusion (SKFF) mixes the branches.
Attention is the first-order Taylor expansion of softmax, linear in the number of pixels:
``out_i = (sum_j v_j + q_i (K^T V)) / (N + q_i . sum_j k_j)`` with q and k L2-normalised to norm ``qk_norm``,
scaled by a learned per-head temperature and gated by sigmoid(MSAR), a grouped conv over each head's
[q, k] maps with 3x3/5x5/7x7 kernels (the multi-scale attention refinement). The feed-forward is Restormer's
gated depthwise-conv FFN (expansion 2.66); norms are bias-free LayerNorms over channels.

Sizes, as released (``Dehazing/Options/MB-TaylorFormer-{B,L}.yml``): B has dims 24/48/72/96, blocks 2/3/3/4,
branches 2/2/2/2: 2,676,520 parameters (paper: 2.68M); L has blocks 4/6/6/8, branches 2/3/3/3: 7,432,472
(paper: 7.43M). DiffLoss does not say which size it trains; irlib uses B (:meth:`TaylorFormer.b`, the
class default): DiffLoss marks TaylorFormer as its efficient ("*") model, B is the smaller size, and B is the
size with the better published Dense-Haze result (16.66 dB / 0.56). DiffLoss's own retrained row (15.02 dB /
0.5178) matches neither published figure.

Release facts kept so its checkpoints load (``strict=True``) and compute the same function: parameter names;
the config's ``num_refinement_blocks`` is not read (the refinement stage has ``blocks[0]`` blocks at dims[1]);
stage norms are bias-free and stage convs bias-free whatever the config says; the level-1 decoder works at
dims[1] = 2 * dims[0] channels (the upsampled features concatenated with the encoder's). The MSAR kernel
split is fixed per head count (1, 2, 4 or 8 heads). Inputs must have sides divisible by 8 (pad in evaluation).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import DeformConv2d

# MSAR: {kernel size: heads using it} for each head count, as released.
MSAR_WINDOWS = {1: {3: 1}, 2: {3: 2}, 4: {3: 2, 5: 2}, 8: {3: 2, 5: 3, 7: 3}}

TINY = dict(dims=(8, 16, 24, 32), blocks=(1, 1, 1, 1), heads=(1, 2, 4, 8), paths=(2, 2, 2, 2))


class BiasFreeNorm(nn.Module):
    """LayerNorm over channels of a (B, C, H, W) map without a bias: x / sqrt(var + 1e-5) * weight."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        var = x.var(1, keepdim=True, unbiased=False)
        return x / torch.sqrt(var + 1e-5) * self.weight[:, None, None]


class _Norm(nn.Module):  # holds the norm as ``body`` (release key layout)
    def __init__(self, dim: int):
        super().__init__()
        self.body = BiasFreeNorm(dim)

    def forward(self, x):
        return self.body(x)


class GatedFFN(nn.Module):
    """1x1 to 2 x hidden, depthwise 3x3, GELU(first half) * second half, 1x1 back."""

    def __init__(self, dim: int, expansion: float = 2.66):
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, 2 * hidden, 1, bias=False)
        self.dwconv = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project_out = nn.Conv2d(hidden, dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.dwconv(self.project_in(x)).chunk(2, 1)
        return self.project_out(F.gelu(a) * b)


class MSAR(nn.Module):
    """Multi-scale attention refinement: per head, a conv over that head's [q, k] maps (2 x head_dim channels)
    gives one gating map; heads are split between 3x3/5x5/7x7 kernels by :data:`MSAR_WINDOWS`."""

    def __init__(self, head_dim: int, heads: int):
        super().__init__()
        if heads not in MSAR_WINDOWS:
            raise ValueError(f"MB-TaylorFormer's MSAR is defined for 1, 2, 4 or 8 heads, got {heads}")
        windows = MSAR_WINDOWS[heads]
        self.splits = [n * 2 * head_dim for n in windows.values()]
        self.conv_list = nn.ModuleList(nn.Conv2d(n * 2 * head_dim, n, k, padding=k // 2, groups=n)
                                       for k, n in windows.items())

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """q, k: (B, heads, head_dim, H, W) -> gate logits (B, heads, H, W)."""
        b, h, d, hh, ww = q.shape
        qk = torch.cat([q, k], 2).reshape(b, h * 2 * d, hh, ww)
        return torch.cat([conv(part) for conv, part in zip(self.conv_list, qk.split(self.splits, 1))], 1)


class TaylorAttention(nn.Module):
    """Linear attention from the first-order Taylor expansion of softmax, gated by :class:`MSAR`."""

    def __init__(self, dim: int, heads: int, qk_norm: float = 1.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by {heads} heads")
        self.heads, self.norm = heads, qk_norm
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.qkv_dwconv = nn.Conv2d(3 * dim, 3 * dim, 3, padding=1, groups=3 * dim, bias=False)
        self.project_out = nn.Conv2d(dim, dim, 1, bias=False)
        self.refine_att = MSAR(dim // heads, heads)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        d, n = c // self.heads, h * w
        q, k, v = (t.reshape(b, self.heads, d, n) for t in self.qkv_dwconv(self.qkv(x)).chunk(3, 1))
        q = q / (q.norm(dim=2, keepdim=True) / self.norm + 1e-6)        # per pixel, over the head's channels
        k = k / (k.norm(dim=2, keepdim=True) / self.norm + 1e-6)
        gate = torch.sigmoid(self.refine_att(q.reshape(b, self.heads, d, h, w), k.reshape(b, self.heads, d, h, w)))
        qt, vt = q.transpose(2, 3), v.transpose(2, 3)                       # (B, heads, N, d)
        num = vt.sum(2, keepdim=True) + qt @ (k @ vt)                       # (B, heads, N, d)
        den = n + qt @ k.sum(3, keepdim=True) + 1e-6                        # (B, heads, N, 1)
        out = num / den * self.temperature * gate.reshape(b, self.heads, n, 1)
        return self.project_out(out.transpose(2, 3).reshape(b, c, h, w))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, expansion: float, qk_norm: float):
        super().__init__()
        self.norm1, self.norm2 = _Norm(dim), _Norm(dim)
        self.attn = TaylorAttention(dim, heads, qk_norm)
        self.ffn = GatedFFN(dim, expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class _Branch(nn.Module):  # one branch's block stack (release name: MHCAEncoder)
    def __init__(self, dim: int, blocks: int, heads: int, expansion: float, qk_norm: float):
        super().__init__()
        self.MHCA_layers = nn.ModuleList(TransformerBlock(dim, heads, expansion, qk_norm) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.MHCA_layers:
            x = layer(x)
        return x


class SKFF(nn.Module):
    """Selective-kernel fusion: channel weights from the pooled branch sum, softmax across branches."""

    def __init__(self, dim: int, branches: int, reduction: int = 8):
        super().__init__()
        hidden = max(dim // reduction, 4)
        self.conv_du = nn.Sequential(nn.Conv2d(dim, hidden, 1, bias=False), nn.PReLU())
        self.fcs = nn.ModuleList(nn.Conv2d(hidden, dim, 1, bias=False) for _ in range(branches))

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        stack = torch.stack(feats, 1)                                       # (B, branches, C, H, W)
        z = self.conv_du(stack.sum(1).mean((2, 3), keepdim=True))
        weights = torch.stack([fc(z) for fc in self.fcs], 1).softmax(1)
        return (stack * weights).sum(1)


class Stage(nn.Module):
    """Branch stacks + fusion (release name: MHCA_stage); input is the list of branch embeddings."""

    def __init__(self, dim: int, blocks: int, heads: int, branches: int, expansion: float, qk_norm: float):
        super().__init__()
        self.mhca_blks = nn.ModuleList(_Branch(dim, blocks, heads, expansion, qk_norm) for _ in range(branches))
        self.aggregate = SKFF(dim, branches)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return self.aggregate([blk(x) for blk, x in zip(self.mhca_blks, inputs)])


class DeformEmbed(nn.Module):
    """Depthwise deformable 3x3 conv (offsets clamped), 1x1 conv, Hardswish (release name: DWConv2d_BN)."""

    def __init__(self, cin: int, cout: int, offset_clamp: tuple[float, float] | None):
        super().__init__()
        self.offset_clamp = offset_clamp
        self.offset_generator = nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                                              nn.Conv2d(cin, 18, 1, bias=False))
        self.dcn = DeformConv2d(cin, cin, 3, padding=1, groups=cin, bias=False)
        self.pwconv = nn.Conv2d(cin, cout, 1, bias=False)
        self.act = nn.Hardswish()
        for m in self.modules():  # He-normal over fan-out, as released
            if isinstance(m, (nn.Conv2d, DeformConv2d)):
                fan_out = m.weight.shape[0] * m.weight.shape[2] * m.weight.shape[3]
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = self.offset_generator(x)
        if self.offset_clamp:
            offset = offset.clamp(*self.offset_clamp)
        return self.act(self.pwconv(self.dcn(x, offset)))


class _EmbedWrap(nn.Module):  # release key layout: patch_embeds.<i>.patch_conv
    def __init__(self, cin: int, cout: int, offset_clamp):
        super().__init__()
        self.patch_conv = DeformEmbed(cin, cout, offset_clamp)

    def forward(self, x):
        return self.patch_conv(x)


class MultiScaleEmbed(nn.Module):
    """A chain of :class:`DeformEmbed`; every link's output is one branch's input (Patch_Embed_stage)."""

    def __init__(self, dim: int, branches: int, offset_clamp):
        super().__init__()
        self.patch_embeds = nn.ModuleList(_EmbedWrap(dim, dim, offset_clamp) for _ in range(branches))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for pe in self.patch_embeds:
            x = pe(x)
            out.append(x)
        return out


class _PatchEmbed(nn.Module):
    def __init__(self, cin: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(cin, dim, 3, padding=1, bias=False)

    def forward(self, x):
        return self.proj(x)


class Resample(nn.Module):
    """Depthwise 3x3, 1x1, then pixel-unshuffle (``down``) or pixel-shuffle by 2 (release Downsample/Upsample)."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1, groups=cin, bias=False),
                                  nn.Conv2d(cin, cout // 4 if down else cout * 4, 1, bias=False),
                                  nn.PixelUnshuffle(2) if down else nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class TaylorFormer(nn.Module):
    """MB-TaylorFormer; the defaults are the released B size (:meth:`b`), :meth:`l` the L size, :data:`TINY` a
    small size of the same code path. Input (B, 3, H, W) in [0, 1] with H, W divisible by 8; the output is the
    input plus a predicted residual (not clamped)."""

    def __init__(self, dims: tuple[int, int, int, int] = (24, 48, 72, 96), blocks: tuple[int, ...] = (2, 3, 3, 4),
                 heads: tuple[int, ...] = (1, 2, 4, 8), paths: tuple[int, ...] = (2, 2, 2, 2),
                 qk_norm: float = 0.5, offset_clamp: tuple[float, float] | None = (-3.0, 3.0),
                 ffn_expansion: float = 2.66, in_ch: int = 3):
        super().__init__()
        if len(dims) != 4 or len(blocks) != 4 or len(heads) != 4 or len(paths) != 4:
            raise ValueError("dims, blocks, heads and paths need one entry per level (4)")
        if dims[1] != 2 * dims[0]:
            raise ValueError(f"the level-1 decoder works at dims[1] = 2 * dims[0] channels, got dims {dims}")
        d0, d1, d2, d3 = dims
        oc = tuple(offset_clamp) if offset_clamp else None

        def stage(d: int, level: int) -> Stage:
            return Stage(d, blocks[level], heads[level], paths[level], ffn_expansion, qk_norm)

        self.patch_embed = _PatchEmbed(in_ch, d0)
        self.patch_embed_encoder_level1, self.encoder_level1 = MultiScaleEmbed(d0, paths[0], oc), stage(d0, 0)
        self.down1_2 = Resample(d0, d1, True)
        self.patch_embed_encoder_level2, self.encoder_level2 = MultiScaleEmbed(d1, paths[1], oc), stage(d1, 1)
        self.down2_3 = Resample(d1, d2, True)
        self.patch_embed_encoder_level3, self.encoder_level3 = MultiScaleEmbed(d2, paths[2], oc), stage(d2, 2)
        self.down3_4 = Resample(d2, d3, True)
        self.patch_embed_latent, self.latent = MultiScaleEmbed(d3, paths[3], oc), stage(d3, 3)
        self.up4_3 = Resample(d3, d2, False)
        self.reduce_chan_level3 = nn.Sequential(nn.Conv2d(2 * d2, d2, 1, bias=False))
        self.patch_embed_decoder_level3, self.decoder_level3 = MultiScaleEmbed(d2, paths[2], oc), stage(d2, 2)
        self.up3_2 = Resample(d2, d1, False)
        self.reduce_chan_level2 = nn.Sequential(nn.Conv2d(2 * d1, d1, 1, bias=False))
        self.patch_embed_decoder_level2, self.decoder_level2 = MultiScaleEmbed(d1, paths[1], oc), stage(d1, 1)
        self.up2_1 = Resample(d1, d0, False)
        self.patch_embed_decoder_level1 = MultiScaleEmbed(d1, paths[0], oc)
        self.decoder_level1 = Stage(d1, blocks[0], heads[0], paths[0], ffn_expansion, qk_norm)
        self.patch_embed_refinement = MultiScaleEmbed(d1, paths[0], oc)
        self.refinement = Stage(d1, blocks[0], heads[0], paths[0], ffn_expansion, qk_norm)
        self.output = nn.Sequential(nn.Conv2d(d1, in_ch, 3, padding=1, bias=False))

    @classmethod
    def b(cls, **kw) -> TaylorFormer:
        """MB-TaylorFormer-B as released (2,676,520 parameters)."""
        return cls(**kw)

    @classmethod
    def l(cls, **kw) -> TaylorFormer:
        """MB-TaylorFormer-L as released (7,432,472 parameters)."""
        return cls(blocks=(4, 6, 6, 8), paths=(2, 3, 3, 3), **kw)

    @classmethod
    def tiny(cls, **kw) -> TaylorFormer:
        """A small size of the same code path for CPU smoke runs (138,852 parameters)."""
        return cls(**{**TINY, **kw})

    @staticmethod
    def _level(embed: MultiScaleEmbed, stage: Stage, x: torch.Tensor) -> torch.Tensor:
        return stage(embed(x)) + x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[-1] % 8 or x.shape[-2] % 8:
            raise ValueError(f"TaylorFormer needs (B, C, H, W) with H and W divisible by 8, got {tuple(x.shape)} "
                             "(pad to a multiple of 8)")
        e1 = self._level(self.patch_embed_encoder_level1, self.encoder_level1, self.patch_embed(x))
        e2 = self._level(self.patch_embed_encoder_level2, self.encoder_level2, self.down1_2(e1))
        e3 = self._level(self.patch_embed_encoder_level3, self.encoder_level3, self.down2_3(e2))
        lat = self._level(self.patch_embed_latent, self.latent, self.down3_4(e3))
        d3 = self.reduce_chan_level3(torch.cat([self.up4_3(lat), e3], 1))
        d3 = self._level(self.patch_embed_decoder_level3, self.decoder_level3, d3)
        d2 = self.reduce_chan_level2(torch.cat([self.up3_2(d3), e2], 1))
        d2 = self._level(self.patch_embed_decoder_level2, self.decoder_level2, d2)
        d1 = self._level(self.patch_embed_decoder_level1, self.decoder_level1, torch.cat([self.up2_1(d2), e1], 1))
        d1 = self._level(self.patch_embed_refinement, self.refinement, d1)
        return self.output(d1) + x
