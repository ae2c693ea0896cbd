"""DINO-IR's network: frozen DINOv2 features (:class:`DINOFeatures`), the PSF gated mixture of experts,
the D-R cross-attention adaption/fusion block and the DINO-IR Restormer. The design choices the paper leaves
open are listed in :mod:`irlib.dinoir`, which also holds the DPC loss."""
from __future__ import annotations

import copy

from typing import TYPE_CHECKING, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.imagenet import imagenet_normalize
from .restormer import Restormer

if TYPE_CHECKING:
    pass

DEFAULT_LAYERS = (2, 6, 11)
"""PSF's shallow, medium and deep DINOv2 blocks (0-based, ViT-S/14)."""
LAYER_NAMES = ("shallow", "medium", "deep")
TINY_VIT = dict(embed_dim=48, depth=12, num_heads=2)
"""The smoke profile's random ViT: ViT-S/14's depth and patch size, a small width."""


class DINOFeatures(nn.Module):
    """Frozen DINOv2 ViT returning hidden states of chosen blocks as (B, D, h, w) maps.

    ``pretrained=True`` loads ``timm`` weights (``vit_small_patch14_dinov2.lvd142m`` by default, from the
    hub); ``weights_file=`` loads a local file through timm's ``pretrained_cfg_overlay``; ``tiny=True``
    builds a small random ViT (:data:`TINY_VIT`) with the same code path for offline smoke runs. Random weights
    are drawn with ``seed`` (the same network in every process), with LayerScale gains 1 instead of DINOv2's
    1e-5 initialisation, so that a random network's blocks differ from its patch embedding. Numbers from random
    weights are pipeline checks only.
    """

    def __init__(self, name: str = "vit_small_patch14_dinov2.lvd142m", layers: Sequence[int] = DEFAULT_LAYERS,
                 pretrained: bool = True, weights_file: str | None = None, img_size: int = 224, tiny: bool = False,
                 seed: int = 0):
        super().__init__()
        import timm

        kw: dict = {"img_size": img_size}
        if tiny:
            kw.update(TINY_VIT)
        if weights_file:
            kw["pretrained_cfg_overlay"] = {"file": str(weights_file)}
        self.pretrained = bool(pretrained or weights_file)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.vit = timm.create_model(name, pretrained=self.pretrained, num_classes=0, **kw)
        if not self.pretrained:  # DINOv2's LayerScale starts at 1e-5: every random block would be an identity
            from timm.layers import LayerScale

            for m in self.vit.modules():
                if isinstance(m, LayerScale):
                    nn.init.ones_(m.gamma)
        self.vit.eval().requires_grad_(False)
        depth = len(self.vit.blocks)
        if any(not 0 <= i < depth for i in layers):
            raise ValueError(f"DINOv2 layers {tuple(layers)} outside the ViT's {depth} blocks (0-based)")
        self.layers, self.img_size = tuple(layers), img_size
        self.dim = self.vit.embed_dim
        ps = self.vit.patch_embed.patch_size
        self.patch = int(ps[0] if isinstance(ps, (tuple, list)) else ps)

    def train(self, mode: bool = True):
        return super().train(False)

    def with_layers(self, layers: Sequence[int]) -> "DINOFeatures":
        """The same frozen ViT (shared, not copied) returning other blocks: PSF, DPC and Table 5's single-layer
        variants use one network."""
        other = copy.copy(self)   # shares the ViT module; only ``layers`` differs
        depth = len(self.vit.blocks)
        if any(not 0 <= i < depth for i in layers):
            raise ValueError(f"DINOv2 layers {tuple(layers)} outside the ViT's {depth} blocks (0-based)")
        other.layers = tuple(layers)
        return other

    def view(self, x: torch.Tensor) -> torch.Tensor:
        """The image the ViT sees, on the [0, 1] scale: ``x`` resized (bilinear) to ``img_size`` if it differs."""
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        return x

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return imagenet_normalize(self.view(x))

    def forward(self, x: torch.Tensor, layers: Sequence[int] | None = None) -> list[torch.Tensor]:
        return self.vit.forward_intermediates(self.prepare(x), indices=list(layers or self.layers),
                                             intermediates_only=True)

    def patch_embed(self, x: torch.Tensor) -> torch.Tensor:
        """The ViT's patch embedding of the image ("f_IMAGE" in Fig. 3b), as (B, D, h, w)."""
        t = self.vit.patch_embed(self.prepare(x))
        if t.dim() == 3:
            n = int(t.shape[1] ** 0.5)
            t = t.transpose(1, 2).reshape(t.shape[0], -1, n, n)
        elif t.shape[-1] == self.dim:  # NHWC
            t = t.permute(0, 3, 1, 2)
        return t


