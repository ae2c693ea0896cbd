"""DINO-IR: DINOv2 features (PSF gated mixture of experts), D-R adaption/fusion in a Restormer, the DPC
loss, and the feature-robustness study (Fig. 3).

No public code exists; the paper is the specification. Where it leaves a choice open (its supplementary
material is not available) we choose and say so:
* DINOv2 blocks for shallow/medium/deep: indices (2, 6, 11) of ViT-S/14's 12 blocks (0-based), i.e.
  the 3rd, 7th and last block. Override with ``layers=``.
* Experts: two 3x3 convolutions with GELU; gating: MLP on the global average of the concatenated
  features, softmax over the three experts.
* D-R fusion after every encoder level and the latent level (``levels=``), single-head channel
  attention exactly as Eq. (5): ``Softmax(Wq(F_DA) Wk(F_I)^T / sqrt(C)) F_I + F_I`` (query from the
  adapted DINO feature, key and value from the restoration feature; the value is F_I itself). The printed
  equation names the projections W_k(F_D-A) and W_q(F_I) while the text calls F_D-A the query; both describe
  the same product, which is what we compute (our ``wq`` acts on F_D-A, ``wk`` on F_I).
* DPC layer weights: equal (1/n) over the shallow/medium/deep layers; L1 distance as the paper says.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .losses import imagenet_normalize, ratio_contrastive
from .models.restormer import Restormer

DEFAULT_LAYERS = (2, 6, 11)


class DINOFeatures(nn.Module):
    """Frozen DINOv2 ViT returning hidden states of chosen blocks as (B, D, h, w) maps.

    ``pretrained=True`` loads ``timm`` weights (``vit_small_patch14_dinov2.lvd142m`` by default, from the
    hub); ``weights_file=`` loads a local file through timm's ``pretrained_cfg_overlay``; ``tiny=True``
    builds a small random ViT with the same code path for offline smoke runs (numbers from it are
    pipeline checks only).
    """

    def __init__(self, name: str = "vit_small_patch14_dinov2.lvd142m", layers: Sequence[int] = DEFAULT_LAYERS,
                 pretrained: bool = True, weights_file: str | None = None, img_size: int = 224, tiny: bool = False):
        super().__init__()
        import timm

        kw: dict = {"img_size": img_size}
        if tiny:
            kw.update(embed_dim=48, depth=max(layers) + 1, num_heads=2)
        if weights_file:
            kw["pretrained_cfg_overlay"] = {"file": str(weights_file)}
        self.vit = timm.create_model(name, pretrained=bool(pretrained or weights_file), num_classes=0, **kw)
        self.vit.eval().requires_grad_(False)
        self.layers, self.img_size = tuple(layers), img_size
        self.dim = self.vit.embed_dim
        self.pretrained = bool(pretrained or weights_file)

    def train(self, mode: bool = True):
        return super().train(False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.img_size or x.shape[-2] != self.img_size:
            x = F.interpolate(x, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
        return imagenet_normalize(x)

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


class DPCLoss(nn.Module):
    """DINO perceptual contrastive loss (Eq. 6): sum_i w_i L1(Ψ_i(v), Ψ_i(v+)) / L1(Ψ_i(v), Ψ_i(v-)).

    v = restored output, v+ = clean target, v- = degraded input. Trainer term with weight λ (paper: 1).
    """

    def __init__(self, dino: DINOFeatures, layers: Sequence[int] | None = None, weights: Sequence[float] | None = None):
        super().__init__()
        self.dino = [dino]
        self.layers = tuple(layers or dino.layers)
        self.weights = tuple(weights or [1.0 / len(self.layers)] * len(self.layers))

    def forward(self, out: torch.Tensor, batch: dict, model=None) -> torch.Tensor:
        d = self.dino[0].to(out.device)
        with torch.no_grad():
            fp, fn = d(batch["gt"], self.layers), d(batch["lq"], self.layers)
        return ratio_contrastive(d(out, self.layers), fp, fn, self.weights)


# ----------------------------------------------------------------------------------- robustness study
def feature_psnr(f: torch.Tensor, f_clean: torch.Tensor) -> float:
    """PSNR of a feature map against the clean one, peak = value range of the clean features."""
    peak = float(f_clean.max() - f_clean.min())
    mse = float(F.mse_loss(f, f_clean))
    return 10.0 * np.log10(peak ** 2 / mse)


@torch.no_grad()
def noise_robustness(dino: DINOFeatures, clean: torch.Tensor, sigmas: Sequence[float] = (5, 10, 15, 25, 35, 50, 75),
                     seed: int = 0, layer: int | None = None) -> "pd.DataFrame":
    """Fig. 3b: PSNR to the clean counterpart of the image, its patch embedding (f_IMAGE) and deep DINOv2
    features (f_DINO) at each noise level; ``deviation`` = PSNR minus the mean over levels."""
    import pandas as pd

    from .data.degrade import add_noise
    from .metrics import psnr

    layer = dino.layers[-1] if layer is None else layer
    x = clean[None] if clean.dim() == 3 else clean
    f_clean, e_clean = dino(x, [layer])[0], dino.patch_embed(x)
    rows = []
    for k, s in enumerate(sigmas):
        y = add_noise(x, s, seed * 1000 + k, clip=True)
        rows += [{"sigma": s, "kind": "image", "PSNR": float(psnr(y, x)[0])},
                 {"sigma": s, "kind": "f_IMAGE", "PSNR": feature_psnr(dino.patch_embed(y), e_clean)},
                 {"sigma": s, "kind": "f_DINO", "PSNR": feature_psnr(dino(y, [layer])[0], f_clean)}]
    df = pd.DataFrame(rows)
    df["deviation"] = df["PSNR"] - df.groupby("kind")["PSNR"].transform("mean")
    return df


@torch.no_grad()
def pca_rgb(dino: DINOFeatures, images: dict[str, torch.Tensor], layer: int | None = None, fit_on: str | None = None) -> dict[str, np.ndarray]:
    """Fig. 3a: project deep DINOv2 patch features of every image onto 3 principal components fitted on
    ``fit_on`` (default: the first image, the clean one) and scale them to RGB with the clean range."""
    from sklearn.decomposition import PCA

    layer = dino.layers[-1] if layer is None else layer
    feats = {k: dino(v[None], [layer])[0][0] for k, v in images.items()}
    ref = feats[fit_on or next(iter(feats))]
    d, h, w = ref.shape
    pca = PCA(n_components=3).fit(ref.reshape(d, -1).T.numpy())
    proj = {k: pca.transform(f.reshape(d, -1).T.numpy()).reshape(h, w, 3) for k, f in feats.items()}
    ref_p = proj[fit_on or next(iter(proj))]
    lo, hi = ref_p.min(axis=(0, 1)), ref_p.max(axis=(0, 1))
    return {k: np.clip((p - lo) / (hi - lo + 1e-8), 0, 1) for k, p in proj.items()}
