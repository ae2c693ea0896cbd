"""Feature extractors and losses shared by the papers: VGG features, perceptual loss, and the
ratio-form contrastive loss used both by AECR-Net's CR (VGG) and DINO-IR's DPC (DINOv2)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# torchvision index of each named ReLU in the VGG "features" Sequential
VGG_LAYERS = {
    "vgg16": {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
              "relu4_1": 18, "relu4_2": 20, "relu4_3": 22, "relu5_1": 25, "relu5_2": 27, "relu5_3": 29},
    "vgg19": {"relu1_1": 1, "relu1_2": 3, "relu2_1": 6, "relu2_2": 8, "relu3_1": 11, "relu3_2": 13, "relu3_3": 15,
              "relu3_4": 17, "relu4_1": 20, "relu4_2": 22, "relu4_3": 24, "relu4_4": 26, "relu5_1": 29,
              "relu5_2": 31, "relu5_3": 33, "relu5_4": 35},
}


def imagenet_normalize(x: torch.Tensor) -> torch.Tensor:
    m = x.new_tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    s = x.new_tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - m) / s


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
        self.pretrained = bool(pretrained or weights_path)

    def train(self, mode: bool = True):  # always frozen in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        h = imagenet_normalize(x)
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
    negative = hazy input. Usable as a trainer term: ``fn(out, batch, model)``."""

    def __init__(self, vgg: VGGFeatures | None = None, weights=(1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0), pretrained: bool = True):
        super().__init__()
        self.vgg = vgg or VGGFeatures("vgg19", pretrained=pretrained)
        self.weights = weights

    def forward(self, out: torch.Tensor, batch: dict, model: nn.Module | None = None) -> torch.Tensor:
        with torch.no_grad():
            fp, fn = self.vgg(batch["gt"]), self.vgg(batch["lq"])
        return ratio_contrastive(self.vgg(out), fp, fn, self.weights)


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


class PCLLoss(nn.Module):
    """PCL-SR (Wu, Jiang and Liu 2023), the SR contrastive paradigm SPN compares with in its Table 5.

    Samples are made in frequency space: positives are the HR patch and ``n_aug`` sharpened copies
    (sharpness factor drawn from ``sharp_range``: more high frequency than HR); negatives are the bicubic-
    upsampled LR input and ``n_aug`` HR patches re-degraded by a random Gaussian blur (sigma in
    ``blur_range``) and bicubic down/up-sampling (hard negatives: right content, missing high frequency).
    The embedding is a discriminator (:class:`PatchDiscriminator`) trained alongside: each call first takes
    one step on it (BCE on its mean patch logit, positives real, negatives and the detached output fake), then
    returns the InfoNCE loss of the output against the
    samples on the discriminator's normalised features (cosine similarity averaged over positions,
    temperature ``tau``), averaged over positives and over ``layers``.

    Paper vs code: the released code computes the generator's discriminator features under ``no_grad``
    and uses raw cosines (``tau=1``); here gradients reach the SR network (otherwise the term does nothing)
    and ``tau`` is a parameter (default 1 as released). ``adv_weight`` adds the released optional GAN term.
    """

    def __init__(self, scale: int = 4, n_aug: int = 2, tau: float = 1.0, layers: Sequence[int] = (0, 1, 2),
                 sharp_range: tuple[float, float] = (2.5, 6.0), blur_range: tuple[float, float] = (0.5, 2.5),
                 lr: float = 1e-4, adv_weight: float = 0.0, seed: int = 0):
        super().__init__()
        self.scale, self.n_aug, self.tau, self.layers = scale, n_aug, tau, tuple(layers)
        self.sharp_range, self.blur_range, self.adv_weight = sharp_range, blur_range, adv_weight
        self.embed = PatchDiscriminator()
        self.opt = torch.optim.Adam(self.embed.parameters(), lr=lr, betas=(0.9, 0.999))
        self.gen = torch.Generator().manual_seed(seed)

    def _u(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.gen))

    @torch.no_grad()
    def samples(self, hr: torch.Tensor, lq: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(positives, negatives), each a list of tensors shaped like ``hr``."""
        from torchvision.transforms.functional import adjust_sharpness
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

    def forward(self, out: torch.Tensor, batch: dict, model: nn.Module | None = None) -> torch.Tensor:
        self.embed.to(out.device)
        pos, neg = self.samples(batch["gt"], batch["lq"])
        b = out.shape[0]
        with torch.enable_grad():                                   # 1) discriminator / embedding step
            real = self.embed(torch.cat(pos)).mean((1, 2, 3))
            fake = self.embed(torch.cat(neg + [out.detach()])).mean((1, 2, 3))
            d_loss = F.binary_cross_entropy_with_logits(real, torch.ones_like(real)) + \
                F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
            self.opt.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt.step()
        with torch.no_grad():                                       # 2) contrastive term for the SR network
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


def l1(out: torch.Tensor, batch: dict, model=None) -> torch.Tensor:
    return F.l1_loss(out, batch["gt"])


def mse(out: torch.Tensor, batch: dict, model=None) -> torch.Tensor:
    return F.mse_loss(out, batch["gt"])


def psnr_loss(out: torch.Tensor, batch: dict, model=None) -> torch.Tensor:
    """NAFNet's PSNR loss: the negative PSNR in dB (images in [0, 1]), i.e. 10*log10(MSE) per image, averaged."""
    mse_i = (out - batch["gt"]).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(mse_i + 1e-8).mean()


LOSSES: dict[str, Callable] = {"l1": l1, "mse": mse, "psnr": psnr_loss}
