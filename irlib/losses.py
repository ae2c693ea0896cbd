"""Feature extractors and losses shared by the papers: VGG features, perceptual loss, and the
ratio-form contrastive loss used both by AECR-Net's CR (VGG) and DINO-IR's DPC (DINOv2)."""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data.imagenet import IMAGENET_MEAN, IMAGENET_STD, imagenet_normalize  # noqa: F401

# torchvision index of each named ReLU in the VGG "features" Sequential
VGG_LAYERS = {
    "vgg16": {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
              "relu4_1": 18, "relu4_2": 20, "relu4_3": 22, "relu5_1": 25, "relu5_2": 27, "relu5_3": 29},
    "vgg19": {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
              "relu3_4": 17, "relu4_1": 20, "relu4_2": 22, "relu4_3": 24, "relu4_4": 26, "relu5_1": 29,
              "relu5_2": 31, "relu5_3": 33, "relu5_4": 35},
}


class VGGFeatures(nn.Module):
    """Frozen VGG returning the activations at named ReLUs, input RGB in [0, 1].

    ``pretrained=True`` loads torchvision's ImageNet weights (``VGG19_Weights.IMAGENET1K_V1`` /
    ``VGG16_Weights.IMAGENET1K_V1``); ``pretrained=False`` keeps a random initialisation, which is what
    the offline smoke profile uses (and labels as such: numbers from it say nothing about the paper).
    """

    def __init__(self, arch: str = "vgg19", layers: Sequence[str] = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"),
                 pretrained: bool = True, weights_path: str | None = None):
        super().__init__()
        import torchvision

        if arch not in VGG_LAYERS:
            raise ValueError(f"arch must be vgg16 or vgg19, got {arch}")
        idx = [VGG_LAYERS[arch][n] for n in layers]
        if pretrained and weights_path is None:
            enum = {"vgg16": torchvision.models.VGG16_Weights, "vgg19": torchvision.models.VGG19_Weights}[arch]
            net = getattr(torchvision.models, arch)(weights=enum.IMAGENET1K_V1)
        else:
            net = getattr(torchvision.models, arch)(weights=None)
            if weights_path is not None:
                net.load_state_dict(torch.load(weights_path, map_location="cpu"))
        self.features = net.features[: max(idx) + 1].eval().requires_grad_(False)
        self.idx = idx
        self.layers = tuple(layers)
        # the ImageNet statistics live on the module (moved with it once), not rebuilt on every call
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.pretrained = bool(pretrained or weights_path)

    def train(self, mode: bool = True):  # always frozen in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor, normalize: bool = True) -> list[torch.Tensor]:
        """Activations at ``self.layers`` for RGB ``x`` in [0, 1]; ``normalize=False`` feeds ``x`` to the first
        convolution as it is (AECR-Net's released CR does), instead of ImageNet-normalising it."""
        h = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype) if normalize else x
        out = []
        want = set(self.idx)
        for i, layer in enumerate(self.features):
            h = layer(h)
            if i in want:
                out.append(h)
        return out


def ratio_contrastive(f_out: Sequence[torch.Tensor], f_pos: Sequence[torch.Tensor], f_neg: Sequence[torch.Tensor],
                      weights: Sequence[float], eps: float = 1e-7) -> torch.Tensor:
    """sum_i w_i * L1(f_out_i, f_pos_i) / (L1(f_out_i, f_neg_i) + eps); positives and negatives are detached."""
    total = f_out[0].new_zeros(())
    for w, o, p, n in zip(weights, f_out, f_pos, f_neg):
        total = total + w * F.l1_loss(o, p.detach()) / (F.l1_loss(o, n.detach()) + eps)
    return total


