"""DeepLPF, deep local parametric filters (Moran et al., CVPR 2020): a low-light baseline DiffLoss retrains
(Table 1, LOL).

A U-Net backbone (double 3x3 convs with reflection padding and LeakyReLU, max-pool down, nearest-neighbour
up + 1x1 conv, a global residual) maps the image to a 64-channel map: its first 3 channels are an enhanced
image Y, the other 61 are features. Three heads regress filter parameters from [features, image] resized to
300x300 (four stride-2 convs with max-pools between, global average pooling, dropout 0.5, a linear layer):

* a *polynomial* (cubic) filter: per channel, 20 coefficients of a cubic in (x, y, intensity), added to Y
  (clamped to [0, 1]) to give Y';
* three *graduated* filters: each a line (slope, offset) with two soft bands, a binary flip and three
  per-channel scales, giving a scale map that ramps across the line;
* three *elliptical* filters: centre, semi-axes and angle, with three per-channel scales that decay
  linearly from the centre to the ellipse boundary (1 outside).

The graduated and elliptical scale maps are multiplied within each kind, summed, clamped to [0, 2] and applied
to Y'; the result plus Y, clamped to [0, 1], is the output. Coordinates are x = row / H and y = column / W.
The released network has 1,769,347 parameters (no exact published count was checked).

Parameter names follow the release (``model.py``/``unet.py``) so its checkpoints load with ``strict=True``;
the release also builds four backbone modules its forward never uses (``unet.conv1``, ``conv2``, ``conv3``,
``local_net``), kept here for the keys (they get no gradient). Differences from the release:

* the release supports a batch of one only (its filters read the parameters of sample 0 and write only
  sample 0); irlib applies each sample's own filters, identical for a batch of one;
* in the release, the third channel of the second elliptical filter uses the third ellipse's minor semi-axis
  (``b3``) instead of its own; the paper defines every ellipse by its own parameters, so irlib uses ``b2`` by
  default and ``ellipse_b3_typo=True`` gives the release's function;
* the graduated filter's flip is sign(.) as released, which passes no gradient (the release's
  straight-through ``backward`` is never called by autograd).

Inputs are (B, 3, H, W) in [0, 1] with H, W >= 32 (four 2x max-pools, then reflection padding); odd sizes are
handled by the release's one-pixel pad after upsampling.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TINY = dict(widths=(4, 8, 8, 8, 8), feat=8, head_width=8, head_size=64)


class LocalNet(nn.Module):
    """Two reflection-padded 3x3 convs with LeakyReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3)
        self.conv2 = nn.Conv2d(cout, cout, 3)
        self.lrelu = nn.LeakyReLU()
        self.refpad = nn.ReflectionPad2d(1)

    def forward(self, x):
        return self.lrelu(self.conv2(self.refpad(self.lrelu(self.conv1(self.refpad(x))))))


def _pad_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """The release's fix for odd sizes: one pixel on the left and/or bottom."""
    dh, dw = x.shape[2] != ref.shape[2], x.shape[3] != ref.shape[3]
    return F.pad(x, (int(dw), 0, 0, int(dh))) if (dh or dw) else x


class UNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128, 128), unused_width: int = 64):
        super().__init__()
        w1, w2, w3, w4, w5 = widths
        self.conv1, self.conv2 = nn.Conv2d(w1, unused_width, 1), nn.Conv2d(w2, unused_width, 1)  # unused
        self.conv3 = nn.Conv2d(w3, unused_width, 1)                                                # unused
        self.local_net = LocalNet(w1, unused_width)                                                # unused
        self.dconv_down1, self.dconv_down2 = LocalNet(3, w1), LocalNet(w1, w2)
        self.dconv_down3, self.dconv_down4, self.dconv_down5 = LocalNet(w2, w3), LocalNet(w3, w4), LocalNet(w4, w5)
        self.maxpool = nn.MaxPool2d(2)
        self.upsample = nn.UpsamplingNearest2d(scale_factor=2)
        self.up_conv1x1_1, self.up_conv1x1_2 = nn.Conv2d(w5, w5, 1), nn.Conv2d(w4, w4, 1)
        self.up_conv1x1_3, self.up_conv1x1_4 = nn.Conv2d(w3, w3, 1), nn.Conv2d(w2, w2, 1)
        self.dconv_up4, self.dconv_up3 = LocalNet(w5 + w4, w4), LocalNet(w4 + w3, w3)
        self.dconv_up2, self.dconv_up1 = LocalNet(w3 + w2, w2), LocalNet(w2 + w1, w1)
        self.conv_last = LocalNet(w1, 3)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        skips = []
        x = img
        for down in (self.dconv_down1, self.dconv_down2, self.dconv_down3, self.dconv_down4):
            x = down(x)
            skips.append(x)
            x = self.maxpool(x)
        x = self.dconv_down5(x)
        ups = ((self.up_conv1x1_1, self.dconv_up4), (self.up_conv1x1_2, self.dconv_up3),
               (self.up_conv1x1_3, self.dconv_up2), (self.up_conv1x1_4, self.dconv_up1))
        for (conv1x1, block), skip in zip(ups, reversed(skips)):
            x = block(torch.cat([_pad_to(conv1x1(self.upsample(x)), skip), skip], 1))
        return self.conv_last(x) + img


class Backbone(nn.Module):  # release: UNetModel
    def __init__(self, widths: tuple[int, ...], feat: int):
        super().__init__()
        self.unet = UNet(widths, feat)
        self.final_conv = nn.Conv2d(3, feat, 3)
        self.refpad = nn.ReflectionPad2d(1)

    def forward(self, img):
        return self.final_conv(self.refpad(self.unet(img)))


class ConvBlock(nn.Module):
    """3x3 stride-2 conv + LeakyReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 2, 1)
        self.lrelu = nn.LeakyReLU()

    def forward(self, x):
        return self.lrelu(self.conv(x))


class _Pool(nn.Module):
    def __init__(self):
        super().__init__()
        self.max_pool = nn.MaxPool2d(2, 2)

    def forward(self, x):
        return self.max_pool(x)


class _GlobalPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        return self.avg_pool(x)


class _Head(nn.Module):
    """The parameter regressor shared by the three filter kinds; its layers are named ``<kind>_layer1..8`` and
    ``fc_<kind>`` as released."""

    def __init__(self, kind: str, cin: int, width: int, n_out: int, size: int):
        super().__init__()
        self.kind, self.size = kind, size
        for i, layer in enumerate([ConvBlock(cin, width), _Pool(), ConvBlock(width, width), _Pool(),
                                   ConvBlock(width, width), _Pool(), ConvBlock(width, width), _GlobalPool()], 1):
            setattr(self, f"{kind}_layer{i}", layer)
        setattr(self, f"fc_{kind}", nn.Linear(width, n_out))
        self.dropout = nn.Dropout(0.5)

    def regress(self, feat: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(torch.cat([feat, img], 1), size=(self.size, self.size), mode="bilinear",
                          align_corners=False)
        for i in range(1, 9):
            x = getattr(self, f"{self.kind}_layer{i}")(x)
        return getattr(self, f"fc_{self.kind}")(self.dropout(x.flatten(1)))


def _tanh01(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * (torch.tanh(x) + 1)


def _coords(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (row / H, column / W) grids, (1, 1, H, W)."""
    h, w = img.shape[-2:]
    xs = (torch.arange(h, device=img.device, dtype=img.dtype) / h).view(1, 1, h, 1).expand(1, 1, h, w)
    ys = (torch.arange(w, device=img.device, dtype=img.dtype) / w).view(1, 1, 1, w).expand(1, 1, h, w)
    return xs, ys


def _col(t: torch.Tensor) -> torch.Tensor:
    """(B,) or (B, k) per-sample values -> broadcastable over (B, k, H, W)."""
    return t.reshape(t.shape[0], -1, 1, 1)


