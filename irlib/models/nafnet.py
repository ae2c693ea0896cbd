"""NAFNet (Chen et al., ECCV 2022), the deblurring backbone of SPN Table 4, and its test-time local converter.

Module and parameter names follow the authors' release (megvii-research/NAFNet,
``basicsr/models/archs/NAFNet_arch.py``): ``intro``, ``encoders``, ``downs``, ``middle_blks``, ``ups``,
``decoders``, ``ending``; in a block ``norm1``/``norm2`` (LayerNorm2d ``weight``/``bias``), ``conv1..conv5``,
``sca`` (global pool, 1x1 conv), ``sg``, ``beta``, ``gamma``. A released checkpoint (e.g.
NAFNet-GoPro-width32) loads with ``strict=True``; ``tests/test_release_restormer_nafnet.py`` checks keys,
shapes and outputs against facts taken from the release.

:class:`NAFNetLocal` is the release's evaluation model for GoPro (TLC, Chu et al. 2021, "Revisiting global
statistics aggregation"): the global average pooling of every block's simplified channel attention becomes a
local average over a window equal to the *base size* (1.5 x the training crop) seen at that block's scale.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .restormer import LayerNorm2d


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """Nonlinear-activation-free block: LN, 1x1, depthwise 3x3, SimpleGate, simplified channel attention, 1x1,
    scaled residual (``beta``); then LN, 1x1, SimpleGate, 1x1, scaled residual (``gamma``)."""

    def __init__(self, c: int, dw_expand: int = 2, ffn_expand: int = 2, drop_out_rate: float = 0.0):
        super().__init__()
        dw, ffn = c * dw_expand, c * ffn_expand
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.sg = SimpleGate()
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.norm1, self.norm2 = LayerNorm2d(c, eps=1e-6), LayerNorm2d(c, eps=1e-6)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.sg(self.conv2(self.conv1(self.norm1(x))))
        h = self.dropout1(self.conv3(h * self.sca(h)))
        y = x + h * self.beta
        h = self.dropout2(self.conv5(self.sg(self.conv4(self.norm2(y)))))
        return y + h * self.gamma


class NAFNet(nn.Module):
    """NAFNet U-Net. Defaults are the GoPro width-32 model (enc 1,1,1,28; middle 1; dec 1,1,1,1; 17.11M).

    Inputs of any size are zero-padded (bottom/right) to a multiple of ``2**len(enc)`` and cropped back.
    """

    def __init__(self, width: int = 32, enc: Sequence[int] = (1, 1, 1, 28), middle: int = 1,
                 dec: Sequence[int] | None = None, img_channel: int = 3, drop_out_rate: float = 0.0):
        super().__init__()
        dec = tuple(dec) if dec is not None else (1,) * len(enc)
        if len(dec) != len(enc):
            raise ValueError(f"NAFNet needs as many decoder levels as encoder levels, got {len(enc)} and {len(dec)}")
        self.intro = nn.Conv2d(img_channel, width, 3, padding=1)
        self.ending = nn.Conv2d(width, img_channel, 3, padding=1)
        self.encoders, self.decoders, self.ups, self.downs = (nn.ModuleList() for _ in range(4))
        c = width
        for n in enc:
            self.encoders.append(nn.Sequential(*[NAFBlock(c, drop_out_rate=drop_out_rate) for _ in range(n)]))
            self.downs.append(nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle_blks = nn.Sequential(*[NAFBlock(c, drop_out_rate=drop_out_rate) for _ in range(middle)])
        for n in dec:
            self.ups.append(nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.decoders.append(nn.Sequential(*[NAFBlock(c, drop_out_rate=drop_out_rate) for _ in range(n)]))
        self.padder_size = 2 ** len(enc)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad H and W (bottom/right) up to a multiple of ``padder_size``."""
        h, w = x.shape[-2:]
        return F.pad(x, (0, (-w) % self.padder_size, 0, (-h) % self.padder_size))

    def levels(self) -> list[tuple[int, NAFBlock]]:
        """Every block with its scale level (0 = full resolution, ``len(encoders)`` = the middle)."""
        n = len(self.encoders)
        out = [(lv, b) for lv, stage in enumerate(self.encoders) for b in stage]
        out += [(n, b) for b in self.middle_blks]
        out += [(n - 1 - i, b) for i, stage in enumerate(self.decoders) for b in stage]
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h0, w0 = x.shape[-2:]
        xp = self.pad(x)
        h = self.intro(xp)
        skips = []
        for enc, down in zip(self.encoders, self.downs):
            h = enc(h)
            skips.append(h)
            h = down(h)
        h = self.middle_blks(h)
        for dec, up, s in zip(self.decoders, self.ups, reversed(skips)):
            h = dec(up(h) + s)
        return (self.ending(h) + xp)[..., :h0, :w0]