class ContrastiveRegularization(nn.Module):
    """AECR-Net's CR loss: VGG19 relu1_1..relu5_1, weights 1/32,1/16,1/8,1/4,1; positive = clear image,
    negative = hazy input. Usable as a trainer term: ``fn(out, batch, model)``.

    ``normalize_input``: the released CR (GlassyWu/AECR-Net, ``models/CR.py``) feeds the [0, 1] images to
    torchvision's pretrained VGG19 as they are, without ImageNet mean/std normalisation. The paper names the
    network, the five layers and their weights but says nothing about input normalisation, so the default
    follows the release (``False``); ``True`` ImageNet-normalises first (how torchvision's weights were
    trained, and what irlib did before).
    """

    def __init__(self, vgg: VGGFeatures | None = None, weights=(1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0), pretrained: bool = True,
                 normalize_input: bool = False):
        super().__init__()
        self.vgg = vgg or VGGFeatures("vgg19", pretrained=pretrained)
        self.weights = weights
        self.normalize_input = normalize_input

    def forward(self, out: torch.Tensor, batch: dict, model: nn.Module | None = None) -> torch.Tensor:
        with torch.no_grad():
            fp = self.vgg(batch["gt"], normalize=self.normalize_input)
            fn = self.vgg(batch["lq"], normalize=self.normalize_input)
        return ratio_contrastive(self.vgg(out, normalize=self.normalize_input), fp, fn, self.weights)


class PerceptualLoss(nn.Module):
    """L1 between VGG16 features (relu1_2, relu2_2, relu3_3) of output and target (Johnson et al.)."""

    def __init__(self, vgg: VGGFeatures | None = None, pretrained: bool = True):
        super().__init__()
        self.vgg = vgg or VGGFeatures("vgg16", ("relu1_2", "relu2_2", "relu3_3"), pretrained=pretrained)

    def forward(self, out, batch, model=None):
        with torch.no_grad():
            ft = self.vgg(batch["gt"])
        return sum(F.l1_loss(a, b) for a, b in zip(self.vgg(out), ft))


class PatchDiscriminator(nn.Module):
    """Small PatchGAN discriminator: the adversarial-loss baseline (DiffLoss Table 3) and PCL-SR's embedding.
    ``features=True`` also returns the activation after each strided stage."""

    def __init__(self, ch: int = 32, n: int = 3):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        c = ch
        for _ in range(n - 1):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1), nn.InstanceNorm2d(c * 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        layers += [nn.Conv2d(c, 1, 3, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x, features: bool = False):
        h, feats = x * 2 - 1, []
        for layer in self.net:
            h = layer(h)
            if isinstance(layer, nn.LeakyReLU):
                feats.append(h)
        return (h, feats) if features else h


class frozen:
    """Context manager: ``module``'s parameters take no gradient inside (the generator's term of a GAN-style
    loss), and are trainable again afterwards, also when the body raises."""

    def __init__(self, module: nn.Module):
        self.module = module

    def __enter__(self):
        self.module.requires_grad_(False)
        return self.module

    def __exit__(self, *exc):
        self.module.requires_grad_(True)
        return False


class AdversarialLoss(nn.Module):
    """Least-squares GAN generator loss with its own PatchGAN discriminator. Each call first takes one
    discriminator step on (gt, out.detach()), then returns the generator term for the restorer."""

    def __init__(self, lr: float = 1e-4):
        super().__init__()
        self.d = PatchDiscriminator()
        self.opt = torch.optim.Adam(self.d.parameters(), lr=lr, betas=(0.5, 0.999))

    def forward(self, out, batch, model=None):
        self.d.to(out.device)
        with torch.enable_grad():
            real, fake = self.d(batch["gt"]), self.d(out.detach())
            d_loss = ((real - 1) ** 2).mean() + (fake ** 2).mean()
            self.opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt.step()
        with frozen(self.d):
            return ((self.d(out) - 1) ** 2).mean()


def haar_details(x: torch.Tensor) -> torch.Tensor:
    """One-level orthonormal Haar transform of ``x`` (B, C, H, W; H and W even), returning only the three detail
    bands concatenated band-major: (B, 3C, H/2, W/2). PCL-SR's released discriminator reads this (its
    ``--use_wavelet``: ``pytorch_wavelets.DWTForward(J=1, wave='haar', mode='reflect')``, then
    ``torch.cat((LH, HL, HH), 1)`` of ``Yh[0][:, :, k]``). The order is that library's (``afb2d`` filters along the
    width, then the height): band 0 is low-pass along the width and high-pass along the height (horizontal
    edges), band 1 high-pass along the width and low-pass along the height, band 2 high-pass along both; each
    detail is ``(first - second) / sqrt(2)`` per axis (pywt's Haar ``dec_hi`` reversed), and even sides need no
    padding."""
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"haar_details needs even height and width, got {tuple(x.shape[-2:])}")
    a, b = x[..., 0::2, 0::2], x[..., 0::2, 1::2]
    c, d = x[..., 1::2, 0::2], x[..., 1::2, 1::2]
    return torch.cat([(a + b - c - d) / 2, (a - b + c - d) / 2, (a - b - c + d) / 2], 1)


class BNDiscriminator(nn.Module):
    """PCL-SR's released embedding network (its ``loss/discriminator.py`` with ``patchD``): 8 blocks of a bias-free
    3x3 convolution, BatchNorm and LeakyReLU(0.2), widths 64, 64, 128, 128, 256, 256, 512, 512, strides 1, 2, 1, 2,
    1, 2, 1, 2; head: adaptive average pooling to 4x4 and a 1x1 convolution (a 4x4 map of patch logits).
    ``wavelet=True`` (the released scripts' ``--use_wavelet``) feeds it the Haar detail bands of the image
    (9 channels at half resolution). ``features=True`` also returns the 8 block outputs after their LeakyReLU:
    the release's ``--before_relu`` collects each BatchNorm output, but the in-place LeakyReLU that follows
    overwrites that very tensor, so the features it really uses are the activated ones."""

    WIDTHS = (64, 64, 128, 128, 256, 256, 512, 512)
    STRIDES = (1, 2, 1, 2, 1, 2, 1, 2)

    def __init__(self, in_ch: int = 3, wavelet: bool = True):
        super().__init__()
        self.wavelet = wavelet
        c, blocks = in_ch * 3 if wavelet else in_ch, []
        for w, st in zip(self.WIDTHS, self.STRIDES):
            blocks.append(nn.Sequential(nn.Conv2d(c, w, 3, st, 1, bias=False), nn.BatchNorm2d(w), nn.LeakyReLU(0.2)))
            c = w
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Conv2d(c, 1, 1))

    def forward(self, x: torch.Tensor, features: bool = False):
        h, feats = (haar_details(x) if self.wavelet else x), []
        for blk in self.blocks:
            h = blk(h)
            feats.append(h)
        logit = self.head(h)
        return (logit, feats) if features else logit


