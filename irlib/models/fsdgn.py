"""FSDGN, Frequency and Spatial Dual Guidance (Yu et al., ECCV 2022): a dehazing baseline DiffLoss retrains
(Table 1, Dense-Haze).

Two stacked five-level U-Nets. Each level has a residual conv block (two 3x3 + LeakyReLU, plus a 1x1 skip)
and, in the first U-Net only, a Fourier block: the feature's rFFT amplitude goes through a 1x1 conv, the
channel softmax of the pooled amplitude change re-weights the phase, a 1x1-ReLU-1x1 refines the phase, and the
rebuilt spectrum (new amplitude, refined phase) is transformed back and added to a 3x3 conv of the input.
Levels are linked by strided 4x4 convs (down) and 2x2 transposed convs with a skip concat (up), and every
level also fuses all earlier levels by dense back-projection (MSBDN's DFF: project to each earlier width
with 4x4 (de)convs + PReLU, subtract, project back, add). A supervised attention module (SAM) turns the first
U-Net's output into a stage-1 image and attention-weighted features for the second U-Net, which also receives
every level of the first (1x1 cross-stage fusions). The second U-Net has no Fourier blocks.

Released widths are 16/20/28/44/76 (each level adds 2**(k+1) channels, the release hard-codes them):
2,731,283 parameters (paper: 2.73M). ``widths`` generalises the level widths so a tiny size runs the same
code path (:data:`TINY`). Parameter names follow the release so its checkpoint loads with ``strict=True``.
``forward`` returns the final image (clamped to [0, 1], as released); :meth:`forward_stages` also returns the
stage-1 image, which the release's training loss supervises as well. Inputs must have sides divisible by 16.
"""
from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn as nn
import torch.nn.functional as F

WIDTHS = (16, 20, 28, 44, 76)
TINY = dict(widths=(4, 6, 8, 10, 12))


class ConvBlock(nn.Module):
    """4x4 stride-2 conv + PReLU (a down projection of the dense fusion)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 4, 2, 1)
        self.act = nn.PReLU()

    def forward(self, x):
        return self.act(self.conv(x))


class DeconvBlock(nn.Module):
    """4x4 stride-2 transposed conv + PReLU (an up projection of the dense fusion)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.deconv = nn.ConvTranspose2d(cin, cout, 4, 2, 1)
        self.act = nn.PReLU()

    def forward(self, x):
        return self.act(self.deconv(x))


def _match(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Bilinear resize of ``x`` to ``ref``'s size (identity when equal, as it is for sides divisible by 16)."""
    return x if x.shape[-2:] == ref.shape[-2:] else F.interpolate(x, size=ref.shape[-2:], mode="bilinear")


def _back_project(x: torch.Tensor, refs: list[torch.Tensor], there: nn.ModuleList, back: nn.ModuleList) -> torch.Tensor:
    """MSBDN's dense feature fusion: for each reference map (the farthest first), project ``x`` to it through
    ``there``, take the difference, project it back through ``back`` (in reverse order) and add it to ``x``."""
    n = len(there)
    for i, ref in enumerate(refs):
        f = x
        for j in range(n - i):
            f = there[j](f)
        f = _match(f, ref) - ref
        for j in range(n - i):
            f = back[n - i - j - 1](f)
        x = _match(x, f) + f
    return x


class EncoderFusion(nn.Module):
    """Dense back-projection of an encoder level onto all finer levels (release: Encoder_MDCBlock1).

    ``widths`` runs from this level's width down to level 0's; projection j maps widths[j] -> widths[j+1]."""

    def __init__(self, widths: list[int]):
        super().__init__()
        self.up_convs = nn.ModuleList(DeconvBlock(a, b) for a, b in pairwise(widths))
        self.down_convs = nn.ModuleList(ConvBlock(b, a) for a, b in pairwise(widths))

    def forward(self, x: torch.Tensor, finer: list[torch.Tensor]) -> torch.Tensor:
        return _back_project(x, finer, self.up_convs, self.down_convs)  # finer[0] is level 0


class DecoderFusion(nn.Module):
    """Dense back-projection of a decoder level onto all coarser decoder levels (Decoder_MDCBlock1).

    ``widths`` runs from this level's width up to the coarsest; projection j maps widths[j] -> widths[j+1]."""

    def __init__(self, widths: list[int]):
        super().__init__()
        self.down_convs = nn.ModuleList(ConvBlock(a, b) for a, b in pairwise(widths))
        self.up_convs = nn.ModuleList(DeconvBlock(b, a) for a, b in pairwise(widths))

    def forward(self, x: torch.Tensor, coarser: list[torch.Tensor]) -> torch.Tensor:
        return _back_project(x, coarser, self.down_convs, self.up_convs)  # coarser[0] is the coarsest


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.2, inplace=True),
                                    nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.2, inplace=True))
        self.conv_1x1 = nn.Conv2d(ch, ch, 1)

    def forward(self, x):
        return self.layers(x) + self.conv_1x1(x)


