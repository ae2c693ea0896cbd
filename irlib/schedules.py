"""The networks' original training schedules, used by the full profile.

SPN retrains each backbone "with its original configuration" and adds only its loss; TextPromptIR, DINO-IR and
DiffLoss state their own settings. :data:`ORIGINAL` holds one :class:`Schedule` per (network, context), each with
a ``source`` saying where every number comes from: the paper (the default where paper and release disagree), the
authors' released option/config files where the paper is silent, or, where nothing is published, an irlib choice
(its ``source`` then starts with ``"irlib choice:"`` and says why).

Conventions
-----------
* ``step`` is the 0-based optimiser step. ``tick`` is how many optimiser steps one scheduler step spans: 1 for
  per-iteration schedulers (BasicSR, KAIR, NAFNet), the iterations of one epoch for per-epoch schedulers
  (DehazeFormer, IDT, PromptIR/TextPromptIR), whose learning rate is constant within an epoch. ``milestones``,
  ``t_max``, ``warmup`` and ``periods`` count ticks.
* Epoch-based releases are converted to steps with :func:`iters_per_epoch` and the training-set sizes below.
* ``patch`` is the ground-truth patch side (x4 SR: four times the low-resolution patch).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported lazily: plans are built and listed without it
    import torch

DECAYS = ("none", "step", "cosine", "warmup_cosine", "cosine_restarts", "piecewise")
OPTIMIZERS = ("adam", "adamw", "sgd")


@dataclass(frozen=True)
class Schedule:
    """Optimisation schedule of one run; part of a run's identity (``source`` is not).

    ``decay``:
      * ``"none"``: constant ``lr``.
      * ``"step"``: ``lr * gamma ** (number of milestones <= t)`` (torch ``MultiStepLR``).
      * ``"cosine"``: ``eta_min + (lr - eta_min) * (1 + cos(pi * t / T)) / 2`` (torch ``CosineAnnealingLR``'s closed
        form). ``t_max=None``: ``T`` is the whole run and the rate stays at ``eta_min`` after it; with ``t_max`` set the
        cosine keeps going past it (rising again), as torch's scheduler does when stepped beyond ``T_max``.
      * ``"warmup_cosine"``: ``lr * t / (warmup - 1)`` for ``t < warmup``, then a cosine from ``lr`` at ``warmup`` to
        ``eta_min`` at ``t_max`` (the closed form of PromptIR's ``LinearWarmupCosineAnnealingLR`` with a zero start).
      * ``"cosine_restarts"``: Restormer's ``CosineAnnealingRestartCyclicLR``: cycle ``i`` covers ``periods[i]`` ticks
        (a tick on a cycle's last value still belongs to it) and anneals from ``restart_weights[i]``-weighted ``lr``
        to ``eta_mins[i]``; past the last cycle the rate stays at ``eta_mins[-1]``.
      * ``"piecewise"``: explicit ``segments`` ``((from_tick, lr, gamma, every), ...)``, ``from_tick`` increasing from
        0: on tick ``t`` the last segment with ``from_tick <= t`` gives ``lr * gamma ** ((t - from_tick) // every)``.
        It states the rate each tick *uses*, so a release that sets its rate after an epoch (AirNet's
        ``train.py``) is written with each rule starting one tick later (see "AirNet DINO-IR mix").
    ``tick_offset`` shifts every rule by that many ticks: step 0 uses the rate of tick ``tick_offset`` (FFA-Net's loop
    counts steps from 1 and sets each step's rate from its own count before the update, so its step ``s`` (0-based)
    uses ``t = s + 1`` and its last step uses ``t = T``, rate ``eta_min``).
    ``momentum`` is used by ``optimizer="sgd"`` only (the CUB classifier; irlib's Trainer takes adam/adamw).
    """

    steps: int
    batch: int
    patch: int                      # ground-truth patch side (x4 SR: 4x the LR patch)
    lr: float
    optimizer: str = "adam"         # "adam", "adamw" or "sgd"
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    decay: str = "none"             # one of DECAYS
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    eta_min: float = 0.0
    rec: str = "l1"                 # the network's reconstruction loss (irlib.losses.LOSSES)
    ema: float | None = None
    grad_clip: float | None = None
    tick: int = 1                   # optimiser steps per scheduler step
    t_max: int | None = None        # cosine half-period / warmup_cosine end, in ticks
    warmup: int = 0                 # warmup_cosine: linear warm-up length, in ticks
    periods: tuple[int, ...] = ()   # cosine_restarts: cycle lengths, in ticks
    restart_weights: tuple[float, ...] = ()
    eta_mins: tuple[float, ...] = ()
    momentum: float = 0.0
    # piecewise: (from_tick, lr, gamma, every) per segment; left out of a run's key while empty (older runs keep theirs)
    segments: tuple[tuple[int, float, float, int], ...] = field(default=(), metadata={"omit_default": True})
    # the tick whose rate optimiser step 0 uses (1: a release that advances its schedule before each step, as FFA-Net's
    # net/main.py does); left out of a run's key while 0
    tick_offset: int = field(default=0, metadata={"omit_default": True})
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        for name in ("betas", "milestones", "periods", "restart_weights", "eta_mins"):  # lists (from JSON) -> tuples
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "segments", tuple((int(a), float(b), float(c), int(d)) for a, b, c, d in self.segments))
        for name in ("steps", "batch", "patch", "tick"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Schedule.{name} must be a positive integer, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ValueError(f"Schedule.lr must be positive, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Schedule.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.decay not in DECAYS:
            raise ValueError(f"Schedule.decay must be one of {DECAYS}, got {self.decay!r}")
        if len(self.betas) != 2:
            raise ValueError(f"Schedule.betas must be two numbers, got {self.betas!r}")
        if int(self.tick_offset) < 0:
            raise ValueError(f"Schedule.tick_offset must be >= 0, got {self.tick_offset!r}")
        if self.t_max is not None and self.t_max < 1:
            raise ValueError(f"Schedule.t_max must be positive or None, got {self.t_max!r}")
        if self.decay == "warmup_cosine" and (self.t_max is None or not 2 <= self.warmup < self.t_max):
            raise ValueError(f"warmup_cosine needs 2 <= warmup < t_max, got warmup={self.warmup}, t_max={self.t_max}")
        if self.decay == "cosine_restarts" and not (
                len(self.periods) == len(self.restart_weights) == len(self.eta_mins) >= 1 and min(self.periods) >= 1):
            raise ValueError("cosine_restarts needs equally long, non-empty periods, restart_weights and eta_mins "
                             f"(periods >= 1), got {self.periods}, {self.restart_weights}, {self.eta_mins}")
        if self.decay == "piecewise":
            starts = [seg[0] for seg in self.segments]
            if not starts or starts[0] != 0 or any(b <= a for a, b in itertools.pairwise(starts)) or any(
                    seg[1] <= 0 or seg[2] <= 0 or seg[3] < 1 for seg in self.segments):
                raise ValueError("piecewise needs segments (from_tick, lr, gamma, every) with from_tick strictly "
                                 f"increasing from 0, lr > 0, gamma > 0, every >= 1; got {self.segments}")
        elif self.segments:
            raise ValueError(f"segments are read by decay='piecewise' only, not {self.decay!r}")

    def _cosine(self, t: float, T: float, hi: float, lo: float) -> float:
        return lo + (hi - lo) * 0.5 * (1 + math.cos(math.pi * t / T))

    def lr_at(self, step: int) -> float:
        """Learning rate used for optimiser step ``step`` (0-based): the rate of tick ``step // tick + tick_offset``."""
        t = step // self.tick + self.tick_offset
        if self.decay == "step":
            return self.lr * self.gamma ** sum(t >= m for m in self.milestones)
        if self.decay == "cosine":
            if self.t_max is None:
                T = max(1, self.steps // self.tick)
                return self._cosine(min(t, T), T, self.lr, self.eta_min)
            return self._cosine(t, self.t_max, self.lr, self.eta_min)
        if self.decay == "warmup_cosine":
            assert self.t_max is not None
            if t < self.warmup:
                return self.lr * t / (self.warmup - 1)
            return self._cosine(t - self.warmup, self.t_max - self.warmup, self.lr, self.eta_min)
        if self.decay == "cosine_restarts":
            start = 0
            for period, weight, lo in zip(self.periods, self.restart_weights, self.eta_mins):
                if t <= start + period:
                    return lo + weight * (self.lr - lo) * 0.5 * (1 + math.cos(math.pi * (t - start) / period))
                start += period
            return self.eta_mins[-1]
        if self.decay == "piecewise":
            start, lr, gamma, every = next(seg for seg in reversed(self.segments) if seg[0] <= t)
            return lr * gamma ** ((t - start) // every)
        return self.lr

    def scheduler(self, opt: "torch.optim.Optimizer") -> "torch.optim.lr_scheduler.LambdaLR":
        """A per-step scheduler following :meth:`lr_at` (for ``Trainer(scheduler=...)``)."""
        import torch

        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: self.lr_at(s) / self.lr)


def iters_per_epoch(n_samples: int, batch: int, drop_last: bool = True) -> int:
    """Optimiser steps in one pass over ``n_samples`` at ``batch`` (``drop_last`` as the release's DataLoader)."""
    return n_samples // batch if drop_last else -(-n_samples // batch)


# Training-set sizes used to turn epochs into steps (pairs, or samples per epoch as the release counts them).
ITS_PAIRS = 13_990             # RESIDE ITS: 1,399 clear indoor images x 10 hazy renderings
RESIDE6K_PAIRS = 6_000         # DehazeFormer's RESIDE-6K training split
RAIN200_PAIRS = 1_800          # IDT's Rain200L/Rain200H loaders (dataset/imgdata.py: range(1800)); SPN's "Rain100L/H"
DID_PAIRS = 12_000             # IDT dataset/imgdata.py prepare_DID: range(12000)
DDN_PAIRS = 12_600             # IDT dataset/imgdata.py prepare_Rain12600: 900 clean x 14 rainy
SPA_PATCHES = 638_464          # IDT dataset/imgdata.py prepare_SPA: range(638464)
# TextPromptIR utils/dataset_utils.py: 5,144 denoising images (data_dir/noisy/denoise.txt, BSD400 + WED) x 3 copies
# x 3 noise levels, 200 Rain100L pairs (rainTrain.txt) x 200 copies, 72,135 hazy images (hazy_outside.txt)
TEXTPROMPTIR_EPOCH = 5_144 * 3 * 3 + 200 * 200 + 72_135
CUB_TRAIN = 5_994              # CUB-200-2011 train_test_split.txt: images marked 1

# DINO-IR's four-task mix, one pass: DID's 12,000 clean training images twice (blur, noise), its 12,000 rain
# pairs, 4,000 OTS images (irlib choice: the release-free paper gives no epoch, so a pass over every source once).
DINOIR_MIX_EPOCH = 3 * DID_PAIRS + 4_000
_KAIR_DNCNN = ("cszn/KAIR@bcf95ae options/train_dncnn.json: G_optimizer adam lr 1e-4, MultiStepLR milestones "
               "[200K, 400K, 600K, 800K, 1M, 2M] gamma 0.5, dataloader_batch_size 64, H_size 40, G_lossfn l1, no "
               "clipping; colour blind DnCNN (in/out 3 channels, 20 layers as KAIR's dncnn_color_blind)")
_MPRNET = ("swz30/MPRNet@9edfb1d Deraining/training.yml (BATCH_SIZE 16, NUM_EPOCHS 250, LR_INITIAL 2e-4, LR_MIN "
           "1e-6, TRAIN_PS 256) and @51cea72 Deraining/train.py: Adam betas (0.9, 0.999) eps 1e-8, "
           "GradualWarmupScheduler 3 epochs then CosineAnnealingLR(250 - 3, eta_min 1e-6) stepped per epoch, "
           "DataLoader without drop_last, loss = sum over the 3 stage outputs of Charbonnier + 0.05 x edge "
           "(Laplacian) loss. Declared difference: irlib's warm-up starts at 0 (0, lr/2, lr over epochs 1-3), the "
           "release's at lr/3 (lr/3, 2lr/3, lr); epochs counted over DINO-IR's mix")
_NAFNET_SIDD = ("megvii-research/NAFNet@01a4c86 options/train/SIDD/NAFNet-width32.yml (irlib choice of the release's "
                "configs: its denoising one; the paper does not say which): AdamW lr 1e-3 betas (0.9, 0.9) weight "
                "decay 0, TrueCosineAnnealingLR T_max 200K eta_min 1e-7, total_iter 200K, 8 GPUs x batch 4 = 32, "
                "gt_size 256, no flips/rotations, PSNRLoss; basicsr/models/image_restoration_model.py clips the "
                "gradient norm to 0.01 (use_grad_clip defaults to true and the yml does not set it)")
_PROMPTIR = ("va1shn9v/PromptIR@49a78a3 options.py (--epochs 120, --batch_size 8 per GPU x --num_gpus 4 = 32, "
             "--patch_size 128) and @20eff77 train.py: AdamW lr 2e-4 (torch's default weight decay 0.01), "
             "LinearWarmupCosineAnnealingLR(warmup_epochs=15, max_epochs=150) stepped per epoch, L1, drop_last; "
             "epochs counted over DINO-IR's mix")
# AirNet's release: an "epoch" is TrainDataset.__len__ = 400 * len(de_type) samples at batch len(de_type) (drop_last),
# i.e. 400 steps whatever the data; de_type on DINO-IR's tasks as AirNet names them (denoise_15/25/50, derain, dehaze
# and deblur): 6.
AIRNET_EPOCH_STEPS = 400
AIRNET_TYPES = 6
AIRNET_EPOCHS = 1000
AIRNET_ENCODER_EPOCHS = 100
_AIRNET = ("XLearning-SCU/2022-CVPR-AirNet@bedea82 option.py:8-15,31 (epochs 1000, epochs_encoder 100, lr 1e-3, "
           "patch_size 128, batch_size = len(de_type)), train.py:19-20 (shuffle, drop_last), :27 (Adam over all "
           "parameters, default betas), :40-48 (epoch < epochs_encoder: CE of the encoder's MoCo logits only; then "
           "L1 + 0.1 x CE), :77-84 (after each epoch: lr = 1e-3 * 0.1 ** (epoch // 60) while epoch <= 100, else "
           "1e-4 * 0.5 ** ((epoch - 100) // 125)); utils/dataset_utils.py:164-165 (__len__ = 400 * len(de_type), "
           "so 400 steps an epoch), :123,152-153 (query and key: two crops of one degraded image). The rate a "
           "tick (epoch) uses is the one set after the previous epoch: 1e-3 on epochs 0-60, 1e-4 on 61-101, then "
           "1e-4 * 0.5 ** ((epoch - 101) // 125) (segments (0, 1e-3), (1, 1e-3 x0.1 per 60), (101, 1e-4 x0.5 per "
           "125)). Choices: batch = len(de_type) with DINO-IR's six degradation types as AirNet counts them "
           "(denoise_15/25/50, derain, dehaze, deblur): 6, queue 6 x 256; epochs are the release's 400-step epochs "
           "(its epoch does not depend on the data), not passes over DINO-IR's mix; encoder-only for the first "
           "100 x 400 = 40,000 steps (the plan's terms: l1 from that step, the contrastive weight 1 until it, 0.1 "
           "after). Declared difference: irlib mixes DINO-IR's sources round-robin (one source per batch); the "
           "release's batch holds one image of each degradation type")
_KAIR = "cszn/KAIR options/swinir/{} (the SwinIR authors' training code)"
_KAIR_COMMON = (": G_optimizer adam lr 2e-4 wd 0, no clipping, MultiStepLR milestones [250K, 400K, 450K, 475K, 500K] "
                "gamma 0.5, E_decay (EMA) 0.999, L1; steps: 500K, the last milestone (KAIR's loop has no end of its "
                "own); dataloader_batch_size is the total over 8 GPUs (main_train_psnr.py divides it by num_gpu). "
                "The json fine-tunes x3/x4 from a trained x2 model with halved lr and milestones; irlib trains x4 from "
                "scratch (irlib choice: no x2 run to start from)")
_EDSR = ("sanghyun-son/EDSR-PyTorch src/option.py defaults (EDSR baseline: 16 blocks, 64 features): batch_size 16, "
         "lr 1e-4, ADAM betas (0.9, 0.999) eps 1e-8, decay '200' (x0.5 at epoch 200), loss 1*L1, epochs 300; one "
         "epoch = test_every 1000 batches (data/srdata.py repeats DIV2K to batch_size*test_every patches), so "
         "300K steps, halved at 200K; ")
_DEHAZEFORMER = ("IDKiro/DehazeFormer configs/{exp}/dehazeformer-{v}.json (batch_size {b}, patch_size 256, adamw, "
                 "lr {lr}, epochs {e}) and train.py: torch AdamW defaults (betas (0.9, 0.999), weight decay 0.01), "
                 "CosineAnnealingLR(T_max=epochs, eta_min=lr*1e-2) stepped once per epoch, L1 on [-1, 1] images (rec l1_pm1), "
                 "DataLoader drop_last, range(epochs + 1) epochs; {n} pairs // {b} = {it} steps per epoch, x{e1} "
                 "epochs = {s} steps; fp16 autocast with a GradScaler (train.py lines 43-52: the run's precision, not the "
                 "schedule's){aug}")
_FFA = ("zhilin007/FFA-Net README training command (--crop_size 240 --bs 2 --lr 0.0001 --steps 500000) and "
        "net/main.py: Adam betas (0.9, 0.999), per-step cosine lr = lr*(1+cos(pi*t/steps))/2 to 0 (line 31), set before "
        "each update with t counted from 1 (lines 55-61: tick_offset 1, so the first update uses t=1 and the last t=steps, "
        "rate 0), L1 (--perloss off)")
_IDT = ("jiexiaou/IDT train_derain.py defaults: Adam lr 1e-4 betas (0.9, 0.999), batch_size 4, crop_size 128, "
        "nepochs 400, MultiStepLR milestones [100, 250, 350] epochs gamma 0.1, loss -SSIM (line 73; loss/SSIM.py: "
        "11x11 Gaussian window sigma 1.5, zero-padded, C1 0.01^2, C2 0.03^2: rec neg_ssim); DataLoader without "
        "drop_last. ")
_TPIR = ("TextPromptIR paper Sec. 4.1.2: Adam betas (0.9, 0.999), weight decay 1e-4, lr 2e-4, batch 6, patch 128. "
         "MoTong-AI-studio/TextPromptIR train.py (PromptIR's va1shn9v/PromptIR train.py with TextPromptIR's net): L1, "
         "LinearWarmupCosineAnnealingLR(warmup_epochs=15, max_epochs=150, warmup_start_lr=0, eta_min=0) stepped once "
         "per epoch with the epoch index (closed form used here; Lightning's epoch-end timing may shift it by one "
         "epoch, not verified), DataLoader drop_last; the release uses AdamW at torch's default decay 0.01, the "
         "paper's Adam with 1e-4 is kept. Epoch = the release's all-in-one sample list, "
         f"{TEXTPROMPTIR_EPOCH:,} samples // 6 = {iters_per_epoch(TEXTPROMPTIR_EPOCH, 6):,} steps. ")
_DINO = ("DINO-IR paper, Implementation Details: Adam betas (0.9, 0.999), 'initial learning rate 2e-4 and reduced to "
         "1e-4', L = L1 + lambda*L_DINO. irlib choice for what the paper does not give: 300K steps and the lr shape "
         "of swz30/Restormer's released options (DINO-IR is built on Restormer; e.g. Deraining/Options/"
         "Deraining_Restormer.yml: total_iter 300000, CosineAnnealingRestartCyclicLR periods [92000, 208000], "
         "restart_weights [1, 1]) with eta_mins set to DINO-IR's rates (2e-4, 1e-4): 2e-4 for 92K steps, then "
         "cosine to 1e-4; no clipping, no weight decay (the paper's Adam). ")


def _dehazeformer(exp: str, variant: str, n: int, batch: int, lr: float, epochs: int) -> Schedule:
    """DehazeFormer's release: per-epoch cosine to lr/100 over ``epochs``, trained for ``epochs + 1`` epochs."""
    it = iters_per_epoch(n, batch)
    aug = ", only_h_flip augmentation" if exp == "reside6k" else ""
    return Schedule((epochs + 1) * it, batch, 256, lr, optimizer="adamw", weight_decay=0.01, decay="cosine",
                    eta_min=lr * 1e-2, tick=it, t_max=epochs, rec="l1_pm1",
                    source=_DEHAZEFORMER.format(exp=exp, v=variant, b=batch, lr=f"{lr:g}", e=epochs, e1=epochs + 1,
                                                n=f"{n:,}", it=it, s=f"{(epochs + 1) * it:,}", aug=aug))


def _idt(n: int, note: str, choice: str = "") -> Schedule:
    """IDT's train_derain.py defaults on ``n`` training pairs (no drop_last: ceil(n / 4) steps per epoch)."""
    it = iters_per_epoch(n, 4, drop_last=False)
    where = f"{note}: {n:,} pairs / 4 = {it:,} steps per epoch, {400 * it:,} steps" if note else ""
    return Schedule(400 * it, 4, 128, 1e-4, decay="step", milestones=(100, 250, 350), gamma=0.1, tick=it,
                    rec="neg_ssim", source=choice + _IDT + where)


def _textpromptir(choice: str) -> Schedule:
    """TextPromptIR's paper optimiser with its release's per-epoch warm-up + cosine, 120 epochs."""
    it = iters_per_epoch(TEXTPROMPTIR_EPOCH, 6)
    return Schedule(120 * it, 6, 128, 2e-4, weight_decay=1e-4, decay="warmup_cosine", warmup=15, t_max=150, tick=it,
                    source=_TPIR + choice)


def _dino_ir(batch: int, patch: int, note: str) -> Schedule:
    """DINO-IR's stated rates on Restormer's released 300K-step lr shape."""
    return Schedule(300_000, batch, patch, 2e-4, decay="cosine_restarts", periods=(92_000, 208_000),
                    restart_weights=(1.0, 1.0), eta_mins=(2e-4, 1e-4), source=_DINO + note)


ORIGINAL: dict[str, Schedule] = {
    # ------------------------------------------------------------------ SPN backbones: super-resolution
    "EDSR-light x2": Schedule(
        300_000, 16, 96, 1e-4, decay="step", milestones=(200_000,), gamma=0.5,
        source=_EDSR + "patch 96 (src/demo.sh, EDSR baseline x2: --patch_size 96)"),
    "EDSR-light x4": Schedule(
        300_000, 16, 192, 1e-4, decay="step", milestones=(200_000,), gamma=0.5,
        source=_EDSR + "patch 192 (option.py default; demo.sh x4). demo.sh starts x4 from the trained x2 model "
                       "(--pre_train); irlib trains x4 from scratch (irlib choice: no x2 run to start from). "
                       "Aitical/PCL-SISR (SPN Table 5's +PCL row) keeps these EDSR defaults (src/option.py), so no "
                       "separate PCL schedule"),
    "SwinIR-light x4": Schedule(
        500_000, 64, 256, 2e-4, decay="step", milestones=(250_000, 400_000, 450_000, 475_000), gamma=0.5, ema=0.999,
        source=_KAIR.format("train_swinir_sr_lightweight.json") + ": dataloader_batch_size 64, LR patch img_size 64 "
               "(H_size 128 at x2, so 256 at x4)" + _KAIR_COMMON),
    "SwinIR x4": Schedule(
        500_000, 32, 192, 2e-4, decay="step", milestones=(250_000, 400_000, 450_000, 475_000), gamma=0.5, ema=0.999,
        source=_KAIR.format("train_swinir_sr_classical.json") + ": dataloader_batch_size 32, LR patch img_size 48 "
               "(H_size 96 at x2, so 192 at x4)" + _KAIR_COMMON),
    # ------------------------------------------------------------------ SPN backbones: dehazing
    "FFANet ITS": Schedule(500_000, 2, 240, 1e-4, decay="cosine", tick_offset=1, source=_FFA + " (ITS command)"),
    "FFANet ITS SPN-release": Schedule(
        500_000, 4, 128, 2e-4, optimizer="adamw", betas=(0.9, 0.9), decay="cosine", t_max=100_000, eta_min=1e-8,
        ema=0.999,
        source="SPN's own release Aitical/MCLIR options/FFANet_RESIDE_IN_fromScratch.yml (a variant; the paper says "
               "it keeps each network's original configuration, which is 'FFANet ITS'): batch_size_per_gpu 4 on 1 "
               "GPU, gt_size 128, AdamW lr 2e-4 wd 0 betas [0.9, 0.9], TrueCosineAnnealingLR (torch "
               "CosineAnnealingLR, stepped per iteration) T_max 100000 eta_min 1e-8 over total_iter 500000 (so the "
               "rate falls and rises every 100K steps), ema_decay 0.999, L1; its use_grad_norm 0.05 is not read by "
               "the model (which reads use_grad_clip), so no clipping"),
    "FFANet RESIDE-6K": Schedule(
        500_000, 2, 240, 1e-4, decay="cosine", tick_offset=1,
        source="irlib choice: FFA-Net publishes no RESIDE-6K schedule and DehazeFormer's configs/reside6k has "
               "DehazeFormer configs only, so FFA-Net's own ITS recipe (SPN keeps each network's original "
               "configuration): " + _FFA),
    "DehazeFormer-T ITS": _dehazeformer("indoor", "t", ITS_PAIRS, 32, 4e-4, 300),
    "DehazeFormer-S ITS": _dehazeformer("indoor", "s", ITS_PAIRS, 16, 2e-4, 300),
    "DehazeFormer-B ITS": _dehazeformer("indoor", "b", ITS_PAIRS, 16, 2e-4, 300),
    "DehazeFormer-T RESIDE-6K": _dehazeformer("reside6k", "t", RESIDE6K_PAIRS, 32, 2e-4, 1000),
    "DehazeFormer-S RESIDE-6K": _dehazeformer("reside6k", "s", RESIDE6K_PAIRS, 16, 1e-4, 1000),
    "DehazeFormer-B RESIDE-6K": _dehazeformer("reside6k", "b", RESIDE6K_PAIRS, 16, 1e-4, 1000),
    # ------------------------------------------------------------------ SPN backbones: deblurring
    "NAFNet GoPro": Schedule(
        200_000, 32, 256, 1e-3, optimizer="adamw", betas=(0.9, 0.9), weight_decay=1e-3, decay="cosine",
        eta_min=1e-7, rec="psnr", grad_clip=0.01,
        source="megvii-research/NAFNet options/train/GoPro/NAFNet-width32.yml: num_gpu 8 x batch_size_per_gpu 4, "
               "gt_size 256 (crops of the pre-cut sharp_crops/blur_crops lmdb), AdamW lr 1e-3 weight_decay 1e-3 "
               "betas [0.9, 0.9], TrueCosineAnnealingLR T_max 200000 eta_min 1e-7, total_iter 200000, PSNRLoss; "
               "basicsr/models/image_restoration_model.py clips the gradient norm to 0.01 (use_grad_clip defaults "
               "to true and the yml does not set it)"),
    # ------------------------------------------------------------------ SPN backbone: deraining (IDT)
    "IDT Rain100L": _idt(RAIN200_PAIRS, "SPN's 'Rain100L' is IDT's Rain200L (SPN's IDT row equals IDT's Rain200L "
                                         "result, 40.74 dB)"),
    "IDT Rain100H": _idt(RAIN200_PAIRS, "the script's default data set (rain_data_train_Heavy); SPN's 'Rain100H' is "
                                         "IDT's Rain200H (32.10 dB in both)"),
    "IDT DID": _idt(DID_PAIRS, "the script has no per-data-set settings, so its defaults"),
    "IDT DDN": _idt(DDN_PAIRS, "the script has no per-data-set settings, so its defaults"),
    "IDT SPA": _idt(DID_PAIRS, "", choice=f"irlib choice: 400 epochs of SPA-Data's {SPA_PATCHES:,} training "
                                          "patches would be 63.8M steps, which the release cannot have meant, and "
                                          "nothing else is published; irlib gives SPA the release's DID-Data "
                                          "schedule (1.2M steps, x0.1 at 300K, 750K, 1.05M). "),
    # ------------------------------------------------------------------ TextPromptIR
    "TextPromptIR all-in-one": _textpromptir(
        "irlib choice: 120 epochs, PromptIR's released epoch count (options.py --epochs 120) for the same "
        "scheduler, which TextPromptIR inherits; TextPromptIR's options.py default of 1000 epochs runs its "
        "150-epoch cosine around more than three times and the paper gives no count"),
    "TextPromptIR single-task": _textpromptir(
        "irlib choice: neither paper nor release gives a single-task length, so each single-task model gets the "
        "all-in-one run's steps and lr curve (same optimisation budget)"),
    # ------------------------------------------------------------------ DINO-IR
    "DINO-IR multi-task": _dino_ir(8, 160, "Batch 8, patch 160 are the paper's multi-task values (it first states "
                                           "batch 12, patch 128; reading the two as Restormer-style progressive "
                                           "stages is possible but not stated)"),
    "DINO-IR single-task": _dino_ir(4, 128, "Batch 4, patch 128: the paper's single-task values (one RTX 3090)"),
    # ------------------------------------------------------------------ DINO-IR's comparison methods (Table 1)
    # Each trained by the DINO-IR authors "with codes" of its release on DINO-IR's four-task mix: the release's
    # optimiser, schedule, batch, patch and loss; epochs counted over the mix (DINOIR_MIX_EPOCH).
    "DnCNN DINO-IR mix": Schedule(
        400_000, 64, 40, 1e-4, decay="step", milestones=(200_000, 400_000, 600_000, 800_000, 1_000_000, 2_000_000),
        gamma=0.5,
        source=_KAIR_DNCNN + "; irlib choice: 400K steps, KAIR's merge_bn_startpoint (KAIR's loop has no end of its "
                             "own; the BN merge itself, which KAIR then performs, is not done)"),
    "MPRNet DINO-IR mix": Schedule(
        250 * iters_per_epoch(DINOIR_MIX_EPOCH, 16, drop_last=False), 16, 256, 2e-4, decay="warmup_cosine",
        warmup=3, t_max=250, eta_min=1e-6, tick=iters_per_epoch(DINOIR_MIX_EPOCH, 16, drop_last=False),
        rec="charbonnier", source=_MPRNET),
    "NAFNet DINO-IR mix": Schedule(
        200_000, 32, 256, 1e-3, optimizer="adamw", betas=(0.9, 0.9), decay="cosine", eta_min=1e-7, rec="psnr",
        grad_clip=0.01, source=_NAFNET_SIDD),
    "PromptIR DINO-IR mix": Schedule(
        120 * iters_per_epoch(DINOIR_MIX_EPOCH, 32), 32, 128, 2e-4, optimizer="adamw", weight_decay=0.01,
        decay="warmup_cosine", warmup=15, t_max=150, tick=iters_per_epoch(DINOIR_MIX_EPOCH, 32), source=_PROMPTIR),
    "AirNet DINO-IR mix": Schedule(
        AIRNET_EPOCHS * AIRNET_EPOCH_STEPS, AIRNET_TYPES, 128, 1e-3, decay="piecewise", tick=AIRNET_EPOCH_STEPS,
        segments=((0, 1e-3, 1.0, 1), (1, 1e-3, 0.1, 60), (AIRNET_ENCODER_EPOCHS + 1, 1e-4, 0.5, 125)),
        source=_AIRNET),
    # ------------------------------------------------------------------ DiffLoss
    "DiffLoss": Schedule(
        40_000, 4, 256, 1e-4, rec="mse",
        source="DiffLoss paper Sec. 4 Implementation Details: Adam, lr 1e-4, batch 4, patch 256; 'we preserve the "
               "traditional L2 loss' (rec mse); every baseline is trained with and without DiffLoss 'with the same "
               "settings', so one schedule for all of them (the networks' own release losses and optimisers are "
               "not used). No lr decay is stated. Steps: Tables 3/4 report the best of the first 40K iterations; "
               "Table 1 gives none, irlib choice: 40K there too"),
    "CUB classifier": Schedule(
        5 * (CUB_TRAIN // 32), 32, 224, 0.01, optimizer="sgd", momentum=0.9, weight_decay=1e-4, decay="cosine",
        rec="cross_entropy",
        source="irlib choice: DiffLoss Table 2 gives no recipe, so this mirrors irlib.classify.finetune: ImageNet "
               "weights, new 200-way head, SGD momentum 0.9 weight decay 1e-4, lr 0.01 on the head and 0.001 on "
               "the body, CosineAnnealingLR to 0 over epochs*(N//batch) steps, 5 epochs of CUB's 5,994 training "
               "images at batch 32 (935 steps), 224-px resized centre crops, random flips; cross-entropy, not a "
               "restoration loss"),
}


def original(key: str) -> Schedule:
    """The schedule ``ORIGINAL[key]``; a KeyError lists the known keys."""
    try:
        return ORIGINAL[key]
    except KeyError:
        raise KeyError(f"no original schedule {key!r}; known: {', '.join(sorted(ORIGINAL))}") from None
