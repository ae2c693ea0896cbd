"""AirNet (Li et al., CVPR 2022, "All-in-one image restoration for unknown corruption"), a comparison method that
DINO-IR trained in its own multi-task setting (DINO-IR Table 1, "AirNet").

Two parts, named as in the authors' release (XLearning-SCU/2022-CVPR-AirNet, ``net/model.py``):

* ``E``: the contrastive degradation encoder (CBDE). ``E.E`` is a MoCo pair of ResEncoders, ``encoder_q`` (trained
  by gradient) and ``encoder_k`` (its momentum copy, ``requires_grad=False``), plus the persistent buffers
  ``queue`` (dim x K negatives, K = batch size x 256 = 1280 for the release's batch of 5) and ``queue_ptr``. A
  ResEncoder is ``E_pre`` (a full-resolution ResBlock whose output, ``inter``, is the degradation map the restorer
  reads), ``E`` (two stride-2 ResBlocks and a global pool: the degradation embedding) and ``mlp`` (the projection
  head the contrastive loss uses).
* ``R``: the degradation-guided restoration network (DGRN): ``head`` conv, ``body`` = 5 groups (DGG) of 5 blocks
  (DGB) and a conv, ``tail`` conv. Each DGB has two degradation-guided modules (DGM, ``dgm1``/``dgm2``) and two
  convs; a DGM adds a modulated deformable conv (``dcn``: ``weight`` and ``conv_offset_mask``, whose 3x3 conv
  reads ``cat(x, inter)`` and gives 2x9 offsets and 9 sigmoid masks) and an SFT layer (``sft.conv_gamma``,
  ``sft.conv_beta``) to its input. The release computes the deformable conv with ``mmcv.ops``;
  :func:`torchvision.ops.deform_conv2d` computes the same operation (same offset layout: (dy, dx) per kernel
  point, row-major), which ``tests/test_release_dinoir_comparisons_b.py`` checks against an explicit bilinear
  reference; on CPU :func:`irlib.models.deform.modulated_deform_conv2d` computes it faster with the same values
  and gradients (``DCNLayer.impl``).

A released checkpoint (``ckpt/All.pth``: every key of ``R`` and ``E``, the two encoders, BN statistics and the
queue) loads with ``strict=True``. At inference the release runs ``E`` on the input alone (``encoder_q``, batch
norm in eval mode) and ``R(x, inter)``.

Training, as the release's ``train.py``/``option.py`` define it (facts with file and line in
``tests/fixtures/release/airnet.json`` under "training"): 1000 epochs in all; the first 100 (``epochs_encoder``)
train the encoder alone with the contrastive loss (cross-entropy over [positive, queue] logits at temperature
0.07; the key is a second crop of the same degraded image, encoded by the momentum encoder, m = 0.999); after
them the whole network trains with ``L1(restored, clean) + 0.1 * contrastive``. Adam over all parameters, batch 5
(one image per degradation type), 128-pixel patches; lr 1e-3 x 0.1 per 60 epochs in the encoder stage, then
1e-4 x 0.5 per 125 epochs. :meth:`AirNet.contrast` is the encoder-only step, ``model(x, x_key)`` in training mode
the joint one; :func:`training_forward` is the trainer's forward for both (irlib's ``forward="airnet"``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .deform import modulated_deform_conv2d


# ------------------------------------------------------------------------------------------------ encoder (CBDE)
class ResBlock(nn.Module):
    """conv3x3(stride)-BN-LeakyReLU(0.1)-conv3x3-BN plus a 1x1(stride)-BN shortcut, then LeakyReLU(0.1)."""

    def __init__(self, in_feat: int, out_feat: int, stride: int = 1):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(in_feat, out_feat, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(out_feat),
            nn.LeakyReLU(0.1), nn.Conv2d(out_feat, out_feat, 3, padding=1, bias=False), nn.BatchNorm2d(out_feat))
        self.shortcut = nn.Sequential(nn.Conv2d(in_feat, out_feat, 1, stride=stride, bias=False),
                                      nn.BatchNorm2d(out_feat))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.backbone(x) + self.shortcut(x), 0.1)


class ResEncoder(nn.Module):
    """Returns (embedding ``fea`` [B, widths[2]], projection ``out`` [B, dim], degradation map ``inter``
    [B, widths[0], H, W])."""

    def __init__(self, widths: Sequence[int] = (64, 128, 256), dim: int = 256, in_ch: int = 3):
        super().__init__()
        w0, w1, w2 = widths
        self.E_pre = ResBlock(in_ch, w0, stride=1)
        self.E = nn.Sequential(ResBlock(w0, w1, stride=2), ResBlock(w1, w2, stride=2), nn.AdaptiveAvgPool2d(1))
        self.mlp = nn.Sequential(nn.Linear(w2, dim), nn.LeakyReLU(0.1), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        inter = self.E_pre(x)
        fea = self.E(inter).flatten(1)
        return fea, self.mlp(fea), inter


class MoCo(nn.Module):
    """Query encoder, momentum key encoder (``m``) and a queue of ``K`` normalised negative keys."""

    def __init__(self, widths: Sequence[int] = (64, 128, 256), dim: int = 256, K: int = 1280, m: float = 0.999,
                 T: float = 0.07, in_ch: int = 3):
        super().__init__()
        self.K, self.m, self.T = int(K), float(m), float(T)
        self.encoder_q = ResEncoder(widths, dim, in_ch)
        self.encoder_k = ResEncoder(widths, dim, in_ch)
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            pk.data.copy_(pq.data)
            pk.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(dim, self.K), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key <- m * key + (1 - m) * query, parameter by parameter."""
        for pq, pk in zip(self.encoder_q.parameters(), self.encoder_k.parameters()):
            pk.data = pk.data * self.m + pq.data * (1.0 - self.m)

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the ``len(keys)`` oldest queue columns by ``keys`` and advance the pointer."""
        n = keys.shape[0]
        if self.K % n:
            raise ValueError(f"the queue size {self.K} must be a multiple of the batch size {n}")
        if keys.device.type == "meta":   # cost tracing (irlib.engine.trace): no values, and a copy costs no FLOPs
            return
        ptr = int(self.queue_ptr)
        self.queue[:, ptr:ptr + n] = keys.t()
        self.queue_ptr[0] = (ptr + n) % self.K

    def forward(self, im_q: torch.Tensor, im_k: torch.Tensor | None = None):
        """Training (with ``im_k``): (embedding, logits [B, 1+K], labels (zeros), inter), updating the key
        encoder and the queue. Otherwise: (embedding, inter) from the query encoder."""
        if not (self.training and im_k is not None):
            fea, _, inter = self.encoder_q(im_q)
            return fea, inter
        fea, q, inter = self.encoder_q(im_q)
        q = F.normalize(q, dim=1)
        with torch.no_grad():
            self.momentum_update()
            _, k, _ = self.encoder_k(im_k)
            k = F.normalize(k, dim=1)
        l_pos = torch.einsum("nc,nc->n", q, k).unsqueeze(-1)
        l_neg = torch.einsum("nc,ck->nk", q, self.queue.clone().detach())
        logits = torch.cat([l_pos, l_neg], dim=1) / self.T
        labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
        self.enqueue(k)
        return fea, logits, labels, inter


class CBDE(nn.Module):
    """Contrastive-based degradation encoder: holds the MoCo pair as ``E`` (the release's nesting)."""

    def __init__(self, widths: Sequence[int] = (64, 128, 256), dim: int = 256, K: int = 1280, m: float = 0.999,
                 T: float = 0.07, in_ch: int = 3):
        super().__init__()
        self.E = MoCo(widths, dim, K, m, T, in_ch)

    def forward(self, x_query: torch.Tensor, x_key: torch.Tensor | None = None):
        return self.E(x_query, x_key)


# --------------------------------------------------------------------------------------------- restorer (DGRN)
def _conv(cin: int, cout: int, k: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


class DCNLayer(nn.Module):
    """Modulated deformable conv whose offsets and masks come from a conv over ``cat(x, inter)``.

    Parameters as the release's ``DCN_layer``: ``weight`` [out, in, k, k], optional ``bias``, and
    ``conv_offset_mask`` (2*in -> 3*k*k, zero-initialised so training starts from a plain conv)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, stride: int = 1, padding: int = 1,
                 dilation: int = 1, bias: bool = False, guide_channels: int | None = None):
        super().__init__()
        k = int(kernel_size)
        self.stride, self.padding, self.dilation = stride, padding, dilation
        self.impl = "auto"   # irlib.models.deform: torchvision on CUDA, the vectorised CPU kernel on CPU
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        guide = in_channels if guide_channels is None else guide_channels
        self.conv_offset_mask = nn.Conv2d(in_channels + guide, 3 * k * k, k, stride=stride, padding=padding)
        nn.init.zeros_(self.conv_offset_mask.weight)
        nn.init.zeros_(self.conv_offset_mask.bias)
        bound = 1.0 / math.sqrt(in_channels * k * k)
        nn.init.uniform_(self.weight, -bound, bound)

    def forward(self, x: torch.Tensor, inter: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset_mask(torch.cat([x, inter], dim=1))
        o1, o2, mask = torch.chunk(out, 3, dim=1)
        return modulated_deform_conv2d(x.contiguous(), torch.cat([o1, o2], dim=1), self.weight, self.bias,
                                       stride=self.stride, padding=self.padding, dilation=self.dilation,
                                       mask=torch.sigmoid(mask), impl=self.impl)


class SFTLayer(nn.Module):
    """Spatial feature transform: ``x * gamma(inter) + beta(inter)``, each a 1x1-LeakyReLU-1x1 (no bias)."""

    def __init__(self, channels_in: int, channels_out: int):
        super().__init__()

        def branch() -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, bias=False), nn.LeakyReLU(0.1),
                                 nn.Conv2d(channels_out, channels_out, 1, bias=False))

        self.conv_gamma, self.conv_beta = branch(), branch()

    def forward(self, x: torch.Tensor, inter: torch.Tensor) -> torch.Tensor:
        return x * self.conv_gamma(inter) + self.conv_beta(inter)


class DGM(nn.Module):
    """Degradation-guided module: ``x + dcn(x, inter) + sft(x, inter)``."""

    def __init__(self, channels_in: int, channels_out: int, kernel_size: int = 3):
        super().__init__()
        self.dcn = DCNLayer(channels_in, channels_out, kernel_size, padding=(kernel_size - 1) // 2, bias=False)
        self.sft = SFTLayer(channels_in, channels_out)

    def forward(self, x: torch.Tensor, inter: torch.Tensor) -> torch.Tensor:
        return x + (self.dcn(x, inter) + self.sft(x, inter))


class DGB(nn.Module):
    """dgm1-act-conv1-act-dgm2-act-conv2 plus the input (act: LeakyReLU 0.1)."""

    def __init__(self, n_feat: int, kernel_size: int = 3):
        super().__init__()
        self.dgm1, self.dgm2 = DGM(n_feat, n_feat, kernel_size), DGM(n_feat, n_feat, kernel_size)
        self.conv1, self.conv2 = _conv(n_feat, n_feat, kernel_size), _conv(n_feat, n_feat, kernel_size)

    def forward(self, x: torch.Tensor, inter: torch.Tensor) -> torch.Tensor:
        out = F.leaky_relu(self.dgm1(x, inter), 0.1)
        out = F.leaky_relu(self.conv1(out), 0.1)
        out = F.leaky_relu(self.dgm2(out, inter), 0.1)
        return self.conv2(out) + x


class DGG(nn.Module):
    """``n_blocks`` DGBs and a conv (``body``), plus the input."""

    def __init__(self, n_feat: int, kernel_size: int, n_blocks: int):
        super().__init__()
        self.n_blocks = n_blocks
        self.body = nn.Sequential(*[DGB(n_feat, kernel_size) for _ in range(n_blocks)],
                                  _conv(n_feat, n_feat, kernel_size))

    def forward(self, x: torch.Tensor, inter: torch.Tensor) -> torch.Tensor:
        res = x
        for i in range(self.n_blocks):
            res = self.body[i](res, inter)
        return self.body[-1](res) + x


class DGRN(nn.Module):
    """Degradation-guided restoration network (``head``, ``body`` = groups + conv, ``tail``); note its output is
    the restored image itself (no global input skip)."""

    def __init__(self, n_feats: int = 64, n_groups: int = 5, n_blocks: int = 5, kernel_size: int = 3,
                 in_ch: int = 3):
        super().__init__()
        self.n_groups = n_groups
        self.head = nn.Sequential(_conv(in_ch, n_feats, kernel_size))
        self.body = nn.Sequential(*[DGG(n_feats, kernel_size, n_blocks) for _ in range(n_groups)],
                                  _conv(n_feats, n_feats, kernel_size))
        self.tail = nn.Sequential(_conv(n_feats, in_ch, kernel_size))

    def forward(self, x: torch.Tensor, inter: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        res = x
        for i in range(self.n_groups):
            res = self.body[i](res, inter)
        return self.tail(self.body[-1](res) + x)


# ------------------------------------------------------------------------------------------------------ AirNet
class AirNet(nn.Module):
    """AirNet: restorer ``R`` guided by the degradation map of the contrastive encoder ``E``.

    ``model(x)`` (evaluation, or training without a key crop) returns the restored image;
    ``model(x, x_key)`` in training mode returns ``(restored, logits, labels)`` as the release's joint stage does.
    Defaults are the release (``queue_size`` = 5 x 256, the release's batch of 5 times the embedding width).
    The restorer width must equal the encoder's first width: the deformable convs read ``cat(x, inter)``.
    """

    def __init__(self, n_feats: int = 64, n_groups: int = 5, n_blocks: int = 5,
                 widths: Sequence[int] = (64, 128, 256), dim: int = 256, queue_size: int = 1280,
                 momentum: float = 0.999, temperature: float = 0.07, in_ch: int = 3):
        super().__init__()
        if len(widths) != 3 or widths[0] != n_feats:
            raise ValueError(f"AirNet needs three encoder widths with widths[0] == n_feats, got {tuple(widths)} "
                             f"and n_feats={n_feats}")
        self.R = DGRN(n_feats, n_groups, n_blocks, 3, in_ch)
        self.E = CBDE(widths, dim, queue_size, momentum, temperature, in_ch)

    @classmethod
    def release(cls, batch_size: int = 5, **kw) -> "AirNet":
        """The release's network; its queue holds ``batch_size * 256`` keys (option.py: batch = 5 types)."""
        return cls(queue_size=batch_size * 256, **kw)

    @classmethod
    def tiny(cls, **kw) -> "AirNet":
        """A CPU smoke size with the same structure."""
        cfg = dict(n_feats=8, n_groups=1, n_blocks=1, widths=(8, 16, 16), dim=16, queue_size=32)
        return cls(**{**cfg, **kw})

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(degradation embedding, degradation map ``inter``) from the query encoder."""
        fea, _, inter = self.E.E.encoder_q(x)
        return fea, inter

    def restore(self, x: torch.Tensor, inter: torch.Tensor) -> torch.Tensor:
        """The restorer given the degradation map."""
        return self.R(x, inter)

    def contrast(self, x_query: torch.Tensor, x_key: torch.Tensor):
        """The encoder-only stage's step: (embedding, logits, labels, inter); the loss is
        ``cross_entropy(logits, labels)``. Updates the key encoder and the queue (call in training mode)."""
        if not self.training:
            raise RuntimeError("AirNet.contrast updates the MoCo queue: call it in training mode")
        return self.E(x_query, x_key)

    def forward(self, x: torch.Tensor, x_key: torch.Tensor | None = None):
        if self.training and x_key is not None:
            _, logits, labels, inter = self.E(x, x_key)
            return self.R(x, inter), logits, labels
        _, inter = self.encode(x)
        return self.R(x, inter)


CONTRAST_TERM = "airnet_contrast"   # irlib.losses' name of the contrastive term


def training_forward(model: nn.Module, batch: dict) -> torch.Tensor:
    """The release's training forward on ``batch["lq"]`` (query crop) and ``batch["lq_key"]`` (key crop).

    While no term but the contrastive one is on (``batch["active"]``, the trainer's active terms), the encoder
    alone runs (the release's ``net.E(x_query, x_key)``; the restorer gets no gradient, as in the release) and the
    logits are returned; otherwise ``model(x_query, x_key)`` runs and the restored image is returned. Either way
    the MoCo logits and labels are left in ``batch`` (``airnet_logits``, ``airnet_labels``) for the loss."""
    net = getattr(model, "module", model)   # DDP
    restorer = any(k != CONTRAST_TERM for k in batch.get("active", ("l1",)))
    if restorer:
        out, logits, labels = model(batch["lq"], batch["lq_key"])
    else:
        _, logits, labels, _ = net.contrast(batch["lq"], batch["lq_key"])
        out = logits
    batch["airnet_logits"], batch["airnet_labels"] = logits, labels
    return out