class LocalAvgPool2d(nn.Module):
    """TLC's local statistics: the mean over a ``kernel`` window around each position (stride 1, no padding),
    edge-replicated back to the input size; the global mean when the window covers the whole input."""

    def __init__(self, kernel: tuple[int, int]):
        super().__init__()
        self.kernel = (int(kernel[0]), int(kernel[1]))

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.kernel[0] >= h and self.kernel[1] >= w:
            return x.mean(dim=(-2, -1), keepdim=True)
        k = (min(h, self.kernel[0]), min(w, self.kernel[1]))
        out = F.avg_pool2d(x, k, stride=1)
        dh, dw = h - out.shape[-2], w - out.shape[-1]
        return F.pad(out, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="replicate")


def tlc_kernels(model: NAFNet, train_size: tuple[int, int] = (256, 256),
                base_scale: float = 1.5) -> list[tuple[int, int]]:
    """TLC's pooling window for every block of ``model`` (``levels()`` order), the release's rule: a block whose
    feature map is ``f`` rows high when the (padded) training crop goes through the network pools over
    ``f * base // train`` rows, ``base = int(base_scale * train)``; columns alike."""
    train = (int(train_size[0]), int(train_size[1]))
    base = (int(train[0] * base_scale), int(train[1] * base_scale))
    padded = [-(-t // model.padder_size) * model.padder_size for t in train]
    return [((padded[0] // 2 ** lv) * base[0] // train[0], (padded[1] // 2 ** lv) * base[1] // train[1])
            for lv, _ in model.levels()]


class NAFNetLocal(NAFNet):
    """NAFNet evaluated with test-time local statistics (TLC), as the release evaluates GoPro.

    Same parameters and state_dict as :class:`NAFNet`, so the same checkpoint loads. ``train_size`` (H, W) is the
    training crop (256 for GoPro); the base size is ``int(1.5 * train_size)``; windows per :func:`tlc_kernels`.
    For inputs no larger than the base size the network equals plain NAFNet.
    """

    def __init__(self, *args, train_size: tuple[int, int] = (256, 256), base_scale: float = 1.5, **kw):
        super().__init__(*args, **kw)
        self.train_size = (int(train_size[0]), int(train_size[1]))
        self.base_size = (int(self.train_size[0] * base_scale), int(self.train_size[1] * base_scale))
        for (_, blk), k in zip(self.levels(), tlc_kernels(self, self.train_size, base_scale)):
            blk.sca[0] = LocalAvgPool2d(k)

    def kernels(self) -> list[tuple[int, int]]:
        """The pooling window of every block, in ``levels()`` order."""
        return [blk.sca[0].kernel for _, blk in self.levels()]


@contextmanager
def local_statistics(model: NAFNet, train_size: tuple[int, int] = (256, 256), base_scale: float = 1.5):
    """Within the block, every NAFBlock of ``model`` pools with TLC's local windows (as :class:`NAFNetLocal`);
    the original pooling layers are put back afterwards."""
    if not isinstance(model, NAFNet):
        raise TypeError(f"test-time local statistics need a NAFNet, got {type(model).__name__}")
    saved = [(blk, blk.sca[0]) for _, blk in model.levels()]
    try:
        for (blk, _), k in zip(saved, tlc_kernels(model, train_size, base_scale)):
            blk.sca[0] = LocalAvgPool2d(k)
        yield model
    finally:
        for blk, pool in saved:
            blk.sca[0] = pool


def tlc_forward(model: NAFNet, batch: dict) -> torch.Tensor:
    """An evaluation ``forward(model, batch)``: ``model(batch['lq'])`` under :func:`local_statistics` with the
    training crop ``model.tlc_train_size`` if set, else GoPro's 256."""
    with local_statistics(model, getattr(model, "tlc_train_size", (256, 256))):
        return model(batch["lq"])
