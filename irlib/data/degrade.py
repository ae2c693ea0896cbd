"""Seeded synthetic degradations for (B,C,H,W) float images in [0, 1].

Every function takes an explicit ``torch.Generator`` (or a seed) so a degraded set can be rebuilt
exactly. They are the degradation models the four papers name: additive Gaussian noise, additive
rain streaks, atmospheric-scattering haze ``I = J t + A (1 - t)``, Gaussian blur, bicubic down-scaling
and low light (gamma + gain + shot-like noise).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

Gen = torch.Generator | int | None


def _gen(g: Gen, device: torch.device | str = "cpu") -> torch.Generator:
    if isinstance(g, torch.Generator):
        return g
    out = torch.Generator(device=device)
    out.manual_seed(0 if g is None else int(g))
    return out


def _randn(shape, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=g, device=g.device, dtype=torch.float32).to(like.device, like.dtype)


def _rand(shape, g: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(shape, generator=g, device=g.device, dtype=torch.float32).to(like.device, like.dtype)


SYNTHS = ("", "uint8")


def add_noise(x: torch.Tensor, sigma: float, g: Gen = None, clip: bool = False, quantize: bool = False) -> torch.Tensor:
    """Additive white Gaussian noise with standard deviation ``sigma`` on the 0..255 scale.

    By default the noisy values stay float and unclipped (irlib's original rule, the common synthetic-denoising
    convention of e.g. DnCNN/Restormer test code); ``clip=True`` clips to [0, 1]. ``quantize=True`` does what
    PromptIR's and TextPromptIR's releases do in training and test (``np.clip(clean + noise * sigma, 0, 255)
    .astype(np.uint8)``): clip to [0, 255] and truncate to an integer, so the noisy image lies on the 8-bit grid.
    The same normal draws are used in every mode.
    """
    n = _randn(x.shape, _gen(g), x)
    if quantize:
        y = (x.double() * 255.0 + n.double() * float(sigma)).clamp(0, 255).floor() / 255.0
        return y.to(x.dtype)
    y = x + n * (sigma / 255.0)
    return y.clamp(0, 1) if clip else y


def to_uint8_grid(x: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and truncate to the 8-bit grid (numpy ``astype(np.uint8)`` of a 0..255 image)."""
    return ((x.double().clamp(0, 1) * 255.0 + 1e-6).floor().clamp(0, 255) / 255.0).to(x.dtype)


def gaussian_kernel(size: int, sigma: float) -> torch.Tensor:
    r = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    k1 = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    k = torch.outer(k1, k1)
    return k / k.sum()