class CubicFilter(_Head):
    def __init__(self, cin: int = 64, width: int = 64, size: int = 300):
        super().__init__("cubic", cin, width, 60, size)

    def get_cubic_mask(self, feat: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        """Y' = clamp(Y + per-channel cubic in (x, y, Y)), (B, 3, H, W)."""
        r = self.regress(feat, img).view(-1, 3, 20, 1, 1)
        x, y = _coords(img)
        i = img
        terms = [x ** 3, x ** 2 * y, x ** 2 * i, x ** 2, x * y ** 2, x * y * i, x * y, x * i ** 2, x * i, x,
                 y ** 3, y ** 2 * i, y ** 2, y * i ** 2, y * i, y, i ** 3, i ** 2, i]
        mask = r[:, :, 19]
        for k, t in enumerate(terms):
            mask = mask + r[:, :, k] * t
        return torch.clamp(img + mask, 0, 1)


class GraduatedFilter(_Head):
    def __init__(self, cin: int = 64, width: int = 64, size: int = 300):
        super().__init__("graduated", cin, width, 24, size)

    @staticmethod
    def _band_mask(factor, flip, d1, d2, line, max_scale: float = 2.0) -> torch.Tensor:
        """The release's piecewise-linear scale across a soft line (``get_inverted_mask``), per sample.
        factor, d1, d2: (B, 1, 1, 1); flip: bool (B, 1, 1, 1); line: (B, 1, H, W)."""
        hi = factor >= 1
        diff = torch.where(hi, (factor - 1) / 2 + 1, (1 - factor) / 2 + factor)
        grad1 = torch.where(flip | hi, diff - factor, diff - 1) / d1
        grad2 = torch.where(flip, 1 - diff, factor - diff) / d2
        base = torch.where(flip, factor, torch.ones_like(factor))
        m = base + grad1 * line + grad2 * line
        m = torch.where(hi, m.clamp(1, max_scale), m.clamp(0, 1))
        return m.clamp(0, max_scale)

    def get_graduated_mask(self, feat: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        eps, max_scale = 1e-10, 2.0
        g = self.regress(feat, img)
        x, y = _coords(img)
        masks = []
        for k in range(3):
            flip = _col(g[:, k] > 0)                      # (sign(g) + 1) / 2 == 1
            slope = _col(g[:, 3 + k])
            low = _tanh01(g[:, 6 + k]) + eps
            dist = torch.minimum(torch.maximum(_tanh01(g[:, 9 + k]), low.detach()), torch.ones_like(low))
            dist2 = torch.minimum(_tanh01(g[:, 12 + k]).clamp(min=0), dist.detach())
            cos = torch.cos(torch.atan(slope))
            d1, d2 = _tanh01(_col(dist) * cos), _tanh01(_col(dist2) * cos)
            line = _tanh01(y - (slope * x + _col(dist) + d1))
            scales = [_tanh01(_col(g[:, 15 + 3 * k + c])) * max_scale for c in range(3)]
            group = torch.cat([self._band_mask(s, flip, d1, d2, line, max_scale) for s in scales], 1)
            masks.append(group.clamp(0, max_scale))
        return (masks[0] * masks[1] * masks[2]).clamp(0, max_scale)


class EllipticalFilter(_Head):
    def __init__(self, cin: int = 64, width: int = 64, size: int = 300, b3_typo: bool = False):
        super().__init__("elliptical", cin, width, 24, size)
        self.b3_typo = b3_typo

    @staticmethod
    def _ellipse_mask(x, y, cx, cy, a, b, alpha, scale, radius, max_scale: float = 2.0, eps: float = 1e-7):
        dx, dy = x - cx, y - cy
        inside = ((dx * torch.cos(alpha) + dy * torch.sin(alpha)) ** 2 / a ** 2
                  + (dx * torch.sin(alpha) - dy * torch.cos(alpha)) ** 2 / b ** 2 < 1).float()
        ramp = torch.sqrt(dx ** 2 + dy ** 2 + eps) * (1 - scale) / radius + scale
        return (inside * ramp + (1 - inside) * 1).clamp(0, max_scale)

    def get_elliptical_mask(self, feat: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        eps1, eps2, max_scale = 1e-10, 1e-7, 2.0
        g = self.regress(feat, img)
        x, y = _coords(img)
        p = [_col(_tanh01(g[:, j]) + eps1) for j in range(12)]
        cx, cy, a, b = p[0:3], p[3:6], p[6:9], p[9:12]
        rot = [_col(_tanh01(g[:, 12 + k]) * math.pi + eps1) for k in range(3)]
        scales = [_col(_tanh01(g[:, 15 + j]) * max_scale + eps1) for j in range(9)]
        masks = []
        for k in range(3):
            cos_t = (y - cy[k]) / torch.sqrt((x - cx[k]) ** 2 + (y - cy[k]) ** 2 + eps1)
            angle = torch.acos(cos_t.clamp(-1 + eps2, 1 - eps2)) - rot[k]
            radius = a[k] * b[k] / torch.sqrt(a[k] ** 2 * torch.sin(angle) ** 2 + b[k] ** 2 * torch.cos(angle) ** 2
                                              + eps1)
            chans = []
            for c in range(3):
                bk = b[2] if (self.b3_typo and k == 1 and c == 2) else b[k]
                chans.append(self._ellipse_mask(x, y, cx[k], cy[k], a[k], bk, angle, scales[3 * k + c], radius))
            masks.append(torch.cat(chans, 1).clamp(0, max_scale))
        return (masks[0] * masks[1] * masks[2]).clamp(0, max_scale)


class FilterNet(nn.Module):  # release: DeepLPFParameterPrediction
    def __init__(self, feat: int, width: int, size: int, b3_typo: bool):
        super().__init__()
        self.cubic_filter = CubicFilter(feat, width, size)
        self.graduated_filter = GraduatedFilter(feat, width, size)
        self.elliptical_filter = EllipticalFilter(feat, width, size, b3_typo)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat, img = x[:, 3:], x[:, :3]
        img_cubic = self.cubic_filter.get_cubic_mask(feat, img)
        scale = (self.graduated_filter.get_graduated_mask(feat, img_cubic)
                 + self.elliptical_filter.get_elliptical_mask(feat, img_cubic)).clamp(0, 2)
        return torch.clamp(torch.clamp(img_cubic * scale, 0, 1) + img, 0, 1)


class DeepLPF(nn.Module):
    """DeepLPF (release: DeepLPFNet). Defaults are the released network; :data:`TINY` a small one of the same
    code path (narrower backbone and heads, 32x32 head input)."""

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64, 128, 128), feat: int = 64, head_width: int = 64,
                 head_size: int = 300, ellipse_b3_typo: bool = False):
        super().__init__()
        if len(widths) != 5:
            raise ValueError(f"DeepLPF's U-Net has five levels, got widths {widths}")
        if feat <= 3:
            raise ValueError(f"feat must exceed 3 (3 image channels + features), got {feat}")
        if head_size < 64:
            raise ValueError(f"head_size must be >= 64 (the heads halve their input seven times), got {head_size}")
        self.backbonenet = Backbone(tuple(widths), feat)
        self.deeplpfnet = FilterNet(feat, head_width, head_size, ellipse_b3_typo)

    @classmethod
    def tiny(cls, **kw) -> DeepLPF:
        """A small configuration of the same code path for CPU smoke runs."""
        return cls(**{**TINY, **kw})

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        if img.dim() != 4 or img.shape[1] != 3 or min(img.shape[-2:]) < 32:
            raise ValueError(f"DeepLPF needs (B, 3, H, W) images with H, W >= 32, got {tuple(img.shape)}")
        return self.deeplpfnet(self.backbonenet(img))
