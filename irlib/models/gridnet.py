"""GridDehazeNet (Liu et al., ICCV 2019), "GridNet" in DiffLoss Table 4 (the ablation backbone).

A grid of residual dense blocks (RDBs): ``height`` rows at successively halved resolution and doubled
width, ``width`` columns. The left half of the grid moves down through strided conv pairs, the right half
up through transposed convs; where two streams meet they are fused with learned per-channel weights (the
paper's "attention-based" fusion, parameter ``coefficient``). Pre-processing is a conv and an RDB, post-
processing an RDB and a conv followed by ReLU (no global skip, as released). Defaults (height 3, width 6,
16 channels, 4 dense layers of growth 16) give 958,051 parameters: 955,747 without the 2,304 fusion
weights, which is the paper's 0.956M (its count evidently leaves them out). Parameter names follow the
authors' release, so its checkpoints load.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Dense(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, growth, 3, padding=1)

    def forward(self, x):
        return torch.cat([x, F.relu(self.conv(x))], 1)


class RDB(nn.Module):
    """Residual dense block: ``layers`` densely connected 3x3 convs, a 1x1 fusion conv, a skip."""

    def __init__(self, c: int, layers: int = 4, growth: int = 16):
        super().__init__()
        self.residual_dense_layers = nn.Sequential(*[_Dense(c + i * growth, growth) for i in range(layers)])
        self.conv_1x1 = nn.Conv2d(c + layers * growth, c, 1)

    def forward(self, x):
        return x + self.conv_1x1(self.residual_dense_layers(x))


class _Down(nn.Module):
    def __init__(self, c: int, stride: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, stride=stride, padding=1)
        self.conv2 = nn.Conv2d(c, stride * c, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))))


class _Up(nn.Module):
    def __init__(self, c: int, stride: int = 2):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(c, c, 3, stride=stride, padding=1)
        self.conv = nn.Conv2d(c, c // stride, 3, padding=1)

    def forward(self, x, size):
        return F.relu(self.conv(F.relu(self.deconv(x, output_size=size))))


class GridDehazeNet(nn.Module):
    def __init__(self, in_channels: int = 3, depth_rate: int = 16, height: int = 3, width: int = 6,
                 num_dense_layer: int = 4, growth_rate: int = 16, stride: int = 2, attention: bool = True):
        super().__init__()
        if width < 4 or width % 2:
            raise ValueError(f"width must be even and at least 4, got {width}")
        self.height, self.width, self.depth, self.stride = height, width, depth_rate, stride
        c = lambda i: depth_rate * stride ** i  # noqa: E731  channels of row i
        self.coefficient = nn.Parameter(torch.ones(height, width, 2, c(height - 1)), requires_grad=attention)
        self.conv_in = nn.Conv2d(in_channels, depth_rate, 3, padding=1)
        self.conv_out = nn.Conv2d(depth_rate, in_channels, 3, padding=1)
        self.rdb_in = RDB(depth_rate, num_dense_layer, growth_rate)
        self.rdb_out = RDB(depth_rate, num_dense_layer, growth_rate)
        self.rdb_module = nn.ModuleDict({f"{i}_{j}": RDB(c(i), num_dense_layer, growth_rate)
                                         for i in range(height) for j in range(width - 1)})
        self.downsample_module = nn.ModuleDict({f"{i}_{j}": _Down(c(i), stride)
                                                for i in range(height - 1) for j in range(width // 2)})
        self.upsample_module = nn.ModuleDict({f"{i}_{j}": _Up(c(i + 1), stride)
                                              for i in range(height - 2, -1, -1) for j in range(width // 2, width)})

    def _fuse(self, i: int, j: int, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        n = self.depth * self.stride ** i
        w = self.coefficient[i, j, :, :n]
        return w[0].view(1, n, 1, 1) * a + w[1].view(1, n, 1, 1) * b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W, half = self.height, self.width, self.width // 2
        rdb, down, up = self.rdb_module, self.downsample_module, self.upsample_module
        g: dict[tuple[int, int], torch.Tensor] = {(0, 0): self.rdb_in(self.conv_in(x))}
        for j in range(1, half):                                         # top row, left half
            g[0, j] = rdb[f"0_{j - 1}"](g[0, j - 1])
        for i in range(1, H):                                            # first column, going down
            g[i, 0] = down[f"{i - 1}_0"](g[i - 1, 0])
        for i in range(1, H):                                            # left half: right + down streams
            for j in range(1, half):
                g[i, j] = self._fuse(i, j, rdb[f"{i}_{j - 1}"](g[i, j - 1]), down[f"{i - 1}_{j}"](g[i - 1, j]))
        for j in range(half, W):                                         # bottom row, right half
            g[H - 1, j] = rdb[f"{H - 1}_{j - 1}"](g[H - 1, j - 1])
        for i in range(H - 2, -1, -1):                                   # right half: right + up streams
            for j in range(half, W):
                g[i, j] = self._fuse(i, j, rdb[f"{i}_{j - 1}"](g[i, j - 1]), up[f"{i}_{j}"](g[i + 1, j], g[i, j - 1].shape[-2:]))
        return F.relu(self.conv_out(self.rdb_out(g[0, W - 1])))