def _filter(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    c = x.shape[1]
    k = k.to(x.device, x.dtype)[None, None].repeat(c, 1, 1, 1)
    pad = (k.shape[-2] // 2, k.shape[-2] // 2, k.shape[-1] // 2, k.shape[-1] // 2)
    return F.conv2d(F.pad(x, (pad[2], pad[3], pad[0], pad[1]), mode="reflect"), k, groups=c)


def gaussian_blur(x: torch.Tensor, sigma: float, size: int = 15) -> torch.Tensor:
    """Blur with a ``size``x``size`` Gaussian kernel (DINO-IR: k=15, sigma in [2.0, 3.1])."""
    return _filter(x, gaussian_kernel(size, sigma))


def rain_layer(shape: tuple[int, int, int, int], g: Gen = None, density: float = 0.02,
               length: int = 15, angle_deg: float | None = None, strength: float = 0.8) -> torch.Tensor:
    """Streak layer in [0, 1]: sparse seeds smeared along a line (motion-blur kernel) at one angle."""
    gen = _gen(g)
    b, _, h, w = shape
    ref = torch.empty(0)
    seeds = (_rand((b, 1, h, w), gen, ref) < density).float() * (0.5 + 0.5 * _rand((b, 1, h, w), gen, ref))
    if angle_deg is None:
        angle_deg = float(-30 + 60 * _rand((1,), gen, ref).item())
    k = torch.zeros(length, length)
    c = (length - 1) / 2
    t = torch.linspace(-c, c, 4 * length)
    a = math.radians(90 + angle_deg)
    xs = (c + t * math.cos(a)).round().long().clamp(0, length - 1)
    ys = (c + t * math.sin(a)).round().long().clamp(0, length - 1)
    k[ys, xs] = 1.0
    k = k / k.sum()
    streaks = _filter(seeds, k) * length * strength
    streaks = _filter(streaks, gaussian_kernel(3, 0.6))
    return streaks.clamp(0, 1)


def add_rain(x: torch.Tensor, g: Gen = None, **kw) -> torch.Tensor:
    """Additive rain model ``O = B + R`` (TextPromptIR Eq. 2), clipped to [0, 1]."""
    r = rain_layer(tuple(x.shape), g, **kw).to(x.device, x.dtype)
    return (x + r).clamp(0, 1)


def smooth_depth(shape: tuple[int, int, int, int], g: Gen = None) -> torch.Tensor:
    """A plausible depth map in [0, 1]: a vertical ramp (far at the top) plus smooth random relief."""
    gen = _gen(g)
    b, _, h, w = shape
    ramp = torch.linspace(1.0, 0.0, h).view(1, 1, h, 1).expand(b, 1, h, w)
    relief = torch.rand((b, 1, max(2, h // 16), max(2, w // 16)), generator=gen)
    relief = F.interpolate(relief, size=(h, w), mode="bicubic", align_corners=False)
    d = 0.7 * ramp + 0.3 * relief
    d = d - d.amin(dim=(2, 3), keepdim=True)
    return d / d.amax(dim=(2, 3), keepdim=True).clamp_min(1e-6)


def add_haze(x: torch.Tensor, beta: float = 1.2, airlight: float = 0.9, g: Gen = None,
             depth: torch.Tensor | None = None) -> torch.Tensor:
    """Atmospheric scattering model ``I = J t + A (1 - t)`` with ``t = exp(-beta d)``."""
    if depth is None:
        depth = smooth_depth(tuple(x.shape), g)
    t = torch.exp(-beta * depth.to(x.device, x.dtype))
    return (x * t + airlight * (1 - t)).clamp(0, 1)


def bicubic_down(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Bicubic down-scaling by ``scale`` (2, 3 or 4) with anti-aliasing.

    Note: SR benchmarks use MATLAB ``imresize``; torch's antialiased bicubic is close to it but not
    bit-identical, so full-profile SR numbers should use the official LR images from the manifests.
    """
    if scale not in (2, 3, 4):
        raise ValueError(f"scale must be 2, 3 or 4, got {scale}")
    h, w = x.shape[-2:]
    if h % scale or w % scale:
        raise ValueError(f"image size {h}x{w} is not divisible by scale {scale}; crop it first")
    return F.interpolate(x, size=(h // scale, w // scale), mode="bicubic", antialias=True,
                         align_corners=False).clamp(0, 1)


def low_light(x: torch.Tensor, gamma: float = 2.2, gain: float = 0.35, noise: float = 0.01,
              g: Gen = None) -> torch.Tensor:
    """Under-exposure: ``gain * x**gamma`` plus signal-dependent Gaussian noise."""
    y = gain * x.clamp(0, 1) ** gamma
    y = y + _randn(x.shape, _gen(g), x) * noise * y.sqrt()
    return y.clamp(0, 1)


DEGRADATIONS: dict[str, Callable[..., torch.Tensor]] = {
    "noise": add_noise,
    "rain": add_rain,
    "haze": add_haze,
    "blur": gaussian_blur,
    "lowlight": low_light,
}


def degrade(x: torch.Tensor, task: str, g: Gen = None, synth: str = "", **kw) -> torch.Tensor:
    """Apply one named degradation. ``task`` in noise15/noise25/noise50, rain, haze, blur, lowlight, srx2/3/4.
    ``synth="uint8"`` stores the result on the 8-bit grid, clipped and truncated (noise: see :func:`add_noise`)."""
    if synth not in SYNTHS:
        raise ValueError(f"synth must be one of {SYNTHS}, got {synth!r}")
    if synth == "uint8" and not task.startswith("noise"):
        return to_uint8_grid(degrade(x, task, g, **kw))
    gen = _gen(g)
    if task.startswith("noise"):
        sigma = float(kw.pop("sigma", task[5:] or 25))
        return add_noise(x, sigma, gen, quantize=synth == "uint8", **kw)
    if task.startswith("srx"):
        return bicubic_down(x, int(task[3:]))
    if task == "blur":
        sigma = kw.pop("sigma", None)
        if sigma is None:
            sigma = 2.0 + 1.1 * torch.rand((), generator=gen).item()
        return gaussian_blur(x, sigma, **kw)
    if task == "haze":
        kw.setdefault("beta", 0.8 + 1.0 * torch.rand((), generator=gen).item())
        return add_haze(x, g=gen, **kw)
    if task in ("rain", "lowlight"):
        return DEGRADATIONS[task](x, g=gen, **kw)
    raise KeyError(f"unknown degradation {task!r}")