class FourierBlock(nn.Module):
    """Amplitude/phase refinement in the rFFT domain plus a spatial 3x3 conv (release: ResBlock_fft_bench)."""

    def __init__(self, ch: int):
        super().__init__()
        self.main = nn.Conv2d(ch, ch, 3, padding=1)
        self.mag = nn.Conv2d(ch, ch, 1)
        self.pha = nn.Sequential(nn.Conv2d(ch, ch, 1), nn.ReLU(inplace=True), nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        spec = torch.fft.rfft2(x, norm="backward")
        mag, pha = spec.abs(), spec.angle()
        mag_out = self.mag(mag)
        weight = (mag_out - mag).mean((2, 3), keepdim=True).softmax(1)
        pha_out = self.pha(pha * weight) + pha
        y = torch.fft.irfft2(torch.complex(mag_out * torch.cos(pha_out), mag_out * torch.sin(pha_out)),
                             s=(h, w), norm="backward")
        return self.main(x) + y


class DownBlock(nn.Module):  # release: UNetConvBlock
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.ReLU())

    def forward(self, x):
        return self.block(x)


class UpBlock(nn.Module):  # release: UNetUpBlock ('upconv')
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.up = nn.ConvTranspose2d(cin, cout, 2, 2)
        self.conv_block = nn.Sequential(nn.Conv2d(2 * cout, cout, 3, padding=1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat([self.up(x), skip], 1))


class SAM(nn.Module):
    """Supervised attention: stage-1 image = conv(x) + input; features re-weighted by sigmoid(conv(image))."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 1, bias=False)
        self.conv2 = nn.Conv2d(ch, 3, 1, bias=False)
        self.conv3 = nn.Conv2d(3, ch, 1, bias=False)

    def forward(self, x: torch.Tensor, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out_img = self.conv2(x) + img
        return self.conv1(x) * torch.sigmoid(self.conv3(out_img)) + x, out_img


class FSDGN(nn.Module):
    """FSDGN; ``widths`` are the five level widths (released: 16, 20, 28, 44, 76)."""

    def __init__(self, widths: tuple[int, ...] = WIDTHS, in_ch: int = 3):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"FSDGN has five levels, got widths {widths}")
        w = list(widths)
        for s in ("", "_"):  # the two U-Nets; the second's modules end in "_"
            setattr(self, f"layer0{s}", nn.Conv2d(in_ch, w[0], 3, padding=1))
            for k in range(1, 5):
                setattr(self, f"layer{k}{s}", DownBlock(w[k - 1], w[k]))
                setattr(self, f"layer_{k - 1}{s}", UpBlock(w[k], w[k - 1]))
            for k in range(5):
                setattr(self, f"res{k}{s}", ResBlock(w[k]))
            for k in range(4):
                setattr(self, f"res_{k}{s}", ResBlock(w[k]))
            for k in range(1, 5):
                setattr(self, f"fusion{k}{s}", EncoderFusion(w[k::-1]))
            for k in range(4):
                setattr(self, f"fusion_{k}{s}", DecoderFusion(w[k:]))
        self.last = nn.Conv2d(w[0], in_ch, 1)
        for k in range(5):
            setattr(self, f"fft{k}", FourierBlock(w[k]))
        for k in range(4):
            setattr(self, f"fft_{k}", FourierBlock(w[k]))
            setattr(self, f"csff_enc{k}", nn.Conv2d(w[k], w[k], 1, bias=False))
            setattr(self, f"csff_dec{k}", nn.Conv2d(w[k], w[k], 1, bias=False))
        self.sam = SAM(w[0])
        self.concat = nn.Conv2d(2 * w[0], w[0], 3, padding=1, bias=False)

    @classmethod
    def tiny(cls, **kw) -> FSDGN:
        """A small size of the same code path for CPU smoke runs."""
        return cls(**{**TINY, **kw})

    def _m(self, name: str) -> nn.Module:
        return getattr(self, name)

    def _unet(self, x: torch.Tensor, s: str, fourier: bool, cross: tuple[list, list] | None = None):
        """One U-Net pass from level-0 features ``x``; ``s`` is the module-name suffix. ``cross`` holds the first
        U-Net's (encoder, decoder) features, added through the csff convs. Returns (enc, dec) feature lists."""
        enc: list[torch.Tensor] = []
        for k in range(5):
            if k:
                x = self._m(f"fusion{k}{s}")(self._m(f"layer{k}{s}")(x), enc)
            x = self._m(f"res{k}{s}")(x)
            if fourier:
                x = self._m(f"fft{k}")(x)
            if cross is not None and k < 4:
                x = x + self._m(f"csff_enc{k}")(cross[0][k]) + self._m(f"csff_dec{k}")(cross[1][k])
            enc.append(x)
        dec: dict[int, torch.Tensor] = {}
        coarser = [x]
        for k in range(3, -1, -1):
            x = self._m(f"res_{k}{s}")(self._m(f"layer_{k}{s}")(x, enc[k]))
            if fourier:
                x = self._m(f"fft_{k}")(x)
            x = self._m(f"fusion_{k}{s}")(x, coarser)
            coarser.append(x)
            dec[k] = x
        return enc, [dec[k] for k in range(4)]

    def forward_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(final image, stage-1 image), both clamped to [0, 1]."""
        if x.dim() != 4 or x.shape[-1] % 16 or x.shape[-2] % 16:
            raise ValueError(f"FSDGN needs (B, C, H, W) with H and W divisible by 16, got {tuple(x.shape)} "
                             "(pad to a multiple of 16)")
        enc, dec = self._unet(self.layer0(x), "", fourier=True)
        feats, stage1 = self.sam(dec[0], x)
        y = self.concat(torch.cat([self.layer0_(x), feats], 1))
        _, dec2 = self._unet(y, "_", fourier=False, cross=(enc, dec))
        return self.last(dec2[0]).clamp(0, 1), stage1.clamp(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_stages(x)[0]
