"""PSNR and SSIM with the conventions image-restoration papers use.

All functions take float tensors in ``[0, 1]`` shaped ``(B, C, H, W)`` (a 3-D tensor is treated as a
batch of one) and return one value per image, so they run batched on CPU or GPU.

Conventions
-----------
* ``channel="rgb"``: every colour channel is used (SSIM is averaged over channels, as scikit-image does).
* ``channel="y"``: the luma of BT.601 *studio-swing* YCbCr, ``Y = 16 + 65.481 R + 128.553 G + 24.966 B``
  on a 0..255 scale (range 16..235). This is what MATLAB's ``rgb2ycbcr`` returns and what SR/derain
  papers report as "PSNR on Y".
* ``crop_border``: pixels removed from every side before measuring (SR papers crop the scale factor).
* ``quantize=True``: round both images to 8-bit first, the way results saved as PNG are measured.
* SSIM uses an 11x11 Gaussian window with sigma 1.5, K1=0.01, K2=0.03, and is averaged over the
  *valid* region only (no padding), matching Wang et al.'s reference code.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

Channel = Literal["rgb", "y"]

_Y_COEFFS = (65.481, 128.553, 24.966)


def _as_batch(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected an image tensor (C,H,W) or (B,C,H,W), got shape {tuple(x.shape)}")
    return x


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Luma of BT.601 studio-swing YCbCr on a 0..255 scale, shape (B,1,H,W). Input RGB in [0,1]."""
    x = _as_batch(x)
    if x.shape[1] != 3:
        raise ValueError(f"rgb_to_y needs 3 channels, got {x.shape[1]}")
    w = x.new_tensor(_Y_COEFFS).view(1, 3, 1, 1)
    return 16.0 + (x * w).sum(dim=1, keepdim=True)


def _prepare(pred: torch.Tensor, target: torch.Tensor, channel: Channel, crop_border: int,
             quantize: bool) -> torch.Tensor:
    """Return both images on a 0..255 scale, cropped and converted, stacked as (2,B,C,H,W)."""
    pred, target = _as_batch(pred), _as_batch(target)
    if pred.shape != target.shape:
        raise ValueError(f"images differ in shape: {tuple(pred.shape)} vs {tuple(target.shape)}")
    pred, target = pred.double(), target.double()
    if quantize:
        pred = (pred.clamp(0, 1) * 255.0).round() / 255.0
        target = (target.clamp(0, 1) * 255.0).round() / 255.0
    if channel == "y":
        pred, target = rgb_to_y(pred), rgb_to_y(target)
    elif channel == "rgb":
        pred, target = pred * 255.0, target * 255.0
    else:
        raise ValueError(f"channel must be 'rgb' or 'y', got {channel!r}")
    if crop_border:
        c = int(crop_border)
        if 2 * c >= min(pred.shape[-2:]):
            raise ValueError(f"crop_border={c} leaves nothing of a {tuple(pred.shape[-2:])} image")
        pred = pred[..., c:-c, c:-c]
        target = target[..., c:-c, c:-c]
    return torch.stack([pred, target])


def psnr(pred: torch.Tensor, target: torch.Tensor, *, channel: Channel = "rgb", crop_border: int = 0,
         quantize: bool = False) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image (peak 255 on the 0..255 scale)."""
    p, t = _prepare(pred, target, channel, crop_border, quantize)
    mse = (p - t).pow(2).flatten(1).mean(dim=1)
    return (10.0 * torch.log10(255.0 ** 2 / mse)).float()


def _gaussian_window(size: int, sigma: float, device, dtype) -> torch.Tensor:
    r = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(r ** 2) / (2 * sigma ** 2))
    g = g / g.sum()
    return g


def ssim(pred: torch.Tensor, target: torch.Tensor, *, channel: Channel = "rgb", crop_border: int = 0,
         quantize: bool = False, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image: Gaussian window, valid region, mean over channels."""
    p, t = _prepare(pred, target, channel, crop_border, quantize)
    if min(p.shape[-2:]) < window:
        raise ValueError(f"image {tuple(p.shape[-2:])} is smaller than the {window}x{window} SSIM window")
    c = p.shape[1]
    g = _gaussian_window(window, sigma, p.device, p.dtype)
    kh = g.view(1, 1, window, 1).repeat(c, 1, 1, 1)
    kw = g.view(1, 1, 1, window).repeat(c, 1, 1, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(x, kh, groups=c), kw, groups=c)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_p, mu_t = blur(p), blur(t)
    s_pp = blur(p * p) - mu_p ** 2
    s_tt = blur(t * t) - mu_t ** 2
    s_pt = blur(p * t) - mu_p * mu_t
    num = (2 * mu_p * mu_t + c1) * (2 * s_pt + c2)
    den = (mu_p ** 2 + mu_t ** 2 + c1) * (s_pp + s_tt + c2)
    return (num / den).flatten(1).mean(dim=1).float()


