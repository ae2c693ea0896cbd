"""EDSR (Lim et al. 2017), the SR backbone SPN retrains (EDSR-light = the 16-block, 64-feature baseline).

Module names and ``state_dict`` follow BasicSR's ``EDSR`` (``XPixelGroup/BasicSR``,
``basicsr/archs/edsr_arch.py``): ``conv_first``, ``body.N.conv1/conv2``, ``conv_after_body``, ``upsample``,
``conv_last``, so BasicSR's ``EDSR_Mx2/Mx3/Mx4_f64b16_DIV2K_official`` checkpoints load with ``strict=True``
(:func:`irlib.models.release.load_release`). As in BasicSR, inputs and outputs are RGB in [0, 1]; inside,
the mean-shifted image is multiplied by ``img_range`` = 255 (the release's training scale — the weights
depend on it) and divided again before the mean is added back. The mean is a non-persistent buffer: BasicSR
keeps it outside the ``state_dict``.

The authors' own EDSR-PyTorch checkpoints (``sub_mean``/``head``/``body.N.body.0``/``tail`` names, mean
shift stored as frozen 1x1 convs) convert with :func:`from_edsr_pytorch`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn as nn


def conv3(cin: int, cout: int, bias: bool = True) -> nn.Conv2d:
    """3x3 convolution with 'same' zero padding."""
    return nn.Conv2d(cin, cout, 3, padding=1, bias=bias)


class ResidualBlockNoBN(nn.Module):
    """conv-ReLU-conv with a (scaled) identity skip, no batch norm."""

    def __init__(self, c: int, res_scale: float = 1.0):
        super().__init__()
        self.conv1, self.relu, self.conv2 = conv3(c, c), nn.ReLU(inplace=True), conv3(c, c)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.relu(self.conv1(x))) * self.res_scale


def upsampler(c: int, scale: int) -> nn.Sequential:
    """conv + pixel-shuffle stages for x2^n or x3 (``upsample.0``, ``upsample.2``, ...)."""
    if scale & (scale - 1) == 0 and scale > 1:
        mods: list[nn.Module] = []
        for _ in range(scale.bit_length() - 1):
            mods += [conv3(c, 4 * c), nn.PixelShuffle(2)]
        return nn.Sequential(*mods)
    if scale == 3:
        return nn.Sequential(conv3(c, 9 * c), nn.PixelShuffle(3))
    raise ValueError(f"scale must be 2, 3, 4 or another power of two, got {scale}")


class EDSR(nn.Module):
    """EDSR. ``EDSR(scale)`` is the light/baseline model: 16 blocks, 64 features, 1,369,859 parameters at x2
    and 1,517,571 at x4 (= BasicSR's EDSR_Mx2/Mx4, counted from the release definition).
    :meth:`tiny` is a small model of the same code path for CPU smoke runs."""

    def __init__(self, scale: int = 4, n_feats: int = 64, n_blocks: int = 16, res_scale: float = 1.0,
                 rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040), img_range: float = 255.0):
        super().__init__()
        self.scale, self.img_range = scale, img_range
        self.register_buffer("mean", torch.tensor(rgb_mean).view(1, 3, 1, 1), persistent=False)
        self.conv_first = conv3(3, n_feats)
        self.body = nn.Sequential(*[ResidualBlockNoBN(n_feats, res_scale) for _ in range(n_blocks)])
        self.conv_after_body = conv3(n_feats, n_feats)
        self.upsample = upsampler(n_feats, scale)
        self.conv_last = conv3(n_feats, 3)

    @classmethod
    def light(cls, scale: int = 4) -> "EDSR":
        """EDSR baseline (BasicSR ``EDSR_Mx{scale}_f64b16``)."""
        return cls(scale)

    @classmethod
    def large(cls, scale: int = 4) -> "EDSR":
        """EDSR (BasicSR ``EDSR_Lx{scale}_f256b32``: 32 blocks, 256 features, residual scale 0.1)."""
        return cls(scale, n_feats=256, n_blocks=32, res_scale=0.1)

    @classmethod
    def tiny(cls, scale: int = 4) -> "EDSR":
        """16 features, 2 blocks: for CPU smoke runs."""
        return cls(scale, n_feats=16, n_blocks=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_first((x - self.mean) * self.img_range)
        h = self.conv_after_body(self.body(h)) + h
        return self.conv_last(self.upsample(h)) / self.img_range + self.mean


def from_edsr_pytorch(state: Mapping[str, torch.Tensor], rgb_range: float = 255.0,
                      rgb_mean: Sequence[float] = (0.4488, 0.4371, 0.4040)) -> dict[str, torch.Tensor]:
    """Rename an EDSR-PyTorch (``sanghyun-son/EDSR-PyTorch``) state dict to :class:`EDSR`'s names.

    EDSR-PyTorch works on [0, ``rgb_range``] images and stores the mean shift as two frozen 1x1 convs
    (``sub_mean``/``add_mean``); :class:`EDSR` with ``img_range=rgb_range`` computes the same function on
    [0, 1] images, so those convs are checked (identity weight, bias = -/+ rgb_range * mean) and dropped.
    """
    out: dict[str, torch.Tensor] = {}
    n_blocks = 1 + max((int(k.split(".")[1]) for k in state if k.startswith("body.")), default=-1)
    for name, sign in (("sub_mean", -1.0), ("add_mean", 1.0)):
        w, b = state.get(f"{name}.weight"), state.get(f"{name}.bias")
        if w is None or b is None:
            continue
        want_b = sign * rgb_range * torch.tensor(rgb_mean)
        if not (torch.allclose(w.flatten(1).float(), torch.eye(3), atol=1e-6) and torch.allclose(b.float(), want_b, atol=1e-4)):
            raise ValueError(f"{name} is not the standard mean shift for rgb_range={rgb_range}, rgb_mean={tuple(rgb_mean)}")
    for key, v in state.items():
        parts = key.split(".")
        if parts[0] in ("sub_mean", "add_mean"):
            continue
        if parts[0] == "head":                                   # head.0.w -> conv_first.w
            new = "conv_first." + parts[-1]
        elif parts[0] == "body" and int(parts[1]) == n_blocks - 1:  # last body conv -> conv_after_body
            new = "conv_after_body." + parts[-1]
        elif parts[0] == "body":                                 # body.i.body.{0,2}.w -> body.i.conv{1,2}.w
            new = f"body.{parts[1]}.conv{1 if parts[3] == '0' else 2}.{parts[-1]}"
        elif parts[0] == "tail" and parts[1] == "0":             # tail.0.j.w -> upsample.j.w
            new = f"upsample.{parts[2]}.{parts[-1]}"
        elif parts[0] == "tail" and parts[1] == "1":             # tail.1.w -> conv_last.w
            new = "conv_last." + parts[-1]
        else:
            raise KeyError(f"unexpected EDSR-PyTorch key {key!r}")
        out[new] = v
    return out
