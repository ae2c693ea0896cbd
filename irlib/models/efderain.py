"""EfDeRain (Guo et al., AAAI 2021), the deraining baseline DiffLoss retrains (Tables 1 and 2).

Pixel-wise dilation filtering: a plain conv U-Net (average-pool down, bilinear up, three 3x3 conv+ReLU per
stage) predicts, for every pixel and colour channel, a 3x3 kernel (27 maps). The same kernels filter the
rainy image at dilation rates 1, 2, 3 and 4 (zero padding); the four filtered images are fused by one 3x3
conv into the output. Defaults are the release's (``color``, one kernel size 3, no attention, no core bias;
Xavier-normal init with gain 0.02). Parameter names follow the release so its checkpoints load; inputs must
be multiples of 16 (use ``pad_to=16``).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Basic(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU())

    def forward(self, x):
        return self.conv1(x)


def dilated_pixel_filter(x: torch.Tensor, kernels: torch.Tensor, rate: int) -> torch.Tensor:
    """Filter ``x`` (B, C, H, W) with per-pixel, per-channel k x k kernels ``kernels`` (B, C, k*k, H, W),
    taps ``rate`` pixels apart (zero padding)."""
    k = int(round(kernels.shape[2] ** 0.5))
    h, w = x.shape[-2:]
    p = (k // 2) * rate
    xp = F.pad(x, (p, p, p, p))
    taps = torch.stack([xp[..., i * rate:i * rate + h, j * rate:j * rate + w] for i in range(k) for j in range(k)], 2)
    return (taps * kernels).sum(2)


class EfDeRain(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (64, 128, 256, 512, 512), kernel: int = 3, rates: tuple[int, ...] = (1, 2, 3, 4)):
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        out = 3 * kernel * kernel
        self.kernel, self.rates = kernel, rates
        self.conv1, self.conv2, self.conv3 = Basic(3, w1), Basic(w1, w2), Basic(w2, w3)
        self.conv4, self.conv5 = Basic(w3, w4), Basic(w4, w5)
        self.conv6, self.conv7, self.conv8 = Basic(w4 + w5, w4), Basic(w3 + w4, w3), Basic(w2 + w3, out)
        self.outc = nn.Conv2d(out, out, 1)
        self.conv_final = nn.Conv2d(3 * len(rates), 3, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_normal_(m.weight, gain=0.02)

    def kernels(self, x: torch.Tensor) -> torch.Tensor:
        """The predicted per-pixel kernels, (B, 3, k*k, H, W)."""
        if x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"EfDeRain needs height and width divisible by 16, got {tuple(x.shape[-2:])} (pad_to=16)")
        up = lambda t: F.interpolate(t, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
        c1 = self.conv1(x)
        c2 = self.conv2(F.avg_pool2d(c1, 2))
        c3 = self.conv3(F.avg_pool2d(c2, 2))
        c4 = self.conv4(F.avg_pool2d(c3, 2))
        c5 = self.conv5(F.avg_pool2d(c4, 2))
        c6 = self.conv6(torch.cat([c4, up(c5)], 1))
        c7 = self.conv7(torch.cat([c3, up(c6)], 1))
        c8 = self.conv8(torch.cat([c2, up(c7)], 1))
        core = self.outc(up(c8))
        b, _, h, w = x.shape
        return core.view(b, 3, self.kernel * self.kernel, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = self.kernels(x)
        return self.conv_final(torch.cat([dilated_pixel_filter(x, k, r) for r in self.rates], 1))