def dual_contrastive_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The released PCL-SR discriminator loss for patch logits (its ``contrastive_D_loss``): every real logit
    classified against all fake logits, plus every negated fake logit against all negated real logits
    (cross-entropy with the first entry as the target, averaged, the two halves summed)."""
    real, fake = real.reshape(-1), fake.reshape(-1)

    def half(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        logits = torch.cat([a[:, None], b[None, :].expand(len(a), -1)], 1)
        return F.cross_entropy(logits, torch.zeros(len(a), dtype=torch.long, device=a.device))
    return half(real, fake) + half(-fake, -real)


def _gauss1d(k: int, sigma: float) -> torch.Tensor:
    r = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    return g / g.sum()


def anisotropic_blur(x: torch.Tensor, kx: int, ky: int, sx: float, sy: float) -> torch.Tensor:
    """Separable Gaussian blur, ``kx`` x ``ky`` taps with standard deviations ``sx``/``sy`` (reflect borders)."""
    c = x.shape[1]
    gx = _gauss1d(kx, sx).to(x.device, x.dtype).view(1, 1, 1, kx).repeat(c, 1, 1, 1)
    gy = _gauss1d(ky, sy).to(x.device, x.dtype).view(1, 1, ky, 1).repeat(c, 1, 1, 1)
    x = F.conv2d(F.pad(x, (kx // 2, kx // 2, 0, 0), mode="reflect"), gx, groups=c)
    return F.conv2d(F.pad(x, (0, 0, ky // 2, ky // 2), mode="reflect"), gy, groups=c)


def _quantize(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255) / 255


class PCLLoss(nn.Module):
    """PCL-SR (Wu, Jiang and Liu 2023), the SR contrastive paradigm SPN compares with in its Table 5.

    Samples are made in frequency space: positives are the HR patch and ``n_aug`` sharpened copies (more high
    frequency than HR); negatives are the LR input and ``n_aug`` blurred copies of HR (hard negatives: right
    content, missing high frequency). The embedding is a discriminator trained alongside: each call first takes
    one step on it (positives real, negatives and the detached output fake), then returns the InfoNCE loss of
    the output against the samples on the discriminator's channel-normalised features (cosine similarity
    averaged over positions, temperature ``tau``), averaged over positives and over ``layers``.

    ``embedding="irlib"`` (default, irlib's light version): a small :class:`PatchDiscriminator` (InstanceNorm),
    BCE on its mean patch logit, features of its 3 stages, ``n_aug=2``, sharpening factor in ``sharp_range``,
    negatives blurred (sigma in ``blur_range``) then bicubically down- and up-sampled, bicubic resizing with
    ``align_corners=False``.
    ``embedding="release"`` follows the released code and scripts (Aitical/PCL-SISR, ``loss/adversarial.py``
    with ``--loss ...CL-patchD --cl_loss_type InfoNCE --use_wavelet --before_relu --contras_D_train
    --cl_layer 4 --no_ad_loss``): the 8-block BatchNorm :class:`BNDiscriminator` on Haar detail bands, trained
    with :func:`dual_contrastive_d_loss` on all positives vs the augmented negatives and the output; InfoNCE on
    block ``layers=(4,)`` (the option's default in the release is 0,2,4,6, passed by none of its scripts);
    raw cosines (``tau=1``); ``n_aug=3`` positives sharpened per image by a factor in [0.5, 3.0] and negatives
    blurred by a random anisotropic Gaussian (kernel 3..11, sigma 0.1..2.0, no resampling), both quantised to
    8 bits; the LR negative resized bicubically with ``align_corners=True``; each sample set embedded by its
    own call, the BatchNorm in training mode. The released scripts weight the term 5 (RCAN, pixel range 255,
    i.e. 5/255 on [0, 1] images) and 3 (NLSN, range 1): :data:`PCL_RELEASE_WEIGHTS`.

    Paper vs code: the released code computes the generator's discriminator features under ``no_grad`` (the
    term then sends no gradient to the SR network); both variants here let the gradient reach the SR output
    (otherwise the term does nothing). ``adv_weight`` adds a GAN generator term (the release's is off:
    ``--no_ad_loss``).
    """

    def __init__(self, scale: int = 4, n_aug: int | None = None, tau: float = 1.0, layers: Sequence[int] | None = None,
                 sharp_range: tuple[float, float] | None = None, blur_range: tuple[float, float] = (0.5, 2.5),
                 lr: float = 1e-4, adv_weight: float = 0.0, seed: int = 0, embedding: str = "irlib"):
        super().__init__()
        if embedding not in ("irlib", "release"):
            raise ValueError(f"embedding must be 'irlib' or 'release', got {embedding!r}")
        rel = embedding == "release"
        self.embedding = embedding
        self.scale, self.tau = scale, tau
        self.n_aug = n_aug if n_aug is not None else (3 if rel else 2)
        self.layers = tuple(layers) if layers is not None else ((4,) if rel else (0, 1, 2))
        self.sharp_range = sharp_range or ((0.5, 3.0) if rel else (2.5, 6.0))
        self.blur_range, self.adv_weight = blur_range, adv_weight
        self.embed = BNDiscriminator() if rel else PatchDiscriminator()
        self.opt = torch.optim.Adam(self.embed.parameters(), lr=lr, betas=(0.9, 0.999))
        self.gen = torch.Generator().manual_seed(seed)

    def _u(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.gen, device="cpu"))

    def _odd(self, lo: int, hi: int) -> int:
        return 2 * int(torch.randint(lo, hi + 1, (), generator=self.gen)) + 1

    @torch.no_grad()
    def samples(self, hr: torch.Tensor, lq: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(positives, negatives): lists of tensors shaped like ``hr``, except the release variant's first
        negative, the LR input itself (resized when embedded)."""
        from torchvision.transforms.functional import adjust_sharpness

        if self.embedding == "release":
            pos = [hr]
            for _ in range(self.n_aug):
                pos.append(_quantize(torch.stack([adjust_sharpness(im, self._u(*self.sharp_range)) for im in hr])))
            neg = [lq]
            for _ in range(self.n_aug):
                kx, ky = self._odd(1, 5), self._odd(1, 5)
                neg.append(_quantize(anisotropic_blur(hr, kx, ky, self._u(0.1, 2.0), self._u(0.1, 2.0))))
            return pos, neg
        from .data.degrade import bicubic_down, gaussian_blur

        size = hr.shape[-2:]
        up = F.interpolate(lq, size=size, mode="bicubic", align_corners=False).clamp(0, 1)
        pos = [hr] + [adjust_sharpness(hr, self._u(*self.sharp_range)).clamp(0, 1) for _ in range(self.n_aug)]
        neg = [up]
        for _ in range(self.n_aug):
            blurred = gaussian_blur(hr, self._u(*self.blur_range))
            small = bicubic_down(blurred, self.scale) if self.scale in (2, 3, 4) else blurred
            neg.append(F.interpolate(small, size=size, mode="bicubic", align_corners=False).clamp(0, 1))
        return pos, neg

    def info_nce(self, f_out: list[torch.Tensor], f_pos: list[list[torch.Tensor]],
                 f_neg: list[list[torch.Tensor]]) -> torch.Tensor:
        total = f_out[0].new_zeros(())
        for li in self.layers:
            o = F.normalize(f_out[li], dim=1)
            sim = lambda f: (o * F.normalize(f[li].detach(), dim=1)).sum(1).mean((1, 2))  # noqa: E731
            negs = torch.stack([sim(f) for f in f_neg], 1)
            for fp in f_pos:
                logits = torch.cat([sim(fp)[:, None], negs], 1) / self.tau
                total = total + F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
        return total / (len(self.layers) * len(f_pos))

    def _release_forward(self, out: torch.Tensor, pos: list[torch.Tensor], neg: list[torch.Tensor]):
        size = out.shape[-2:]
        with torch.enable_grad():                                   # 1) discriminator step (dual contrastive)
            real = torch.cat([self.embed(p) for p in pos])          # one call per set: BatchNorm statistics
            fake = torch.cat([self.embed(n) for n in neg[1:] + [out.detach()]])  # per set, as released
            d_loss = dual_contrastive_d_loss(real, fake)
            self.opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt.step()
        neg = [F.interpolate(n, size=size, mode="bicubic", align_corners=True).clamp(0, 1) if n.shape[-2:] != size
               else n for n in neg]
        with torch.no_grad():                                       # 2) one embedding call per sample set
            f_pos = [self.embed(p, features=True)[1] for p in pos]
            f_neg = [self.embed(n, features=True)[1] for n in neg]
        with frozen(self.embed):
            logit, f_out = self.embed(out, features=True)
        return logit.mean((1, 2, 3)), self.info_nce(f_out, f_pos, f_neg)

    def forward(self, out: torch.Tensor, batch: dict, model: nn.Module | None = None) -> torch.Tensor:
        self.embed.to(out.device)
        pos, neg = self.samples(batch["gt"], batch["lq"])
        if self.embedding == "release":
            logit, loss = self._release_forward(out, pos, neg)
        else:
            b = out.shape[0]
            with torch.enable_grad():                               # 1) discriminator / embedding step
                real = self.embed(torch.cat(pos)).mean((1, 2, 3))
                fake = self.embed(torch.cat(neg + [out.detach()])).mean((1, 2, 3))
                d_loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + \
                    F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
                self.opt.zero_grad(set_to_none=True)
                d_loss.backward()
                self.opt.step()
            with torch.no_grad():                                   # 2) contrastive term for the SR network
                feats = self.embed(torch.cat(pos + neg), features=True)[1]
            split = [[f[i * b:(i + 1) * b] for f in feats] for i in range(len(pos) + len(neg))]
            with frozen(self.embed):
                logit, f_out = self.embed(out, features=True)
            logit = logit.mean((1, 2, 3))
            loss = self.info_nce(f_out, split[:len(pos)], split[len(pos):])
        if self.adv_weight:
            loss = loss + self.adv_weight * F.binary_cross_entropy_with_logits(logit, torch.ones_like(logit))
        return loss

    def state_dict(self, *a, **kw):  # the embedding and its optimiser resume with the run
        return {"embed": self.embed.state_dict(), "opt": self.opt.state_dict(), "gen": self.gen.get_state()}

    def load_state_dict(self, sd, strict: bool = True):
        self.embed.load_state_dict(sd["embed"], strict)
        self.opt.load_state_dict(sd["opt"])
        self.gen.set_state(sd["gen"])


#: Weights of the CL term in PCL-SR's released training scripts (``--loss 1*L1+<w>*CL-patchD``), with the pixel
#: range they train in: on [0, 1] images the RCAN weight corresponds to 5/255.
PCL_RELEASE_WEIGHTS = {"rcan_x4": {"weight": 5.0, "rgb_range": 255}, "nlsn_x4": {"weight": 3.0, "rgb_range": 1}}


def _stages(out: torch.Tensor | Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
    """The stage images of a multi-stage output (MPRNet returns a list), or the one output."""
    return out if isinstance(out, (list, tuple)) else (out,)


def l1(out: torch.Tensor | Sequence[torch.Tensor], batch: dict, model=None) -> torch.Tensor:
    """Mean absolute error (summed over the stages of a multi-stage output, as every term here)."""
    return sum(F.l1_loss(o, batch["gt"]) for o in _stages(out))


def mse(out: torch.Tensor | Sequence[torch.Tensor], batch: dict, model=None) -> torch.Tensor:
    return sum(F.mse_loss(o, batch["gt"]) for o in _stages(out))


def l1_pm1(out: torch.Tensor, batch: dict, model=None) -> torch.Tensor:
    """L1 between the images mapped to [-1, 1], i.e. 2 x :func:`l1`: DehazeFormer's release trains on [-1, 1]
    images (``datasets/loader.py``: ``read_img(...) * 2 - 1``) with ``nn.L1Loss``."""
    return F.l1_loss(out * 2 - 1, batch["gt"] * 2 - 1)


def mse_pm1(out: torch.Tensor, batch: dict, model=None) -> torch.Tensor:
    """MSE between the images mapped to [-1, 1] (``2x - 1``), i.e. 4 x :func:`mse`: DiffLoss's release computes its
    pixel term this way (``mean_flat((output - gt) ** 2)`` with ``output = output * 2 - 1`` and a [-1, 1] target), so
    its γ=0.001 diffusion term is weighed against this scale, not against the [0, 1] MSE."""
    return F.mse_loss(out * 2 - 1, batch["gt"] * 2 - 1)


def psnr_loss(out: torch.Tensor | Sequence[torch.Tensor], batch: dict, model=None) -> torch.Tensor:
    """NAFNet's PSNR loss: the negative PSNR in dB (images in [0, 1]), i.e. 10*log10(MSE) per image, averaged."""
    return sum(10.0 * torch.log10((o - batch["gt"]).pow(2).flatten(1).mean(1) + 1e-8).mean() for o in _stages(out))


SSIM_WINDOW, SSIM_SIGMA = 11, 1.5        # IDT's loss/SSIM.py (jiexiaou/IDT): an 11x11 Gaussian window, sigma 1.5
SSIM_C1, SSIM_C2 = 0.01 ** 2, 0.03 ** 2  # its constants on [0, 1] images (K1 = 0.01, K2 = 0.03, data range 1)


def ssim_map(x: torch.Tensor, y: torch.Tensor, *, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA,
             pad: bool = True) -> torch.Tensor:
    """Differentiable SSIM map of (B, C, H, W) images in [0, 1], channel by channel, as IDT's training loss computes
    it (jiexiaou/IDT loss/SSIM.py): local statistics under a ``window``x``window`` Gaussian of ``sigma``, constants
    (0.01)^2 and (0.03)^2, and ``pad=True`` zero padding of ``window // 2`` so the map has the images' size (the
    release's; its borders see zeros). ``pad=False`` gives the valid region only, which
    :func:`irlib.metrics.ssim` averages (on the 0..255 scale, the same ratio)."""
    from .metrics import _gaussian_window

    c = x.shape[1]
    g = _gaussian_window(window, sigma, x.device, x.dtype)
    k = (g[:, None] * g[None, :]).expand(c, 1, window, window)
    p = window // 2 if pad else 0

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(t, k, padding=p, groups=c)

    mu_x, mu_y = blur(x), blur(y)
    s_xx = blur(x * x) - mu_x ** 2
    s_yy = blur(y * y) - mu_y ** 2
    s_xy = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + SSIM_C1) * (2 * s_xy + SSIM_C2)) / ((mu_x ** 2 + mu_y ** 2 + SSIM_C1) * (s_xx + s_yy + SSIM_C2))


