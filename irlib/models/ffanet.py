"""FFA-Net (Qin et al. 2020), the dehazing backbone of SPN Tables 3, 5 and 7.

Module names follow the authors' release (``zhilin007/FFA-Net``, ``net/models/FFA.py``): ``pre``, groups
``g1``..``gN`` (``gp.i`` blocks with ``conv1``, ``conv2``, ``calayer.ca``, ``palayer.pa``, then ``gp.N`` conv),
the group-attention ``ca``, ``palayer``, ``post``. The released ``{its,ots}_train_ffa_3_19.pk`` files keep a
DataParallel state dict under ``model``; :func:`irlib.models.release.load_release` unwraps both.
``FFANet()`` (3 groups of 19 blocks, 64 features) has 4,455,913 parameters, equal to the release's count.

Input convention of the release's ``test.py``: the hazy image is normalised with mean (0.64, 0.6, 0.58) and
std (0.14, 0.15, 0.152) before the network, and the global skip adds that normalised input back.
:data:`RELEASE_INPUT_NORM` holds those constants; the network itself is convention-free.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from .edsr import conv3

RELEASE_INPUT_NORM = {"mean": (0.64, 0.6, 0.58), "std": (0.14, 0.15, 0.152)}


class PALayer(nn.Module):
    """Pixel attention: a per-pixel sigmoid gate."""

    def __init__(self, c: int):
        super().__init__()
        self.pa = nn.Sequential(nn.Conv2d(c, c // 8, 1), nn.ReLU(inplace=True), nn.Conv2d(c // 8, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.pa(x)


class CALayer(nn.Module):
    """Channel attention: a per-channel sigmoid gate from globally pooled features."""

    def __init__(self, c: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.ca = nn.Sequential(nn.Conv2d(c, c // 8, 1), nn.ReLU(inplace=True), nn.Conv2d(c // 8, c, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.ca(self.avg_pool(x))


class Block(nn.Module):
    """conv-ReLU (+x), conv, channel then pixel attention, + x."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.act1, self.conv2 = conv3(c, c), nn.ReLU(inplace=True), conv3(c, c)
        self.calayer, self.palayer = CALayer(c), PALayer(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.act1(self.conv1(x)) + x
        return self.palayer(self.calayer(self.conv2(r))) + x


class Group(nn.Module):
    def __init__(self, c: int, n: int):
        super().__init__()
        self.gp = nn.Sequential(*[Block(c) for _ in range(n)], conv3(c, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gp(x) + x


class FFANet(nn.Module):
    """FFA-Net: ``groups`` groups of ``blocks`` blocks at ``dim`` features; group outputs are fused with
    learned per-group channel weights, then pixel attention and two convs, plus the input.
    The release has ``groups=3, blocks=19, dim=64`` (the defaults); :meth:`tiny` is for CPU smoke runs.

    ``input_norm=True`` applies the release's data pipeline inside the network: the hazy input is normalised
    with :data:`RELEASE_INPUT_NORM` first (and the final residual adds that normalised input, as the release's
    forward does); its training and test scripts both do this, so its checkpoints expect it. The constants are
    non-persistent buffers: the state dict stays the release's."""

    def __init__(self, groups: int = 3, blocks: int = 19, dim: int = 64, input_norm: bool = False):
        super().__init__()
        self.input_norm = input_norm
        self.register_buffer("norm_mean", torch.tensor(RELEASE_INPUT_NORM["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("norm_std", torch.tensor(RELEASE_INPUT_NORM["std"]).view(1, 3, 1, 1), persistent=False)
        if dim % 16:
            raise ValueError(f"dim must be a multiple of 16 (the fusion bottleneck is dim // 16), got {dim}")
        self.n, self.dim = groups, dim
        self.pre = nn.Sequential(conv3(3, dim))
        for i in range(groups):
            setattr(self, f"g{i + 1}", Group(dim, blocks))
        self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dim * groups, dim // 16, 1), nn.ReLU(inplace=True),
                                nn.Conv2d(dim // 16, dim * groups, 1), nn.Sigmoid())
        self.palayer = PALayer(dim)
        self.post = nn.Sequential(conv3(dim, dim), conv3(dim, 3))

    @classmethod
    def tiny(cls, **kw) -> "FFANet":
        """1 group of 2 blocks at 16 features."""
        return cls(1, 2, 16, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_norm:
            x = (x - self.norm_mean) / self.norm_std
        h = self.pre(x)
        outs = []
        for i in range(self.n):
            h = getattr(self, f"g{i + 1}")(h)
            outs.append(h)
        w = self.ca(torch.cat(outs, 1)).view(-1, self.n, self.dim, 1, 1)
        fused = sum(w[:, i] * outs[i] for i in range(self.n))
        return self.post(self.palayer(fused)) + x
