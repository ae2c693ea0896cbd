"""The backbones' original training schedules, used by the full profile.

SPN retrains each backbone "with its original configuration" and adds only its loss. These are those
configurations as their authors released them (the ``source`` of each says where). IDT's training settings
are not published (its repository ships test code only), so IDT falls back to the profile's defaults and
its rows say so.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily: plans are built and listed without it
    import torch


@dataclass(frozen=True)
class Schedule:
    """Optimisation schedule of one run; part of a run's identity (``source``/``name`` are not)."""

    steps: int
    batch: int
    patch: int                      # ground-truth patch side (x4 SR: 4x the LR patch)
    lr: float
    optimizer: str = "adam"         # "adam" or "adamw"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    decay: str = "none"             # "step" (milestones x gamma) or "cosine" (to eta_min)
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    eta_min: float = 0.0
    rec: str = "l1"                 # the backbone's own reconstruction loss (irlib.losses.LOSSES)
    ema: float | None = None
    grad_clip: float | None = None
    source: str = field(default="", compare=False)

    def lr_at(self, step: int) -> float:
        """Learning rate used for optimiser step ``step`` (0-based)."""
        if self.decay == "step":
            return self.lr * self.gamma ** sum(step >= m for m in self.milestones)
        if self.decay == "cosine":
            return self.eta_min + (self.lr - self.eta_min) * 0.5 * (1 + math.cos(math.pi * min(step, self.steps) / self.steps))
        return self.lr

    def scheduler(self, opt: "torch.optim.Optimizer") -> "torch.optim.lr_scheduler.LambdaLR":
        """A per-step scheduler following :meth:`lr_at` (for ``Trainer(scheduler=...)``)."""
        import torch

        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: self.lr_at(s) / self.lr)


ORIGINAL: dict[str, Schedule] = {
    "EDSR-light": Schedule(300_000, 16, 192, 1e-4, decay="step", milestones=(200_000,),
                           source="EDSR paper Sec. 4.2 and EDSR-PyTorch defaults (300 epochs x 1000 updates, halve at 200)"),
    "SwinIR-light": Schedule(500_000, 64, 256, 2e-4, decay="step", milestones=(250_000, 400_000, 450_000, 475_000),
                             ema=0.999, source="KAIR options/swinir/train_swinir_sr_lightweight.json (x4 from scratch)"),
    "FFANet": Schedule(500_000, 2, 240, 1e-4, decay="cosine",
                       source="FFA-Net README training command (--steps 500000 --bs 2 --crop_size 240 --lr 1e-4), cosine"),
    "DehazeFormer-T": Schedule(131_400, 32, 256, 4e-4, optimizer="adamw", weight_decay=0.01, decay="cosine", eta_min=4e-6,
                               source="DehazeFormer configs/indoor/dehazeformer-t.json: 300 epochs of ITS (13,990 pairs) "
                                      "at batch 32, AdamW (torch default decay), cosine to lr/100"),
    "NAFNet": Schedule(200_000, 32, 256, 1e-3, optimizer="adamw", betas=(0.9, 0.9), decay="cosine", eta_min=1e-7,
                       rec="psnr", source="NAFNet options/train/GoPro/NAFNet-width32.yml (8 GPUs x 4, PSNR loss)"),
}