def neg_ssim(out: torch.Tensor | Sequence[torch.Tensor], batch: dict, model=None) -> torch.Tensor:
    """IDT's reconstruction loss: minus the SSIM of output and ground truth (``-1 * ssimloss(out, train_y)``,
    jiexiaou/IDT train_derain.py line 73), the mean of :func:`ssim_map` over the batch, channels and pixels.
    Its minimum is -1 (identical images); computed in float32 (or float64) outside autocast."""
    def full(t: torch.Tensor) -> torch.Tensor:
        return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t

    total = 0.0
    for o in _stages(out):
        off = o.device.type in ("cuda", "cpu")   # its divisions stay out of fp16 (no autocast on the meta device)
        with torch.autocast(o.device.type, enabled=False) if off else contextlib.nullcontext():
            total = total - ssim_map(full(o), full(batch["gt"]).to(full(o).dtype)).mean()
    return total


def _charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((x - y).pow(2) + eps * eps).mean()


_GAUSS_1D = torch.tensor([0.05, 0.25, 0.4, 0.25, 0.05])


def _gauss5(x: torch.Tensor) -> torch.Tensor:
    """Per-channel 5x5 binomial-like blur (outer product of ``_GAUSS_1D``), replicate-padded."""
    c = x.shape[1]
    k = torch.outer(_GAUSS_1D, _GAUSS_1D).to(x)[None, None].expand(c, 1, 5, 5)
    return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), k, groups=c)