class PSF(nn.Module):
    """Pixel-semantic fusion (Eqs. 1-4): gating scores S over three CNN experts, F = sum_k F_k S_k."""

    def __init__(self, in_dim: int, out_dim: int, n: int = 3, hidden: int = 64):
        super().__init__()
        self.experts = nn.ModuleList(
            nn.Sequential(nn.Conv2d(in_dim, out_dim, 3, padding=1), nn.GELU(), nn.Conv2d(out_dim, out_dim, 3, padding=1))
            for _ in range(n))
        self.gate = nn.Sequential(nn.Linear(in_dim * n, hidden), nn.GELU(), nn.Linear(hidden, n))
        self.last_scores: torch.Tensor | None = None

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        f = torch.cat(list(feats), dim=1)                                 # Eq. 1
        s = self.gate(f.mean(dim=(2, 3))).softmax(dim=-1)                 # Eq. 2
        self.last_scores = s.detach()
        outs = [e(x) for e, x in zip(self.experts, feats)]                # Eq. 3
        return sum(o * s[:, k, None, None, None] for k, o in enumerate(outs))  # Eq. 4


class DRFusion(nn.Module):
    """D-R adaption (1x1 conv to the level's channels, resize to its size) and fusion (Eq. 5).

    ``normalize_qk=True`` L2-normalises q and k over space first (Restormer-style), an option of ours
    for stability at large H*W; the default follows the paper's plain ``/ sqrt(C)`` scaling.
    """

    def __init__(self, dino_dim: int, dim: int, normalize_qk: bool = False):
        super().__init__()
        self.adapt = nn.Conv2d(dino_dim, dim, 1)
        self.wq, self.wk = nn.Conv2d(dim, dim, 1), nn.Conv2d(dim, dim, 1)
        self.normalize_qk = normalize_qk

    def forward(self, h: torch.Tensor, ctx: dict) -> torch.Tensor:
        d = ctx.get("dino")
        if d is None:
            return h
        b, c, hh, ww = h.shape
        fda = F.interpolate(self.adapt(d), size=(hh, ww), mode="bilinear", align_corners=False)
        q, k = self.wq(fda).flatten(2), self.wk(h).flatten(2)
        if self.normalize_qk:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(1, 2) / c ** 0.5).softmax(dim=-1)         # (B, C, C)
        return (attn @ h.flatten(2)).view(b, c, hh, ww) + h


class DINOIR(Restormer):
    """Restormer + DINOv2 guidance. ``use_psf=False`` gives the plain Restormer baseline (Table 3);
    ``layers`` picks the DINOv2 blocks (Table 5 varies them)."""

    def __init__(self, dino: DINOFeatures, use_psf: bool = True, levels: Sequence[str] = ("enc1", "enc2", "enc3", "latent"),
                 normalize_qk: bool = False, **restormer_kw):
        super().__init__(**restormer_kw)
        self.dino = [dino]  # shared frozen extractor, not a registered submodule (not trained, not saved)
        self.use_psf = use_psf
        if use_psf:
            fdim = self.dims[0]
            self.psf = PSF(dino.dim, fdim, n=len(dino.layers))
            dims = dict(zip(("enc1", "enc2", "enc3", "latent"), self.dims))
            for lv in levels:
                self.fuse[lv] = DRFusion(fdim, dims[lv], normalize_qk)

    def context(self, x: torch.Tensor, **kw) -> dict:
        if not self.use_psf:
            return {}
        dino = self.dino[0].to(x.device)
        with torch.no_grad():
            feats = dino(x)
        return {"dino": self.psf(feats)}
