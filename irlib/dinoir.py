"""DINO-IR: DINOv2 features (PSF gated mixture of experts), D-R adaption/fusion in a Restormer, the DPC
loss, and the paper's DINOv2 analyses (Figs. 3a, 3b, 5 and the PSF gating scores) as plan studies.

No public code exists; the paper is the specification. Where it leaves a choice open (its supplementary
material is not available) we choose and say so:

* DINOv2 blocks for PSF's shallow/medium/deep features: indices (2, 6, 11) of ViT-S/14's 12 blocks (0-based),
  i.e. the 3rd, 7th and last block, one from each third of the network. Override with ``layers=``.
* Experts: two 3x3 convolutions with GELU; gating: MLP on the global average of the concatenated
  features, softmax over the three experts.
* D-R fusion after every encoder level and the latent level (``levels=``), single-head channel
  attention exactly as Eq. (5): ``Softmax(Wq(F_DA) Wk(F_I)^T / sqrt(C)) F_I + F_I`` (query from the
  adapted DINO feature, key and value from the restoration feature; the value is F_I itself). The printed
  equation names the projections W_k(F_D-A) and W_q(F_I) while the text calls F_D-A the query; both describe
  the same product, which is what we compute (our ``wq`` acts on F_D-A, ``wk`` on F_I).
* DPC (Eq. 6) on DINOv2's *shallow* blocks: :data:`DPC_LAYERS` = (0, 1, 2, 3), the first third of ViT-S/14
  (which holds PSF's shallow block 2), equal weights 1/n, L1 distances. The paper motivates DPC with the shallow
  features ("Leveraging the ability of shallow features from DINOv2 to characterize low-level image details";
  "features extracted from shallow layers of DINOv2 can discern low- and high-quality images", Fig. 5) and
  writes Ψ_i as "the i-th hidden features", i = 1..n; n and w_i are not given. The alternative — PSF's
  shallow/medium/deep blocks (2, 6, 11), which irlib used before — is :data:`DPC_LAYERS_PSF` (the plan's
  ``dpc="psf"`` option).
* The frozen random DINOv2 of the smoke/rehearsal profiles is seeded (the same network in every process), its
  LayerScale gains set to 1 (DINOv2's 1e-5 makes every random block an identity, so all layers would equal the
  patch embedding), and the smoke-size ViT always has ViT-S's 12 blocks, so every layer choice reads one network.
* Fig. 3b: σ list :data:`FIG3B_SIGMAS`; feature PSNR of min-max normalised maps (:func:`feature_psnr` says why);
  all three PSNRs on the pixels the ViT sees (:func:`noise_robustness`).

Studies (``fn(ctx: StudyContext, **kw) -> DataFrame`` for :mod:`irlib.engine`): :func:`fig3a_study`,
:func:`fig3b_study`, :func:`gating_study`, :func:`fig5_study`; their figure code is in
:mod:`irlib.papers.dinoir.figures`.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .losses import ratio_contrastive
from .models.dinoir import DEFAULT_LAYERS, DINOIR, LAYER_NAMES, PSF, TINY_VIT, DINOFeatures, DRFusion  # noqa: F401

DPC_LAYERS = (0, 1, 2, 3)
"""DPC's blocks: the shallow third of ViT-S/14 (the paper's motivation); see the module docstring."""
DPC_LAYERS_PSF = DEFAULT_LAYERS
"""The alternative DPC blocks: PSF's shallow/medium/deep."""


class DPCLoss(nn.Module):
    """DINO perceptual contrastive loss (Eq. 6): sum_i w_i L1(Ψ_i(v), Ψ_i(v+)) / L1(Ψ_i(v), Ψ_i(v-)).

    v = restored output, v+ = clean target, v- = degraded input. Trainer term with weight λ (paper: 1).
    ``layers`` default to the extractor's own (the plan builds it with :data:`DPC_LAYERS`); ``weights`` to 1/n.
    """

    def __init__(self, dino: DINOFeatures, layers: Sequence[int] | None = None, weights: Sequence[float] | None = None):
        super().__init__()
        self.dino = [dino]
        self.layers = tuple(layers or dino.layers)
        self.weights = tuple(weights or [1.0 / len(self.layers)] * len(self.layers))
        if len(self.weights) != len(self.layers):
            raise ValueError(f"DPC needs one weight per layer: {len(self.weights)} weights, {len(self.layers)} layers")

    def forward(self, out: torch.Tensor, batch: dict, model=None) -> torch.Tensor:
        d = self.dino[0].to(out.device)
        with torch.no_grad():
            fp, fn = d(batch["gt"], self.layers), d(batch["lq"], self.layers)
        return ratio_contrastive(d(out, self.layers), fp, fn, self.weights)
