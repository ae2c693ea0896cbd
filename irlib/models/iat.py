"""IAT, the Illumination-Adaptive Transformer (Cui et al., BMVC 2022): the low-light baseline DiffLoss
retrains (DiffLoss Tables 1 and 2).

Two branches. The *local* branch predicts a per-pixel multiplier and offset (img * mul + add) with a
16-channel stem and two stacks of three light conv blocks (depthwise "attention" convs with a learned
colour-mixing affine normalisation). The *global* branch encodes a 4x-downsampled image, lets 10 learned
queries attend to it, and reads from them a gamma (query 0) and a 3x3 colour matrix (queries 1-9); the
output is clamp(ccm @ (img * mul + add)) ** gamma. The LOL model (``gamma`` learnable) has 91,154
parameters, the paper's 0.09M. Parameter names follow the authors' release so its weights load.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from timm.layers import DropPath


class AffChannel(nn.Module):
    """Channel-last affine normalisation with colour mixing: (x @ color^T) * alpha + beta."""

    def __init__(self, dim: int):
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))
        self.color = nn.Parameter(torch.eye(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, N, C)
        return (x @ self.color.t()) * self.alpha + self.beta


class _CMlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Conv2d(dim, hidden, 1), nn.GELU(), nn.Conv2d(hidden, dim, 1)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class CBlock(nn.Module):
    """Conv block of the local branch: positional dwconv, then two layer-scaled residual branches
    (1x1 -> depthwise 5x5 -> 1x1, and a 1x1 MLP), each after an AffChannel normalisation."""

    def __init__(self, dim: int = 16, drop_path: float = 0.0, init: float = 1e-4):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1, self.norm2 = AffChannel(dim), AffChannel(dim)
        self.conv1, self.conv2 = nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1)
        self.attn = nn.Conv2d(dim, dim, 5, padding=2, groups=dim)
        self.gamma_1 = nn.Parameter(torch.full((1, dim, 1, 1), init))
        self.gamma_2 = nn.Parameter(torch.full((1, dim, 1, 1), init))
        self.mlp = _CMlp(dim, 4 * dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    @staticmethod
    def _norm(norm: AffChannel, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        return norm(x.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.gamma_1 * self.conv2(self.attn(self.conv1(self._norm(self.norm1, x)))))
        return x + self.drop_path(self.gamma_2 * self.mlp(self._norm(self.norm2, x)))


class LocalBranch(nn.Module):
    def __init__(self, in_dim: int = 3, dim: int = 16, drop_paths=(0.01, 0.05, 0.1)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, dim, 3, padding=1)
        self.relu = nn.LeakyReLU(0.2, inplace=True)
        self.mul_blocks = nn.Sequential(*[CBlock(dim, d) for d in drop_paths])
        self.add_blocks = nn.Sequential(*[CBlock(dim, d) for d in drop_paths])
        self.mul_end = nn.Sequential(nn.Conv2d(dim, 3, 3, padding=1), nn.ReLU())
        self.add_end = nn.Sequential(nn.Conv2d(dim, 3, 3, padding=1), nn.Tanh())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # He init over fan-out, as released
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.relu(self.conv1(img))
        return self.mul_end(self.mul_blocks(f) + f), self.add_end(self.add_blocks(f) + f)


class _QueryAttention(nn.Module):
    """10 learned queries attend to the image tokens (no bias on k, v)."""

    def __init__(self, dim: int, heads: int, n_queries: int = 10):
        super().__init__()
        self.heads = heads
        self.q = nn.Parameter(torch.ones(1, n_queries, dim))
        self.k, self.v = nn.Linear(dim, dim, bias=False), nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        d = c // self.heads
        k, v = (f(x).view(b, n, self.heads, d).transpose(1, 2) for f in (self.k, self.v))
        q = self.q.expand(b, -1, -1).reshape(b, -1, self.heads, d).transpose(1, 2)
        o = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(o.transpose(1, 2).reshape(b, -1, c))


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _QueryBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = _QueryAttention(dim, heads)
        self.mlp = _Mlp(dim, 4 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.pos_embed(x)
        q = self.attn(self.norm1(x.flatten(2).transpose(1, 2)))  # the queries replace the tokens (no skip)
        return q + self.mlp(self.norm2(q))


class _ConvEmbedding(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(cin, cout // 2, 3, 2, 1), nn.BatchNorm2d(cout // 2), nn.GELU(),
                                  nn.Conv2d(cout // 2, cout, 3, 2, 1), nn.BatchNorm2d(cout))


class GlobalBranch(nn.Module):
    def __init__(self, in_dim: int = 3, dim: int = 64, heads: int = 4, learn_gamma: bool = True):
        super().__init__()
        self.gamma_base = nn.Parameter(torch.ones(1), requires_grad=learn_gamma)
        self.color_base = nn.Parameter(torch.eye(3))
        self.conv_large = _ConvEmbedding(in_dim, dim)
        self.generator = _QueryBlock(dim, heads)
        self.gamma_linear, self.color_linear = nn.Linear(dim, 1), nn.Linear(dim, 1)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.generator.attn.v.weight)  # starts as the identity colour matrix and gamma 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q = self.generator(self.conv_large.proj(x))
        gamma = self.gamma_linear(q[:, 0]) + self.gamma_base                    # (B, 1)
        color = self.color_linear(q[:, 1:]).view(-1, 3, 3) + self.color_base     # (B, 3, 3)
        return gamma, color


class IAT(nn.Module):
    """IAT for LOL (``learn_gamma=True``; the exposure-correction model fixes gamma_base at 1)."""

    def __init__(self, in_dim: int = 3, with_global: bool = True, learn_gamma: bool = True):
        super().__init__()
        self.local_net = LocalBranch(in_dim)
        self.with_global = with_global
        if with_global:
            self.global_net = GlobalBranch(in_dim, learn_gamma=learn_gamma)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        mul, add = self.local_net(img)
        out = img * mul + add
        if not self.with_global:
            return out
        gamma, color = self.global_net(img)
        out = torch.einsum("bij,bjhw->bihw", color, out).clamp(1e-8, 1.0)
        return out ** gamma[:, :, None, None]