def ssim_uniform(pred: torch.Tensor, target: torch.Tensor, *, window: int = 7) -> torch.Tensor:
    """SSIM per image as scikit-image's ``structural_similarity(..., data_range=1, channel_axis=2)`` computes it with
    its defaults (PromptIR's and TextPromptIR's test code): a ``window``x``window`` uniform window, sample
    covariances (``N / (N - 1)``), K1=0.01, K2=0.03, the mean over the region the window covers fully, then over
    the RGB channels. Images in [0, 1], no conversion or crop."""
    p, t = _as_batch(pred).double(), _as_batch(target).double()
    if p.shape != t.shape:
        raise ValueError(f"images differ in shape: {tuple(p.shape)} vs {tuple(t.shape)}")
    if min(p.shape[-2:]) < window:
        raise ValueError(f"image {tuple(p.shape[-2:])} is smaller than the {window}x{window} SSIM window")
    c = p.shape[1]
    k = torch.full((c, 1, window, window), 1.0 / window ** 2, dtype=p.dtype, device=p.device)

    def box(x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, k, groups=c)

    n = window ** 2
    cov = n / (n - 1)
    mu_p, mu_t = box(p), box(t)
    s_pp = cov * (box(p * p) - mu_p ** 2)
    s_tt = cov * (box(t * t) - mu_t ** 2)
    s_pt = cov * (box(p * t) - mu_p * mu_t)
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mu_p * mu_t + c1) * (2 * s_pt + c2)) / ((mu_p ** 2 + mu_t ** 2 + c1) * (s_pp + s_tt + c2))
    return s.flatten(2).mean(2).mean(1).float()


def measure(pred: torch.Tensor, target: torch.Tensor, **kw) -> dict[str, torch.Tensor]:
    """PSNR and SSIM together, same keyword conventions as :func:`psnr`."""
    return {"PSNR": psnr(pred, target, **kw), "SSIM": ssim(pred, target, **kw)}


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N x D): the FID formula
    ``|mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``. Needs at least two samples per set; with
    fewer samples than dimensions the covariances are singular and the value is only a rough guide."""
    import numpy as np
    from scipy import linalg

    a, b = feats_a.double().cpu().numpy(), feats_b.double().cpu().numpy()
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError("frechet_distance needs two (N>=2, D) feature matrices of the same D")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean, _ = linalg.sqrtm(s_a @ s_b, disp=False)
    covmean = covmean.real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(covmean))


_INCEPTION: dict = {}


def _inception(pretrained: bool) -> torch.nn.Module:
    if pretrained not in _INCEPTION:
        import torchvision

        w = torchvision.models.Inception_V3_Weights.IMAGENET1K_V1 if pretrained else None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = torchvision.models.inception_v3(weights=w, aux_logits=True, init_weights=not pretrained).eval()
        net.fc = torch.nn.Identity()
        if not pretrained:
            for m in net.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.train()
        _INCEPTION[pretrained] = net
    return _INCEPTION[pretrained]


def inception_features(images: torch.Tensor, pretrained: bool = True, batch: int = 16) -> torch.Tensor:
    """2048-d pool features of torchvision's Inception-v3 (``Inception_V3_Weights.IMAGENET1K_V1`` when
    ``pretrained``; random weights otherwise, for offline pipeline checks) for images in [0, 1].

    A random network has no trained BatchNorm statistics and its activations explode through 90 layers, so
    in that case BatchNorm normalises with each batch's own statistics (the values stay finite; they still
    mean nothing). The network is built once per process (a random one with seed 0, so values repeat)."""
    net = _inception(pretrained)
    from .data.imagenet import imagenet_normalize

    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.nn.functional.interpolate(images[i:i + batch].float(), size=(299, 299), mode="bilinear", align_corners=False)
            out.append(net(imagenet_normalize(x)))
    return torch.cat(out)


_LPIPS: dict = {}


def lpips(pred: torch.Tensor, target: torch.Tensor, pretrained: bool = True, net: str = "alex") -> torch.Tensor:
    """LPIPS distance per image (Zhang et al. 2018) through the ``lpips`` package, inputs in [0, 1].

    The package ships its calibrated linear layers; the AlexNet backbone comes from torchvision when
    ``pretrained`` (a download) and is random otherwise, for offline pipeline checks only."""
    import lpips as _lp

    key = (net, pretrained)
    if key not in _LPIPS:
        _LPIPS[key] = _lp.LPIPS(net=net, pnet_rand=not pretrained, verbose=False).eval()
    m = _LPIPS[key].to(pred.device)
    with torch.no_grad():
        return m(_as_batch(pred) * 2 - 1, _as_batch(target) * 2 - 1).flatten()
