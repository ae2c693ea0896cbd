"""Modulated deformable convolution (DCNv2) with a fast CPU path.

:func:`modulated_deform_conv2d` computes exactly what :func:`torchvision.ops.deform_conv2d` computes (offset layout
(dy, dx) per kernel point in row-major order, one offset group, optional sigmoid-free ``mask``), values and
gradients alike, but on CPU it is built from a few vectorised tensor ops instead of torchvision's per-element
im2col loop, which is the slowest part of an AirNet step on a CPU:

* with gradients (training), each sampling point gathers its four neighbours and weighs them with the bilinear
  weights, under activation checkpointing (only the inputs are kept; backward recomputes the samples, so memory
  stays torchvision's); gradients flow through ``gather`` to the input and through the fractional parts to the offsets, which
  gives torchvision's derivative convention at integer sampling points too (the cell ``[floor(p), floor(p)+1]``,
  each corner checked for being inside the image on its own; AirNet's offsets start at exactly zero, so that
  convention matters for its first steps);
* without gradients (evaluation), one ``grid_sample`` per call does the sampling (same values).

On CUDA the torchvision kernel is used (``impl="auto"``). ``tests/test_deform.py`` checks both paths against
torchvision in float64 (values and every gradient, random, zero and integer offsets) and reports the speed-up.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import deform_conv2d as _tv_deform_conv2d

IMPLS = ("auto", "torchvision", "gather", "grid_sample")


def _positions(offset: torch.Tensor, kh: int, kw: int, stride: int, padding: int, dilation: int):
    """Sampling rows and columns, each (B, kh*kw, Ho, Wo): the kernel point's place plus its learned offset."""
    b, _, ho, wo = offset.shape
    k = kh * kw
    off = offset.view(b, k, 2, ho, wo)
    dev, dt = offset.device, offset.dtype
    ki = torch.arange(kh, device=dev, dtype=dt).repeat_interleave(kw) * dilation
    kj = torch.arange(kw, device=dev, dtype=dt).repeat(kh) * dilation
    rows = (torch.arange(ho, device=dev, dtype=dt) * stride - padding).view(1, 1, ho, 1) + ki.view(1, k, 1, 1)
    cols = (torch.arange(wo, device=dev, dtype=dt) * stride - padding).view(1, 1, 1, wo) + kj.view(1, k, 1, 1)
    return rows + off[:, :, 0], cols + off[:, :, 1]


def _sample_gather(x: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (B, C, K, Ho, Wo) of ``x`` at (py, px), zero outside, differentiable in x, py and px."""
    b, c, h, w = x.shape
    y0, x0 = py.detach().floor(), px.detach().floor()
    fy, fx = py - y0, px - x0
    flat = x.reshape(b, c, h * w)
    out = None
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            yy, xx = y0 + dy, x0 + dx
            inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            idx = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).long().view(b, 1, -1).expand(b, c, -1)
            term = flat.gather(2, idx).view(b, c, *py.shape[1:]) * (wy * wx * inside).unsqueeze(1)
            out = term if out is None else out + term
    return out


def _sample_grid(x: torch.Tensor, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
    """The same samples through one ``grid_sample`` (pixel i maps to (2i+1)/size-1 with align_corners=False)."""
    b, c, h, w = x.shape
    k, ho, wo = py.shape[1:]
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1).view(b, k * ho, wo, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False).view(b, c, k, ho, wo)


def modulated_deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None = None, stride: int = 1, padding: int = 0, dilation: int = 1,
                            mask: torch.Tensor | None = None, impl: str = "auto") -> torch.Tensor:
    """``torchvision.ops.deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)`` for one offset
    group and square int hyper-parameters. ``impl``: ``auto`` (torchvision on CUDA; on CPU ``gather`` when a
    gradient is needed, else ``grid_sample``), or one of them by name."""
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    o, cin, kh, kw = weight.shape
    if offset.shape[1] != 2 * kh * kw or x.shape[1] != cin:
        impl = "torchvision"   # offset groups or grouped weights: torchvision's general kernel
    if impl == "auto":
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, offset, weight, mask))
        impl = "torchvision" if x.is_cuda else ("gather" if grad else "grid_sample")
    if impl == "torchvision":
        return _tv_deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation,
                                 mask=mask)
    if impl == "gather" and torch.is_grad_enabled():
        # keep only the inputs for backward and recompute the samples there (as torchvision's kernel does): the
        # sampled columns are kh*kw times the input's size, ~10 GB over AirNet's 50 layers at a 64-px batch of 4
        from torch.utils.checkpoint import checkpoint

        return checkpoint(_conv, x, offset, weight, bias, mask, stride, padding, dilation, impl, use_reentrant=False)
    return _conv(x, offset, weight, bias, mask, stride, padding, dilation, impl)


def _conv(x, offset, weight, bias, mask, stride: int, padding: int, dilation: int, impl: str) -> torch.Tensor:
    o, cin, kh, kw = weight.shape
    py, px = _positions(offset, kh, kw, stride, padding, dilation)
    cols = (_sample_gather if impl == "gather" else _sample_grid)(x, py, px)
    if mask is not None:
        cols = cols * mask.view_as(py).unsqueeze(1)
    out = torch.einsum("bckhw,ock->bohw", cols, weight.reshape(o, cin, kh * kw))
    return out if bias is None else out + bias.view(1, -1, 1, 1)