def laplacian_detail(x: torch.Tensor) -> torch.Tensor:
    """One Laplacian-pyramid detail level: ``x`` minus its blurred, 2x-decimated, zero-stuffed (x4) and
    re-blurred copy — the edge map MPRNet's edge loss compares."""
    blurred = _gauss5(x)
    stuffed = torch.zeros_like(blurred)
    stuffed[:, :, ::2, ::2] = blurred[:, :, ::2, ::2] * 4
    return x - _gauss5(stuffed)


def charbonnier(out: torch.Tensor | Sequence[torch.Tensor], batch: dict, model=None) -> torch.Tensor:
    """Charbonnier loss mean(sqrt((x - y)^2 + 1e-6)) (MPRNet's, eps = 1e-3); a multi-stage output (MPRNet's
    list of stage images) sums it over the stages, as MPRNet's train.py does."""
    return sum(_charbonnier(o, batch["gt"]) for o in _stages(out))


def edge(out: torch.Tensor | Sequence[torch.Tensor], batch: dict, model=None) -> torch.Tensor:
    """MPRNet's edge loss: Charbonnier between the Laplacian details (:func:`laplacian_detail`) of output and
    target, summed over stages (MPRNet weighs it 0.05 against the Charbonnier term)."""
    gt = laplacian_detail(batch["gt"])
    return sum(_charbonnier(laplacian_detail(o), gt) for o in _stages(out))


def airnet_contrast(out: torch.Tensor, batch: dict, model=None) -> torch.Tensor:
    """AirNet's contrastive loss: cross-entropy of the degradation encoder's MoCo logits (positive key at index 0,
    the queue after it) that :func:`irlib.models.airnet.training_forward` leaves in the batch."""
    if "airnet_logits" not in batch:
        raise KeyError("airnet_contrast needs the MoCo logits in the batch: train AirNet with forward='airnet'")
    return F.cross_entropy(batch["airnet_logits"].float(), batch["airnet_labels"])


LOSSES: dict[str, Callable] = {"l1": l1, "mse": mse, "neg_ssim": neg_ssim, "mse_pm1": mse_pm1, "l1_pm1": l1_pm1, "psnr": psnr_loss,
                               "charbonnier": charbonnier, "edge": edge, "airnet_contrast": airnet_contrast}
